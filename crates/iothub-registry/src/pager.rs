//! Following continuation tokens, once: the query and job-query streams both page this way.
//! A token the service already sent in this run means the pages go round in a circle, so the
//! stream ends with [`Error::Paging`] after the page that carried it, instead of never ending
//! (or growing memory).

use std::collections::HashSet;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};

use futures::{Stream, stream};

use crate::error::{Error, Result};

/// A page that may point at the next one.
pub(crate) trait Page {
    /// The continuation token for the next page; `None` on the last.
    fn continuation(&self) -> Option<&str>;
}

/// The continuation tokens seen in one run, as hashes (8 bytes a page, however long the
/// tokens): a token seen before means the pages go round in a circle.
#[derive(Default)]
struct Seen(HashSet<u64>);

impl Seen {
    /// Records `token`; false if it was seen before.
    fn first_time(&mut self, token: &str) -> bool {
        let mut hasher = DefaultHasher::new();
        token.hash(&mut hasher);
        self.0.insert(hasher.finish())
    }
}

/// What comes after a page.
enum Next {
    Page(Option<String>),
    Repeated,
    End,
}

/// The pages `fetch` returns, starting at `start` (a continuation token to resume from, or
/// `None` for the first page), each fetched only when the previous one has been consumed,
/// until a page carries no continuation token.
pub(crate) fn pages<S, P, F, Fut>(
    state: S,
    start: Option<String>,
    fetch: F,
) -> impl Stream<Item = Result<P>> + Send + 'static
where
    S: Send + 'static,
    P: Page + Send + 'static,
    F: Fn(&S, Option<String>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<P>> + Send,
{
    let mut seen = Seen::default();
    if let Some(token) = &start {
        seen.first_time(token);
    }
    let first = Next::Page(start);
    stream::try_unfold(
        ((state, fetch), first, seen),
        |((state, fetch), next, mut seen)| async move {
            let token = match next {
                Next::Page(token) => token,
                Next::End => return Ok(None),
                Next::Repeated => {
                    return Err(Error::Paging {
                        reason: "the service sent a continuation token it had already sent in \
                                 this query; following it would never end"
                            .to_owned(),
                    });
                }
            };
            let page = fetch(&state, token).await?;
            let next = match page.continuation() {
                None => Next::End,
                Some(token) if seen.first_time(token) => Next::Page(Some(token.to_owned())),
                Some(_) => Next::Repeated,
            };
            Ok(Some((page, ((state, fetch), next, seen))))
        },
    )
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt as _;

    use super::*;

    #[derive(Debug)]
    struct TestPage(Option<&'static str>);

    impl Page for TestPage {
        fn continuation(&self) -> Option<&str> {
            self.0
        }
    }

    /// Pages whose continuation tokens are `tokens`, in order, the last page carrying none.
    fn served(
        tokens: &'static [&'static str],
        start: Option<&str>,
    ) -> impl Stream<Item = Result<TestPage>> {
        pages(tokens, start.map(str::to_owned), |tokens, token| {
            let index = token.map_or(0, |t| {
                tokens
                    .iter()
                    .position(|s| *s == t)
                    .map_or(usize::MAX, |i| i + 1)
            });
            let page = TestPage(tokens.get(index).copied());
            async move { Ok(page) }
        })
    }

    #[tokio::test]
    async fn follows_tokens_to_the_last_page() {
        let pages: Vec<TestPage> = served(&["a", "b"], None).try_collect().await.unwrap();
        assert_eq!(pages.len(), 3);
    }

    #[tokio::test]
    async fn a_repeated_token_ends_with_an_error_after_its_page() {
        let mut stream = Box::pin(served(&["a", "b", "a"], None));
        for _ in 0..3 {
            assert!(stream.try_next().await.unwrap().is_some());
        }
        let error = stream.try_next().await.unwrap_err();
        assert!(matches!(error, Error::Paging { .. }), "{error:?}");
    }

    #[tokio::test]
    async fn the_token_resumed_from_counts_as_seen() {
        let mut stream = Box::pin(served(&["a", "a"], Some("a")));
        assert!(stream.try_next().await.unwrap().is_some());
        assert!(stream.try_next().await.is_err());
    }
}
