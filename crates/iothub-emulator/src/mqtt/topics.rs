//! IoT Hub's MQTT topic names and filters, and the url-encoded property bags they carry: what
//! a device may publish to and subscribe to, read into values the session acts on.

use std::collections::BTreeMap;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Who the connection is: a device, or a module of a device.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Identity {
    pub(crate) device: String,
    pub(crate) module: Option<String>,
}

impl Identity {
    /// `devices/{d}` or `devices/{d}/modules/{m}`, the prefix of its telemetry topics.
    fn prefix(&self) -> String {
        match &self.module {
            None => format!("devices/{}", self.device),
            Some(m) => format!("devices/{}/modules/{m}", self.device),
        }
    }

    /// `device` or `device/module`, for logs and errors.
    pub(crate) fn name(&self) -> String {
        match &self.module {
            None => self.device.clone(),
            Some(m) => format!("{}/{m}", self.device),
        }
    }
}

/// What a device publishes.
#[derive(Debug, PartialEq)]
pub(crate) enum Inbound {
    /// Telemetry with its property bag (decoded, in order).
    Telemetry(Vec<(String, Option<String>)>),
    /// `$iothub/twin/GET/?$rid=`.
    TwinGet { rid: String },
    /// `$iothub/twin/PATCH/properties/reported/?$rid=`.
    TwinReport { rid: String },
    /// `$iothub/methods/res/{status}/?$rid=`.
    MethodResponse { status: i32, rid: String },
}

/// Why a publish topic is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused;

/// Reads a topic a device published on; anything outside the contract is refused.
pub(crate) fn inbound(who: &Identity, topic: &str) -> Result<Inbound, Refused> {
    let events = format!("{}/messages/events/", who.prefix());
    if let Some(bag) = topic.strip_prefix(&events) {
        return Ok(Inbound::Telemetry(parse_bag(bag)?));
    }
    // Some clients leave out the trailing slash when the bag is empty.
    if topic == &events[..events.len() - 1] {
        return Ok(Inbound::Telemetry(Vec::new()));
    }
    if let Some(query) = topic.strip_prefix("$iothub/twin/GET/?") {
        return Ok(Inbound::TwinGet { rid: rid(query)? });
    }
    if let Some(query) = topic.strip_prefix("$iothub/twin/PATCH/properties/reported/?") {
        return Ok(Inbound::TwinReport { rid: rid(query)? });
    }
    if let Some(rest) = topic.strip_prefix("$iothub/methods/res/") {
        let (status, query) = rest.split_once("/?").ok_or(Refused)?;
        let status = status.parse().map_err(|_| Refused)?;
        return Ok(Inbound::MethodResponse {
            status,
            rid: rid(query)?,
        });
    }
    Err(Refused)
}

fn rid(query: &str) -> Result<String, Refused> {
    parse_bag(query)?
        .into_iter()
        .find(|(k, _)| k == "$rid")
        .and_then(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .ok_or(Refused)
}

/// What a subscription is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Subscription {
    /// `devices/{id}/messages/devicebound/#`.
    CloudToDevice,
    /// `$iothub/twin/res/#`.
    TwinResponses,
    /// `$iothub/twin/PATCH/properties/desired/#`.
    DesiredPatches,
    /// `$iothub/methods/POST/#`.
    Methods,
}

/// Reads a subscription filter; `None` for any filter IoT Hub does not offer this identity.
pub(crate) fn subscription(who: &Identity, filter: &str) -> Option<Subscription> {
    match filter {
        "$iothub/twin/res/#" => Some(Subscription::TwinResponses),
        "$iothub/twin/PATCH/properties/desired/#" => Some(Subscription::DesiredPatches),
        "$iothub/methods/POST/#" => Some(Subscription::Methods),
        // Modules get no cloud-to-device messages from the hub.
        f if who.module.is_none()
            && f == format!("devices/{}/messages/devicebound/#", who.device) =>
        {
            Some(Subscription::CloudToDevice)
        }
        _ => None,
    }
}

/// Splits an url-encoded bag (`a=1&b&c=`) into decoded pairs; a key without `=` has no value.
pub(crate) fn parse_bag(bag: &str) -> Result<Vec<(String, Option<String>)>, Refused> {
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| Refused)
    };
    bag.split('&')
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) => Ok((decode(k)?, Some(decode(v)?))),
            None => Ok((decode(part)?, None)),
        })
        .collect()
}

/// What is escaped in a bag: everything but the unreserved characters (RFC 3986).
const BAG: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Writes pairs as an url-encoded bag (`None` as the bare key, as the hub does for null).
pub(crate) fn write_bag<'a>(pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, BAG));
        if let Some(v) = v {
            out.push('=');
            out.extend(utf8_percent_encode(v, BAG));
        }
    }
    out
}

/// The username's query parameters (`{host}/{id}/?api-version=…&model-id=…`), decoded.
pub(crate) fn username_params(username: &str) -> BTreeMap<String, String> {
    username
        .split_once('?')
        .and_then(|(_, q)| parse_bag(q).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect()
}

/// Reads the CONNECT client id: `device` or `device/module`.
pub(crate) fn identity(client_id: &str) -> Option<Identity> {
    let mut parts = client_id.split('/');
    let device = parts.next().filter(|d| !d.is_empty())?;
    let module = parts.next().map(str::to_owned);
    if parts.next().is_some() || module.as_deref() == Some("") {
        return None;
    }
    Some(Identity {
        device: device.to_owned(),
        module,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Identity {
        Identity {
            device: "d1".into(),
            module: None,
        }
    }

    #[test]
    fn telemetry_topics_and_their_bags() {
        let d = device();
        assert_eq!(
            inbound(
                &d,
                "devices/d1/messages/events/a=1&%24.ct=application%2Fjson&flag"
            ),
            Ok(Inbound::Telemetry(vec![
                ("a".into(), Some("1".into())),
                ("$.ct".into(), Some("application/json".into())),
                ("flag".into(), None),
            ]))
        );
        assert_eq!(
            inbound(&d, "devices/d1/messages/events"),
            Ok(Inbound::Telemetry(vec![]))
        );
        assert_eq!(inbound(&d, "devices/d2/messages/events/"), Err(Refused));
        assert_eq!(inbound(&d, "some/other/topic"), Err(Refused));
        let m = Identity {
            device: "d1".into(),
            module: Some("m".into()),
        };
        assert!(inbound(&m, "devices/d1/modules/m/messages/events/").is_ok());
        assert_eq!(inbound(&m, "devices/d1/messages/events/"), Err(Refused));
    }

    #[test]
    fn twin_and_method_topics() {
        let d = device();
        assert_eq!(
            inbound(&d, "$iothub/twin/GET/?$rid=7"),
            Ok(Inbound::TwinGet { rid: "7".into() })
        );
        assert_eq!(
            inbound(&d, "$iothub/twin/PATCH/properties/reported/?$rid=x&other=1"),
            Ok(Inbound::TwinReport { rid: "x".into() })
        );
        assert_eq!(inbound(&d, "$iothub/twin/GET/?"), Err(Refused));
        assert_eq!(
            inbound(&d, "$iothub/methods/res/200/?$rid=5"),
            Ok(Inbound::MethodResponse {
                status: 200,
                rid: "5".into()
            })
        );
        assert_eq!(inbound(&d, "$iothub/methods/res/ok/?$rid=5"), Err(Refused));
    }

    #[test]
    fn only_iot_hub_filters() {
        let d = device();
        assert_eq!(
            subscription(&d, "devices/d1/messages/devicebound/#"),
            Some(Subscription::CloudToDevice)
        );
        assert_eq!(subscription(&d, "devices/d2/messages/devicebound/#"), None);
        assert_eq!(subscription(&d, "#"), None);
        assert_eq!(
            subscription(&d, "$iothub/methods/POST/#"),
            Some(Subscription::Methods)
        );
        let m = Identity {
            device: "d1".into(),
            module: Some("m".into()),
        };
        assert_eq!(subscription(&m, "devices/d1/messages/devicebound/#"), None);
    }

    #[test]
    fn bags_round_trip() {
        let bag = write_bag([("$.mid", Some("a b/c")), ("k", None), ("e", Some(""))]);
        assert_eq!(bag, "%24.mid=a%20b%2Fc&k&e=");
        assert_eq!(
            parse_bag(&bag).unwrap(),
            vec![
                ("$.mid".into(), Some("a b/c".into())),
                ("k".into(), None),
                ("e".into(), Some(String::new())),
            ]
        );
        assert_eq!(parse_bag("%ff=1"), Err(Refused));
    }

    #[test]
    fn client_ids_and_usernames() {
        assert_eq!(identity("d"), Some(device_named("d")));
        assert_eq!(identity("d/m").and_then(|i| i.module), Some("m".to_owned()));
        assert_eq!(identity(""), None);
        assert_eq!(identity("d/"), None);
        assert_eq!(identity("a/b/c"), None);
        let p = username_params("h/d/?api-version=2021-04-12&model-id=dtmi%3Ax%3By%3B1");
        assert_eq!(p.get("model-id").map(String::as_str), Some("dtmi:x;y;1"));
    }

    fn device_named(d: &str) -> Identity {
        Identity {
            device: d.into(),
            module: None,
        }
    }
}
