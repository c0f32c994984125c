//! Claims-based security: the `put-token` request on the `$cbs` node.
//!
//! Hand-rolled on a sender/receiver pair rather than with `fe2o3-amqp-cbs`, whose
//! `CbsClient::put_token` only accepts status 202 while IoT Hub answers 200, and whose
//! management client takes the next reply without matching its correlation id. Replies are
//! matched here by correlation id, so a late reply to an earlier request is never taken for
//! the current one.

use std::time::{SystemTime, UNIX_EPOCH};

use fe2o3_amqp::link::{Receiver, Sender};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message as AmqpMessage, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Timestamp, Value};
use iothub_auth::CbsToken;

use crate::error::{CONDITION_UNAUTHORIZED, Error, Rejection, Result};
use crate::link::{map_send_error, receiver_link, recv_error};

/// The CBS node's address.
pub(crate) const CBS_NODE: &str = "$cbs";
/// Where replies come back (our receiver's target, and the requests' `reply-to`).
const REPLY_TO: &str = "cbs";

/// The request for `token`: application properties `operation`, `type`, `name` and
/// `expiration`, the token as an AMQP string value, and a string message id.
pub(crate) fn put_token_request(
    token: &CbsToken,
    message_id: &str,
) -> AmqpMessage<AmqpValue<String>> {
    let mut application = ApplicationProperties::default();
    let mut set = |key: &str, value: SimpleValue| {
        application.insert(key.to_owned(), value);
    };
    set("operation", SimpleValue::String("put-token".to_owned()));
    set(
        "type",
        SimpleValue::String(token.token_type.as_str().to_owned()),
    );
    set("name", SimpleValue::String(token.audience.clone()));
    if let Some(ms) = epoch_millis(token.expires_at) {
        set(
            "expiration",
            SimpleValue::Timestamp(Timestamp::from_milliseconds(ms)),
        );
    }
    let properties = Properties {
        message_id: Some(MessageId::String(message_id.to_owned())),
        to: Some(CBS_NODE.to_owned()),
        reply_to: Some(REPLY_TO.to_owned()),
        ..Properties::default()
    };
    AmqpMessage::builder()
        .properties(properties)
        .application_properties(application)
        .value(token.token.expose_secret().to_owned())
        .build()
}

fn epoch_millis(at: SystemTime) -> Option<i64> {
    let since = at.duration_since(UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// Reads a reply: `None` if it answers another request, else whether the token was accepted
/// (status 200, as IoT Hub answers, or 202, as Service Bus does).
pub(crate) fn check_reply(
    reply: &AmqpMessage<Body<Value>>,
    message_id: &str,
) -> Option<Result<()>> {
    let correlation = reply.properties.as_ref()?.correlation_id.as_ref()?;
    let ours = match correlation {
        MessageId::String(id) => id == message_id,
        MessageId::Uuid(uuid) => uuid::Uuid::from_bytes(*uuid.as_inner()).to_string() == message_id,
        _ => false,
    };
    if !ours {
        return None;
    }
    let property = |key: &str| {
        reply
            .application_properties
            .as_ref()
            .and_then(|props| props.get(key))
    };
    let status = match property("status-code").and_then(as_status) {
        Some(status) => status,
        None => {
            return Some(Err(Error::protocol(
                "the CBS reply has no integer `status-code`",
            )));
        }
    };
    if status == 200 || status == 202 {
        return Some(Ok(()));
    }
    let description = match property("status-description") {
        Some(SimpleValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    Some(Err(Error::Unauthorized {
        status: Some(status),
        rejection: Rejection::new(CONDITION_UNAUTHORIZED, description),
    }))
}

// The hub sends an AMQP int; any integer type is read, in case a peer sends another.
fn as_status(value: &SimpleValue) -> Option<i32> {
    match value {
        SimpleValue::Int(v) => Some(*v),
        SimpleValue::Long(v) => i32::try_from(*v).ok(),
        SimpleValue::Uint(v) => i32::try_from(*v).ok(),
        SimpleValue::Ulong(v) => i32::try_from(*v).ok(),
        SimpleValue::Short(v) => Some(i32::from(*v)),
        SimpleValue::Ushort(v) => Some(i32::from(*v)),
        _ => None,
    }
}

/// The `$cbs` link pair of one session.
pub(crate) struct Cbs {
    sender: Sender,
    receiver: Receiver,
}

impl Cbs {
    pub(crate) async fn attach(session: &mut SessionHandle<()>) -> Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let sender = Sender::builder()
            .name(format!("cbs-sender-{suffix}"))
            .target(CBS_NODE)
            .verify_incoming_target(false)
            .attach(session)
            .await
            .map_err(|e| Error::protocol(format!("the $cbs sender link was refused: {e}")))?;
        let receiver = receiver_link(session, "cbs-receiver", CBS_NODE, Some(REPLY_TO), 10).await?;
        Ok(Self { sender, receiver })
    }

    /// Sends `token` and waits for the matching reply. The caller bounds the wait.
    pub(crate) async fn put_token(&mut self, token: &CbsToken) -> Result<()> {
        let message_id = uuid::Uuid::new_v4().to_string();
        let request = put_token_request(token, &message_id);
        let outcome = self
            .sender
            .send(request)
            .await
            .map_err(|e| map_send_error(e, false))?;
        match outcome {
            Outcome::Accepted(_) => {}
            Outcome::Rejected(rejected) => {
                let rejection = rejected
                    .error
                    .as_ref()
                    .map(Rejection::from_amqp)
                    .unwrap_or_else(|| Rejection::new(CONDITION_UNAUTHORIZED, None));
                return Err(Error::Unauthorized {
                    status: None,
                    rejection,
                });
            }
            #[allow(unreachable_patterns)]
            other => {
                return Err(Error::protocol(format!(
                    "the $cbs node did not accept the put-token request: {other:?}"
                )));
            }
        }
        loop {
            let delivery = self
                .receiver
                .recv::<Body<Value>>()
                .await
                .map_err(|e| recv_error(&e))?;
            // Best effort: the reply has been read whatever happens to its settlement.
            let _ = self.receiver.accept(&delivery).await;
            match check_reply(delivery.message(), &message_id) {
                Some(result) => return result,
                None => tracing::debug!("ignoring a CBS reply to an earlier request"),
            }
        }
    }

    pub(crate) async fn close(self) {
        let _ = self.sender.close().await;
        let _ = self.receiver.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use iothub_auth::{CbsTokenType, Secret};

    fn token() -> CbsToken {
        CbsToken {
            token: Secret::new(
                "SharedAccessSignature sr=hub.example&sig=abc&se=1700000000&skn=service",
            ),
            token_type: CbsTokenType::SharedAccessSignature,
            audience: "https://hub.example".to_owned(),
            expires_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn app(message: &AmqpMessage<AmqpValue<String>>, key: &str) -> SimpleValue {
        message
            .application_properties
            .as_ref()
            .unwrap()
            .get(key)
            .unwrap()
            .clone()
    }

    #[test]
    fn the_request_carries_what_the_hub_reads() {
        let request = put_token_request(&token(), "id-1");
        assert_eq!(
            app(&request, "operation"),
            SimpleValue::String("put-token".into())
        );
        assert_eq!(
            app(&request, "type"),
            SimpleValue::String("servicebus.windows.net:sastoken".into())
        );
        assert_eq!(
            app(&request, "name"),
            SimpleValue::String("https://hub.example".into())
        );
        assert_eq!(
            app(&request, "expiration"),
            SimpleValue::Timestamp(Timestamp::from_milliseconds(1_700_000_000_000))
        );
        assert_eq!(request.application_properties.as_ref().unwrap().len(), 4);
        let properties = request.properties.as_ref().unwrap();
        assert_eq!(
            properties.message_id,
            Some(MessageId::String("id-1".into()))
        );
        assert_eq!(properties.to.as_deref(), Some("$cbs"));
        assert_eq!(properties.reply_to.as_deref(), Some("cbs"));
        assert_eq!(
            request.body.0,
            "SharedAccessSignature sr=hub.example&sig=abc&se=1700000000&skn=service"
        );
    }

    #[test]
    fn a_bearer_token_is_typed_bearer() {
        let mut bearer = token();
        bearer.token_type = CbsTokenType::Bearer;
        bearer.token = Secret::new("Bearer eyJ");
        bearer.audience = "https://iothubs.azure.net/.default".into();
        let request = put_token_request(&bearer, "id");
        assert_eq!(app(&request, "type"), SimpleValue::String("bearer".into()));
        assert_eq!(request.body.0, "Bearer eyJ");
    }

    fn reply(
        correlation: Option<MessageId>,
        status: Option<SimpleValue>,
        description: Option<&str>,
    ) -> AmqpMessage<Body<Value>> {
        let mut application = ApplicationProperties::default();
        if let Some(status) = status {
            application.insert("status-code".into(), status);
        }
        if let Some(description) = description {
            application.insert(
                "status-description".into(),
                SimpleValue::String(description.into()),
            );
        }
        AmqpMessage::builder()
            .properties(Properties {
                correlation_id: correlation,
                ..Properties::default()
            })
            .application_properties(application)
            .body(Body::Empty)
            .build()
    }

    fn ours() -> Option<MessageId> {
        Some(MessageId::String("id-1".into()))
    }

    #[test]
    fn status_200_and_202_are_accepted() {
        for status in [200, 202] {
            let result = check_reply(
                &reply(ours(), Some(SimpleValue::Int(status)), Some("OK")),
                "id-1",
            );
            assert!(matches!(result, Some(Ok(()))), "{status}: {result:?}");
        }
        // Another integer encoding still reads.
        assert!(matches!(
            check_reply(&reply(ours(), Some(SimpleValue::Long(200)), None), "id-1"),
            Some(Ok(()))
        ));
    }

    #[test]
    fn other_statuses_are_unauthorized_with_the_description() {
        match check_reply(
            &reply(
                ours(),
                Some(SimpleValue::Int(401)),
                Some("InvalidSignature"),
            ),
            "id-1",
        ) {
            Some(Err(Error::Unauthorized {
                status: Some(401),
                rejection,
            })) => {
                assert_eq!(rejection.condition(), "amqp:unauthorized-access");
                assert_eq!(rejection.description(), Some("InvalidSignature"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_reply(&reply(ours(), Some(SimpleValue::Int(500)), None), "id-1"),
            Some(Err(Error::Unauthorized {
                status: Some(500),
                ..
            }))
        ));
    }

    #[test]
    fn a_reply_without_status_is_an_error() {
        for status in [None, Some(SimpleValue::String("200".into()))] {
            assert!(matches!(
                check_reply(&reply(ours(), status, None), "id-1"),
                Some(Err(Error::Protocol { .. }))
            ));
        }
    }

    #[test]
    fn replies_to_other_requests_are_skipped() {
        let ok = Some(SimpleValue::Int(200));
        assert!(
            check_reply(
                &reply(Some(MessageId::String("id-0".into())), ok.clone(), None),
                "id-1"
            )
            .is_none()
        );
        assert!(check_reply(&reply(None, ok.clone(), None), "id-1").is_none());
        assert!(check_reply(&reply(Some(MessageId::Ulong(1)), ok, None), "id-1").is_none());
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        let text = format!("{:?}", token());
        assert!(!text.contains("sig=abc"), "{text}");
    }
}
