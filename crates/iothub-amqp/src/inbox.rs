//! The machinery shared by the feedback and file-notification receivers.
//!
//! One task per receiver owns the fe2o3 receiver link (credit 1, so the hub sends one message
//! at a time). It hands each parsed message to the stream together with a [`Settlement`], then
//! waits for the user's decision before receiving the next: the hub sends the next message only
//! once the previous one is settled anyway. A lost link or connection is reported once on the
//! stream and re-attached (reconnecting through the client) with a growing pause between
//! failed attempts. The task ends when the stream is dropped or the client closes.

use std::sync::Weak;
use std::task::{Context, Poll};
use std::time::Duration;

use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::{AmqpValue, Body};
use fe2o3_amqp::types::primitives::Value;
use tokio::sync::{mpsc, oneshot, watch};

use crate::client::{ServiceClient, Shared};
use crate::error::{Error, Result};
use crate::link::recv_error;

const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A kind of service-bound message: where it comes from and how its body reads.
pub(crate) trait Inbound: Sized + Send + 'static {
    /// The source address of the receiver link.
    const ADDRESS: &'static str;

    /// Parses the body (UTF-8 JSON).
    fn parse(body: &[u8]) -> serde_json::Result<Self>;
}

/// What the user decided for a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// `accepted`: the hub forgets the message.
    Complete,
    /// `released`: the hub delivers the message again.
    Abandon,
}

type Decision = (Disposition, oneshot::Sender<Result<()>>);

/// The right to settle one received message. Dropped unused, the message is abandoned.
#[derive(Debug)]
pub(crate) struct Settlement {
    decision: oneshot::Sender<Decision>,
}

impl Settlement {
    pub(crate) async fn settle(self, disposition: Disposition) -> Result<()> {
        let (reply, result) = oneshot::channel();
        // The task is gone only once the client is closed (it released the message then).
        self.decision
            .send((disposition, reply))
            .map_err(|_| Error::Closed)?;
        result.await.unwrap_or(Err(Error::Closed))
    }
}

/// The receiving end: a lazily started task and the channel it fills.
pub(crate) struct Inbox<T> {
    client: ServiceClient,
    items: Option<mpsc::Receiver<Result<(T, Settlement)>>>,
}

impl<T: Inbound> Inbox<T> {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self {
            client,
            items: None,
        }
    }

    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(T, Settlement)>>> {
        let client = &self.client;
        let items = self.items.get_or_insert_with(|| {
            let (sender, receiver) = mpsc::channel(1);
            tokio::spawn(run::<T>(client.downgrade(), client.closed_signal(), sender));
            receiver
        });
        items.poll_recv(cx)
    }
}

enum End {
    // The stream was dropped or the client closed.
    Stop,
    // The link or connection failed; report and re-attach.
    Lost(Error),
}

async fn run<T: Inbound>(
    client: Weak<Shared>,
    mut closed: watch::Receiver<bool>,
    items: mpsc::Sender<Result<(T, Settlement)>>,
) {
    let mut pause = FIRST_RETRY;
    loop {
        let Some(shared) = client.upgrade() else {
            return;
        };
        let attached = tokio::select! {
            attached = shared.attach(T::ADDRESS) => attached,
            () = items.closed() => return,
            () = until_closed(&mut closed) => return,
        };
        drop(shared);
        let error = match attached {
            Ok(mut receiver) => {
                pause = FIRST_RETRY;
                match receive(&mut receiver, &items, &mut closed).await {
                    End::Stop => {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), receiver.close()).await;
                        return;
                    }
                    End::Lost(error) => error,
                }
            }
            Err(Error::Closed) => return,
            Err(error) => {
                let wait = pause;
                pause = (pause * 2).min(MAX_RETRY);
                tracing::debug!(%error, address = T::ADDRESS, ?wait, "attaching failed");
                if items.send(Err(error)).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = items.closed() => return,
                    () = until_closed(&mut closed) => return,
                }
                continue;
            }
        };
        tracing::debug!(%error, address = T::ADDRESS, "receiver lost; re-attaching");
        if items.send(Err(error)).await.is_err() {
            return;
        }
    }
}

async fn receive<T: Inbound>(
    receiver: &mut Receiver,
    items: &mpsc::Sender<Result<(T, Settlement)>>,
    closed: &mut watch::Receiver<bool>,
) -> End {
    loop {
        let delivery = tokio::select! {
            delivery = receiver.recv::<Body<Value>>() => delivery,
            () = items.closed() => return End::Stop,
            () = until_closed(closed) => return End::Stop,
        };
        let delivery: Delivery<Body<Value>> = match delivery {
            Ok(delivery) => delivery,
            Err(error) => return End::Lost(recv_error(&error)),
        };
        let body = body_bytes(delivery.body());
        let parsed = body
            .as_deref()
            .ok_or(None)
            .and_then(|bytes| T::parse(bytes).map_err(Some));
        let value = match parsed {
            Ok(value) => value,
            Err(source) => {
                // Unreadable now means unreadable on every redelivery: reject, and say so.
                let condition = definitions::Error::new(
                    ErrorCondition::AmqpError(AmqpError::DecodeError),
                    Some("the body is not the expected JSON".to_owned()),
                    None,
                );
                let _ = receiver.reject(&delivery, condition).await;
                let body =
                    String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
                let source = source.unwrap_or_else(|| {
                    serde::de::Error::custom("the body is an AMQP sequence, not bytes")
                });
                if items
                    .send(Err(Error::Decode { body, source }))
                    .await
                    .is_err()
                {
                    return End::Stop;
                }
                continue;
            }
        };

        let (decision, decided) = oneshot::channel();
        if items
            .send(Ok((value, Settlement { decision })))
            .await
            .is_err()
        {
            let _ = receiver.release(&delivery).await;
            return End::Stop;
        }
        let (disposition, reply) = tokio::select! {
            decided = decided => match decided {
                Ok((disposition, reply)) => (disposition, Some(reply)),
                // Dropped without a decision.
                Err(_) => (Disposition::Abandon, None),
            },
            () = until_closed(closed) => {
                let _ = receiver.release(&delivery).await;
                return End::Stop;
            }
        };
        let settled = match disposition {
            Disposition::Complete => receiver.accept(&delivery).await,
            Disposition::Abandon => receiver.release(&delivery).await,
        }
        .map_err(|error| Error::lost(false, format!("the message could not be settled: {error}")));
        if let Some(reply) = reply {
            let _ = reply.send(settled);
        }
    }
}

/// Resolves once the client is closed (or gone).
async fn until_closed(closed: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not live across an await: it is not `Send`.
    let _ = closed.wait_for(|closed| *closed).await.map(|_| ());
}

/// The body's bytes: Data sections concatenated, or a binary or string AMQP value.
fn body_bytes(body: &Body<Value>) -> Option<Vec<u8>> {
    match body {
        Body::Data(sections) => Some(sections.iter().flat_map(|d| d.0.iter().copied()).collect()),
        Body::Value(AmqpValue(Value::Binary(bytes))) => Some(bytes.to_vec()),
        Body::Value(AmqpValue(Value::String(text))) => Some(text.as_bytes().to_vec()),
        Body::Empty => Some(Vec::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::{Batch, Data};
    use fe2o3_amqp::types::primitives::Binary;

    #[test]
    fn bodies_are_read_from_data_or_values() {
        let data = Body::<Value>::Data(Batch::new(vec![
            Data(Binary::from(b"[{\"a\":".to_vec())),
            Data(Binary::from(b"1}]".to_vec())),
        ]));
        assert_eq!(body_bytes(&data).unwrap(), b"[{\"a\":1}]");
        let binary = Body::Value(AmqpValue(Value::Binary(Binary::from(b"x".to_vec()))));
        assert_eq!(body_bytes(&binary).unwrap(), b"x");
        let text = Body::Value(AmqpValue(Value::String("y".into())));
        assert_eq!(body_bytes(&text).unwrap(), b"y");
        assert_eq!(body_bytes(&Body::Empty).unwrap(), b"");
        assert!(body_bytes(&Body::Value(AmqpValue(Value::Int(1)))).is_none());
    }

    #[tokio::test]
    async fn a_dropped_settlement_abandons_and_a_closed_task_reports_closed() {
        let (decision, decided) = oneshot::channel();
        drop(Settlement { decision });
        assert!(
            decided.await.is_err(),
            "the task sees no decision, and releases"
        );

        let (decision, decided) = oneshot::channel();
        drop(decided);
        let settlement = Settlement { decision };
        assert!(matches!(
            settlement.settle(Disposition::Complete).await,
            Err(Error::Closed)
        ));

        let (decision, decided) = oneshot::channel();
        let settlement = Settlement { decision };
        let task = tokio::spawn(async move {
            let (disposition, reply): Decision = decided.await.unwrap();
            reply.send(Ok(())).unwrap();
            disposition
        });
        settlement.settle(Disposition::Abandon).await.unwrap();
        assert_eq!(task.await.unwrap(), Disposition::Abandon);
    }
}
