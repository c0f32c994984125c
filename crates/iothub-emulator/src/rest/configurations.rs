//! Configurations: `GET`, `PUT` and `DELETE /configurations/{id}`, the list
//! `GET /configurations?top=n`, `POST /configurations/testQueries`, and
//! `POST /devices/{id}/applyConfigurationContent` for IoT Edge devices. The rules, targeting
//! and metrics are in `state/configurations.rs`; writes go through a `Tx`, which re-targets
//! twins in the same durable transaction.

use std::collections::BTreeMap;

use chrono::Utc;
use iothub_rest_gen::IotDateTime;
use iothub_rest_gen::types as wire;
use serde_json::Value;

use super::answer::{Answer, quoted, to_json};
use super::devices::parse_top;
use super::errors::ServiceError;
use super::request::{Req, if_match, json_body};
use crate::hub::Shared;
use crate::state::blocking::off_worker;
use crate::state::configurations::{
    MAX_CONFIGURATIONS, StoredConfiguration, Targeting, check_content, configuration_input,
    etag_of, metric_count, metric_query, render, target_query,
};
use crate::state::etag::IfMatch;
use crate::state::identity::parse_model;
use crate::state::store::Snapshot;

/// Most configurations `GET /configurations` returns: all a hub may have.
const MAX_LIST: usize = MAX_CONFIGURATIONS;

/// `GET /configurations/{id}`.
pub(super) fn get_configuration(shared: &Shared, id: &str) -> Result<Answer, ServiceError> {
    let snapshot = shared.store.read();
    if !snapshot.configurations().contains_key(id) {
        return Err(ServiceError::configuration_not_found(id));
    }
    // Metrics scan every twin: off the async workers.
    let config = off_worker(|| rendered(&snapshot, Some(id)))
        .into_iter()
        .next()
        .ok_or_else(|| ServiceError::configuration_not_found(id))?;
    let etag = config.etag.clone();
    Ok(Answer::json(200, to_json(&config)).with_headers(quoted(etag.as_deref())))
}

/// `GET /configurations?top=n`: at most `n` configurations (any number outside 1 to 100
/// is all of them, as `top` of devices).
pub(super) fn list_configurations(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
    let top = match req.query_param("top") {
        None => MAX_LIST,
        Some(t) => parse_top(&t)?.min(MAX_LIST),
    };
    let snapshot = shared.store.read();
    let list: Vec<Value> = off_worker(|| rendered(&snapshot, None))
        .iter()
        .take(top)
        .map(to_json)
        .collect();
    Ok(Answer::json(200, Value::Array(list)))
}

/// `PUT /configurations/{id}`: creates without `If-Match` (409 when it exists), updates with
/// one (`*` or the quoted current etag; 412 otherwise), as devices. An update may change
/// the target condition, priority, labels and metrics; the content is fixed once created.
pub(super) fn put_configuration(
    shared: &Shared,
    id: &str,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let input = configuration_input(id, &json_body(req)?)?;
    let cond = if_match(req);
    let mut tx = shared.store.begin();
    let now = Some(IotDateTime::from(Utc::now()));
    let stored = match (tx.configuration(id), &cond) {
        (Some(_), IfMatch::Absent) => return Err(ServiceError::configuration_already_exists(id)),
        (None, IfMatch::Etag(_)) => return Err(ServiceError::configuration_not_found(id)),
        (None, _) => {
            if tx.configurations().len() >= MAX_CONFIGURATIONS {
                return Err(ServiceError::configuration_count_limit_exceeded(
                    MAX_CONFIGURATIONS,
                ));
            }
            let mut config = input;
            config.created_time_utc = now;
            config.last_updated_time_utc = now;
            config.etag = Some(etag_of(1));
            StoredConfiguration {
                config,
                seq: tx.next_configuration_seq(),
                version: 1,
            }
        }
        (Some(mut existing), cond) => {
            if !cond.matches(&etag_of(existing.version)) {
                return Err(ServiceError::precondition_failed(format!(
                    "Precondition failed: the etag does not match the configuration's current \
                     etag. Configuration: {id}"
                )));
            }
            if input.content != existing.config.content {
                return Err(ServiceError::argument_invalid(format!(
                    "The content of configuration '{id}' cannot be changed once created; \
                     create a new configuration instead"
                )));
            }
            existing.version += 1;
            let c = &mut existing.config;
            c.target_condition = input.target_condition;
            c.priority = input.priority;
            c.labels = input.labels;
            c.metrics = input.metrics;
            c.schema_version = input.schema_version;
            c.last_updated_time_utc = now;
            c.etag = Some(etag_of(existing.version));
            existing
        }
    };
    tx.stage_configuration(id, Some(stored));
    tx.commit()?;
    get_configuration(shared, id).map(|mut a| {
        a.status = 200;
        a
    })
}

/// `DELETE /configurations/{id}`: without `If-Match`, `*` or the quoted current etag.
pub(super) fn delete_configuration(
    shared: &Shared,
    id: &str,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let mut tx = shared.store.begin();
    let existing = tx
        .configuration(id)
        .ok_or_else(|| ServiceError::configuration_not_found(id))?;
    if !if_match(req).matches(&etag_of(existing.version)) {
        return Err(ServiceError::precondition_failed(format!(
            "Precondition failed: the etag does not match the configuration's current etag. \
             Configuration: {id}"
        )));
    }
    tx.stage_configuration(id, None);
    tx.commit()?;
    Ok(Answer::empty(204))
}

/// `POST /configurations/testQueries`: what is wrong with a target condition and custom
/// metric queries, as the service answers (200 with the errors; none for valid queries).
pub(super) fn test_queries(req: &Req) -> Result<Answer, ServiceError> {
    let input: wire::ConfigurationQueriesTestInput =
        parse_model(&json_body(req)?, "configuration queries test input")?;
    let target_condition_error = input
        .target_condition
        .as_deref()
        .and_then(|c| target_query(c).err());
    let custom_metric_query_errors: BTreeMap<String, String> = input
        .custom_metric_queries
        .iter()
        .filter_map(|(name, text)| metric_query(text).err().map(|e| (name.clone(), e)))
        .collect();
    let response = wire::ConfigurationQueriesTestResponse {
        custom_metric_query_errors,
        target_condition_error,
    };
    Ok(Answer::json(200, to_json(&response)))
}

/// `POST /devices/{id}/applyConfigurationContent`: the modules' desired properties of an
/// IoT Edge device, from `modulesContent`; 204.
pub(super) fn apply_content(shared: &Shared, id: &str, req: &Req) -> Result<Answer, ServiceError> {
    let content: wire::ConfigurationContent =
        parse_model(&json_body(req)?, "configuration content")?;
    if content.modules_content.is_empty() {
        return Err(ServiceError::argument_invalid(
            "modulesContent is required to apply configuration content to an IoT Edge device",
        ));
    }
    let mut tx = shared.store.begin();
    if tx.get(id).is_none() {
        return Err(ServiceError::device_not_found(id));
    }
    check_content(&content)?;
    tx.apply_configuration_content(id, &content.modules_content)?;
    tx.commit()?;
    Ok(Answer::empty(204))
}

/// The configurations (one, or all in id order) with their metrics computed now.
fn rendered(snapshot: &Snapshot, only: Option<&str>) -> Vec<wire::Configuration> {
    let configs = snapshot.configurations();
    let targeting = Targeting::new(configs.values());
    let counts = targeting.counts(snapshot.values());
    configs
        .values()
        .filter(|c| only.is_none_or(|id| c.id() == id))
        .map(|c| {
            let custom = c
                .config
                .metrics
                .as_ref()
                .map(|m| {
                    m.queries
                        .iter()
                        .map(|(name, text)| {
                            let count = metric_query(text)
                                .map_or(0, |q| metric_count(&q, snapshot.values()));
                            (name.clone(), count)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let counts = counts.get(c.id()).copied().unwrap_or((0, 0));
            render(c, counts, custom)
        })
        .collect()
}
