//! Node addresses as clients write them, reduced to one spelling, and the `to` of a
//! cloud-to-device message.
//!
//! SDKs disagree on case (`deviceBound`, `serviceBound`) and on whether to send a full URI
//! (`amqps://host:5671/messages/deviceBound`), so every address is compared after
//! [`normalize`].

use percent_encoding::percent_decode_str;

/// Target of the link the service sends cloud-to-device messages on.
pub(crate) const DEVICEBOUND: &str = "/messages/devicebound";
/// Source of the delivery-feedback link.
pub(crate) const FEEDBACK: &str = "/messages/servicebound/feedback";
/// Source of the file-upload notification link.
pub(crate) const FILE_NOTIFICATIONS: &str = "/messages/servicebound/filenotifications";
/// The claims-based-security node.
pub(crate) const CBS: &str = "$cbs";

/// Strips `scheme://host[:port]` and any query, drops one trailing slash (and the slash
/// before a `$` name), lowercases.
pub(crate) fn normalize(address: &str) -> String {
    let address = address.trim();
    let path = match address.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
        None => address,
    };
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    // `$cbs` and the like are names, not paths, even after a host.
    let path = path.strip_prefix("/$").map_or(path, |_| &path[1..]);
    path.to_ascii_lowercase()
}

/// Who a cloud-to-device message is for, as its `to` names them (still percent-encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recipient {
    pub(crate) device: String,
    pub(crate) module: Option<String>,
}

impl Recipient {
    /// Parses `/devices/{id}/messages/devicebound` or
    /// `/devices/{id}/modules/{mid}/messages/devicebound`, the fixed words in any case.
    pub(crate) fn parse(to: &str) -> Option<Self> {
        let to = to.trim();
        // A full URI is accepted like a link address; ids keep their case.
        let path = match to.split_once("://") {
            Some((_, rest)) => &rest[rest.find('/')?..],
            None => to,
        };
        let path = path.strip_prefix('/').unwrap_or(path);
        let parts: Vec<&str> = path.split('/').collect();
        let word = |i: usize, w: &str| parts.get(i).is_some_and(|p| p.eq_ignore_ascii_case(w));
        let id = |i: usize| {
            parts
                .get(i)
                .filter(|p| !p.is_empty())
                .map(|p| (*p).to_owned())
        };
        match parts.len() {
            4 if word(0, "devices") && word(2, "messages") && word(3, "devicebound") => {
                Some(Self {
                    device: id(1)?,
                    module: None,
                })
            }
            6 if word(0, "devices")
                && word(2, "modules")
                && word(4, "messages")
                && word(5, "devicebound") =>
            {
                Some(Self {
                    device: id(1)?,
                    module: Some(id(3)?),
                })
            }
            _ => None,
        }
    }
}

/// The ids to look an id up by: percent-decoded first (as Node and C# encode them), then as
/// sent (Python sends ids verbatim, and `%` is a legal id character).
pub(crate) fn candidates(raw: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(2);
    if let Ok(decoded) = percent_decode_str(raw).decode_utf8()
        && decoded != raw
    {
        out.push(decoded.into_owned());
    }
    out.push(raw.to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_normalized() {
        for (given, want) in [
            ("/messages/devicebound", DEVICEBOUND),
            ("/messages/deviceBound", DEVICEBOUND),
            (
                "amqps://hub.azure-devices.net:5671/messages/deviceBound",
                DEVICEBOUND,
            ),
            ("amqps://127.0.0.2/messages/devicebound/", DEVICEBOUND),
            ("/messages/serviceBound/feedback", FEEDBACK),
            (
                "/messages/serviceBound/filenotifications?x=1",
                FILE_NOTIFICATIONS,
            ),
            ("$cbs", CBS),
            ("amqps://host/$cbs", CBS),
            ("amqps://host", ""),
            ("/", "/"),
            ("", ""),
        ] {
            assert_eq!(normalize(given), want, "{given}");
        }
    }

    #[test]
    fn to_names_a_device_or_a_module() {
        let device = |d: &str| {
            Some(Recipient {
                device: d.into(),
                module: None,
            })
        };
        assert_eq!(
            Recipient::parse("/devices/dev1/messages/devicebound"),
            device("dev1")
        );
        assert_eq!(
            Recipient::parse("/devices/Dev1/Messages/DeviceBound"),
            device("Dev1")
        );
        assert_eq!(
            Recipient::parse("devices/d%201/messages/devicebound"),
            device("d%201")
        );
        assert_eq!(
            Recipient::parse("amqps://h:5671/devices/d/messages/devicebound"),
            device("d")
        );
        assert_eq!(
            Recipient::parse("/devices/d/modules/m/messages/deviceBound"),
            Some(Recipient {
                device: "d".into(),
                module: Some("m".into()),
            })
        );
        for bad in [
            "",
            "/",
            "/devices//messages/devicebound",
            "/devices/d/messages/events",
            "/devices/d/modules//messages/devicebound",
            "/devices/d/messages/devicebound/extra",
            "/things/d/messages/devicebound",
            "amqps://host",
        ] {
            assert_eq!(Recipient::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_are_tried_decoded_then_verbatim() {
        assert_eq!(candidates("dev%201"), ["dev 1", "dev%201"]);
        assert_eq!(candidates("dev1"), ["dev1"]);
        // Not valid UTF-8 once decoded: only as sent.
        assert_eq!(candidates("a%FF"), ["a%FF"]);
        assert_eq!(candidates("50%"), ["50%"]);
    }
}
