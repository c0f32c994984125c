//! The cloud-to-device queue of a device as the REST API shows it: `DELETE
//! /devices/{id}/commands` purges it. (Messages go in over AMQP, see `crate::amqp`.)

use iothub_rest_gen::types as wire;

use super::answer::{Answer, to_json};
use super::errors::ServiceError;
use crate::hub::Shared;

/// `DELETE /devices/{id}/commands`: purges the device's cloud-to-device queue.
pub(super) fn purge(shared: &Shared, id: String) -> Result<Answer, ServiceError> {
    if !shared.store.read().contains_key(&id) {
        return Err(ServiceError::device_not_found(&id));
    }
    let purged = i32::try_from(shared.c2d.purge(&id)).unwrap_or(i32::MAX);
    let result = wire::PurgeMessageQueueResult {
        device_id: Some(id),
        module_id: None,
        total_messages_purged: Some(purged),
    };
    Ok(Answer::json(200, to_json(&result)))
}
