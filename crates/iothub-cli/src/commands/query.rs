//! `iothub query`: every page, streamed as it arrives with `--output jsonl`.

use futures::{StreamExt as _, TryStreamExt as _};

use super::Context;
use crate::cli::QueryArgs;
use crate::error::Result;

/// Runs `query`.
pub(crate) async fn run(cx: &Context, args: QueryArgs) -> Result<()> {
    let registry = cx.registry()?;
    let mut query = registry.query(args.sql);
    if let Some(size) = args.page_size {
        query = query.page_size(size);
    }
    let top = args
        .top
        .map_or(usize::MAX, |t| usize::try_from(t).unwrap_or(usize::MAX));
    let items = query.stream().take(top);
    if cx.printer.streams() {
        let mut items = std::pin::pin!(items);
        while let Some(item) = items.try_next().await? {
            cx.printer.print_item(item)?;
        }
        Ok(())
    } else {
        let items: Vec<serde_json::Value> = items.try_collect().await?;
        cx.printer.print(items)
    }
}
