//! Delivery feedback over HTTP: `GET /messages/serviceBound/feedback` (the next batch, locked),
//! `DELETE /messages/serviceBound/feedback/{lockToken}` (complete) and
//! `POST /messages/serviceBound/feedback/{lockToken}/abandon`, on the same feedback records
//! the AMQP receiver takes from (`state/c2d.rs`): one queue, one delivery count.
//!
//! Where the service puts the lock token is not in the spec. The emulator answers as the
//! service's device-facing HTTPS receive does (`GET /devices/{id}/messages/deviceBound`): the
//! lock token in the `ETag` header, quoted, with `iothub-messageid`, `iothub-enqueuedtime`
//! and `iothub-deliverycount` beside it; the README says why.

use chrono::Utc;
use serde_json::Value;

use super::answer::Answer;
use super::errors::{ServiceError, service_time, tracking_id};
use crate::hub::Shared;

/// The content type of a feedback batch, as on AMQP.
pub(crate) const FEEDBACK_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.feedback.json";

/// `GET /messages/serviceBound/feedback`: 200 with the next batch (a JSON array of records)
/// and its lock token, or 204 when no feedback waits.
pub(super) fn receive(shared: &Shared) -> Answer {
    let Some(batch) = shared.c2d.lock_feedback() else {
        return Answer::empty(204);
    };
    Answer::json(200, Value::Array(batch.records))
        .with_content_type(FEEDBACK_CONTENT_TYPE)
        .with_headers(vec![
            ("etag", format!("\"{}\"", batch.lock_token)),
            ("iothub-messageid", tracking_id()),
            ("iothub-enqueuedtime", service_time(Utc::now())),
            ("iothub-deliverycount", batch.delivery_count.to_string()),
        ])
}

/// `DELETE /messages/serviceBound/feedback/{lockToken}`: 204, or 412 when no batch is locked
/// with the token (unknown, settled already, or its lock lapsed).
pub(super) fn complete(shared: &Shared, lock_token: &str) -> Result<Answer, ServiceError> {
    if shared.c2d.complete_feedback_lock(unquoted(lock_token)) {
        Ok(Answer::empty(204))
    } else {
        Err(lock_lost(lock_token))
    }
}

/// `POST /messages/serviceBound/feedback/{lockToken}/abandon`: 204 (the batch is offered
/// again), or 412 as for complete.
pub(super) fn abandon(shared: &Shared, lock_token: &str) -> Result<Answer, ServiceError> {
    if shared.c2d.abandon_feedback_lock(unquoted(lock_token)) {
        Ok(Answer::empty(204))
    } else {
        Err(lock_lost(lock_token))
    }
}

/// The token without the quotes of the `ETag` header it came in, if the client kept them.
fn unquoted(token: &str) -> &str {
    token
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(token)
}

fn lock_lost(lock_token: &str) -> ServiceError {
    ServiceError::message_lock_lost(format!(
        "No feedback is locked with the lock token '{}': it is unknown, settled already, or \
         its lock expired",
        unquoted(lock_token)
    ))
}

#[cfg(test)]
mod tests {
    use super::unquoted;

    #[test]
    fn tokens_are_taken_with_or_without_quotes() {
        assert_eq!(unquoted("\"abc\""), "abc");
        assert_eq!(unquoted("abc"), "abc");
        assert_eq!(unquoted("\""), "\"");
    }
}
