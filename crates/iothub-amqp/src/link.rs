//! Link attachment and the mapping of fe2o3 link errors and outcomes to [`Error`].

use fe2o3_amqp::link::{CreditMode, Receiver, RecvError, SendError, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Outcome, Target};

use crate::error::{CONDITION_MESSAGE_SIZE_EXCEEDED, Error, Rejection, Result};

/// The hub's cloud-to-device node.
pub(crate) const DEVICEBOUND: &str = "/messages/devicebound";

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// The cloud-to-device sender: unsettled sends, receiver settles first (as C# and Java ask).
pub(crate) async fn c2d_sender(session: &mut SessionHandle<()>) -> Result<Sender> {
    Sender::builder()
        .name(unique("c2d-sender"))
        .target(DEVICEBOUND)
        .sender_settle_mode(SenderSettleMode::Unsettled)
        .receiver_settle_mode(ReceiverSettleMode::First)
        // The hub may echo the address in another case or as a full URI.
        .verify_incoming_target(false)
        .attach(session)
        .await
        .map_err(|e| Error::protocol(format!("the {DEVICEBOUND} sender link was refused: {e}")))
}

/// A receiver from `source`, settling first, with `credit` kept topped up by fe2o3 as
/// deliveries are settled.
pub(crate) async fn receiver_link(
    session: &mut SessionHandle<()>,
    name: &str,
    source: &str,
    target: Option<&str>,
    credit: u32,
) -> Result<Receiver> {
    let target = match target {
        Some(address) => Target::builder().address(address.to_owned()).build(),
        None => Target::builder().build(),
    };
    Receiver::builder()
        .name(unique(name))
        .source(source.to_owned())
        .target(target)
        .receiver_settle_mode(ReceiverSettleMode::First)
        .credit_mode(CreditMode::Auto(credit))
        .auto_accept(false)
        .verify_incoming_source(false)
        .verify_incoming_target(false)
        .attach(session)
        .await
        .map_err(|e| Error::protocol(format!("the {source} receiver link was refused: {e}")))
}

/// A failed send; `sent` says whether the transfer may have reached the hub.
pub(crate) fn map_send_error(error: SendError, sent: bool) -> Error {
    match error {
        SendError::LinkStateError(state) => Error::from_link_state(&state, sent),
        SendError::Detached(detach) => {
            Error::lost(sent, format!("the link was detached: {detach}"))
        }
        SendError::MessageSizeExceeded(exceeded) => Error::MessageTooLarge(Rejection::new(
            CONDITION_MESSAGE_SIZE_EXCEEDED,
            Some(format!("refused before sending: {exceeded}")),
        )),
        other => Error::protocol(other),
    }
}

/// A failed receive.
pub(crate) fn recv_error(error: &RecvError) -> Error {
    match error {
        RecvError::LinkStateError(state) => Error::from_link_state(state, false),
        other => Error::protocol(other),
    }
}

/// The hub's verdict on a message.
pub(crate) fn map_outcome(outcome: Outcome) -> Result<()> {
    match outcome {
        Outcome::Accepted(_) => Ok(()),
        Outcome::Rejected(rejected) => Err(Error::from_rejection(
            rejected
                .error
                .as_ref()
                .map(Rejection::from_amqp)
                .unwrap_or_else(|| Rejection::new("", None)),
        )),
        Outcome::Released(_) => Err(Error::Released),
        Outcome::Modified(modified) => Err(Error::Modified {
            delivery_failed: modified.delivery_failed.unwrap_or(false),
            undeliverable_here: modified.undeliverable_here.unwrap_or(false),
        }),
        // Transactional outcomes exist only with fe2o3's `transaction` feature.
        #[allow(unreachable_patterns)]
        other => Err(Error::protocol(format!("unexpected outcome {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition};
    use fe2o3_amqp::types::messaging::{Accepted, Modified, Rejected, Released};

    #[test]
    fn outcomes_map_to_results() {
        assert!(map_outcome(Outcome::Accepted(Accepted {})).is_ok());
        assert!(matches!(
            map_outcome(Outcome::Released(Released {})),
            Err(Error::Released)
        ));
        assert!(matches!(
            map_outcome(Outcome::Modified(Modified {
                delivery_failed: Some(true),
                undeliverable_here: None,
                message_annotations: None,
            })),
            Err(Error::Modified {
                delivery_failed: true,
                undeliverable_here: false
            })
        ));
        let rejected = Outcome::Rejected(Rejected {
            error: Some(definitions::Error::new(
                ErrorCondition::AmqpError(AmqpError::NotFound),
                Some("Device not found".to_owned()),
                None,
            )),
        });
        assert!(matches!(
            map_outcome(rejected),
            Err(Error::DeviceNotFound(_))
        ));
        let bare = map_outcome(Outcome::Rejected(Rejected { error: None })).unwrap_err();
        assert!(matches!(&bare, Error::Rejected(r) if r.condition().is_empty()));
        assert_eq!(
            bare.to_string(),
            "the IoT Hub rejected the message with no error condition"
        );
    }
}
