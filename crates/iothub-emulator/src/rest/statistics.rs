//! Registry and service statistics: `GET /statistics/devices` and `GET /statistics/service`.

use iothub_rest_gen::types as wire;

use super::answer::{Answer, to_json};
use super::errors::ServiceError;
use crate::hub::Shared;

/// `GET /statistics/devices`.
pub(super) fn device_stats(shared: &Shared) -> Result<Answer, ServiceError> {
    let devices = shared.store.read();
    let enabled = devices
        .values()
        .filter(|e| e.device.status == Some(wire::DeviceStatus::Enabled))
        .count();
    let total = devices.len();
    let stats = wire::RegistryStatistics {
        total_device_count: Some(count(total)),
        enabled_device_count: Some(count(enabled)),
        disabled_device_count: Some(count(total - enabled)),
    };
    Ok(Answer::json(200, to_json(&stats)))
}

/// `GET /statistics/service`.
pub(super) fn service_stats(shared: &Shared) -> Result<Answer, ServiceError> {
    let devices = shared.store.read();
    let connected = devices
        .values()
        .filter(|e| e.device.connection_state == Some(wire::ConnectionState::Connected))
        .count();
    let stats = wire::ServiceStatistics {
        connected_device_count: Some(count(connected)),
    };
    Ok(Answer::json(200, to_json(&stats)))
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
