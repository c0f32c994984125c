//! AMQP values to the emulator's plain types: a received message to a [`C2dMessage`], ids to
//! strings, properties to JSON.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use fe2o3_amqp::types::messaging::{Body, Message, MessageId};
use fe2o3_amqp::types::primitives::{SimpleValue, Uuid, Value};
use serde_json::{Number, Value as Json};

use crate::state::c2d::C2dMessage;

/// The message as the hub keeps it. `enqueued_time` is left for the queue to set.
pub(crate) fn c2d_message(
    device_id: String,
    module_id: Option<String>,
    message: &Message<Body<Value>>,
) -> C2dMessage {
    let properties = message.properties.as_ref();
    let application_properties = message
        .application_properties
        .as_ref()
        .map(|props| {
            props
                .0
                .iter()
                .map(|(k, v)| (k.clone(), json(&Value::from(v.clone()))))
                .collect()
        })
        .unwrap_or_default();
    C2dMessage {
        device_id,
        module_id,
        message_id: properties
            .and_then(|p| p.message_id.as_ref())
            .map(id_string),
        correlation_id: properties
            .and_then(|p| p.correlation_id.as_ref())
            .map(id_string),
        user_id: properties
            .and_then(|p| p.user_id.as_ref())
            .map(|u| String::from_utf8_lossy(u).into_owned()),
        to: properties.and_then(|p| p.to.clone()),
        content_type: properties
            .and_then(|p| p.content_type.as_ref())
            .map(|s| s.as_str().to_owned()),
        content_encoding: properties
            .and_then(|p| p.content_encoding.as_ref())
            .map(|s| s.as_str().to_owned()),
        absolute_expiry_time: properties
            .and_then(|p| p.absolute_expiry_time.as_ref())
            .map(|t| t.milliseconds()),
        application_properties,
        body: body_bytes(&message.body),
        enqueued_time: String::new(),
    }
}

/// A message or correlation id as text, whatever its AMQP type: a ulong in decimal, a uuid
/// hyphenated, binary as UTF-8 when it is, else hex.
pub(crate) fn id_string(id: &MessageId) -> String {
    match id {
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => uuid_string(u),
        MessageId::Binary(b) => match std::str::from_utf8(b) {
            Ok(text) => text.to_owned(),
            Err(_) => hex(b),
        },
        MessageId::String(s) => s.clone(),
    }
}

/// The text of an application property, when it is a string or symbol.
pub(crate) fn text(value: &SimpleValue) -> Option<&str> {
    match value {
        SimpleValue::String(s) => Some(s),
        SimpleValue::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

/// The body bytes: Data sections concatenated; an AmqpValue's bytes when it is binary or a
/// string; nothing for an empty or null body; anything else as its JSON text.
fn body_bytes(body: &Body<Value>) -> Vec<u8> {
    match body {
        Body::Data(sections) => sections.iter().flat_map(|d| d.0.iter().copied()).collect(),
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => b.to_vec(),
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Null => Vec::new(),
            other => json(other).to_string().into_bytes(),
        },
        Body::Sequence(sections) => {
            let items: Vec<Json> = sections.iter().flat_map(|s| s.0.iter().map(json)).collect();
            Json::Array(items).to_string().into_bytes()
        }
        Body::Empty => Vec::new(),
    }
}

/// An AMQP value as JSON: numbers and booleans as such; strings, symbols and chars as
/// strings; timestamps as milliseconds since the epoch; uuids hyphenated; binary in base64;
/// lists and arrays as arrays; maps as objects (keys as their JSON text unless strings);
/// decimals and described values as null.
fn json(value: &Value) -> Json {
    match value {
        Value::Null | Value::Described(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Ubyte(n) => Json::from(*n),
        Value::Ushort(n) => Json::from(*n),
        Value::Uint(n) => Json::from(*n),
        Value::Ulong(n) => Json::from(*n),
        Value::Byte(n) => Json::from(*n),
        Value::Short(n) => Json::from(*n),
        Value::Int(n) => Json::from(*n),
        Value::Long(n) => Json::from(*n),
        Value::Float(f) => float(f64::from(f.into_inner())),
        Value::Double(f) => float(f.into_inner()),
        Value::Decimal32(_) | Value::Decimal64(_) | Value::Decimal128(_) => Json::Null,
        Value::Char(c) => Json::String(c.to_string()),
        Value::Timestamp(t) => Json::from(t.milliseconds()),
        Value::Uuid(u) => Json::String(uuid_string(u)),
        Value::Binary(b) => Json::String(STANDARD.encode(b)),
        Value::String(s) => Json::String(s.clone()),
        Value::Symbol(s) => Json::String(s.as_str().to_owned()),
        Value::List(items) => Json::Array(items.iter().map(json).collect()),
        Value::Array(items) => Json::Array(items.0.iter().map(json).collect()),
        Value::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match json(k) {
                        Json::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, json(v))
                })
                .collect(),
        ),
    }
}

fn float(f: f64) -> Json {
    Number::from_f64(f).map_or(Json::Null, Json::Number)
}

fn uuid_string(u: &Uuid) -> String {
    let h = hex(u.as_inner());
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Data, Properties};
    use fe2o3_amqp::types::primitives::{Binary, OrderedMap, Timestamp};
    use serde_json::json;

    use super::*;

    #[test]
    fn ids_are_stringified_whatever_their_type() {
        assert_eq!(id_string(&MessageId::Ulong(7)), "7");
        assert_eq!(id_string(&MessageId::String("m-1".into())), "m-1");
        let uuid = Uuid::from([
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7,
        ]);
        assert_eq!(
            id_string(&MessageId::Uuid(uuid)),
            "12345678-9abc-def0-0001-020304050607"
        );
        assert_eq!(
            id_string(&MessageId::Binary(Binary::from(b"abc".to_vec()))),
            "abc"
        );
        assert_eq!(
            id_string(&MessageId::Binary(Binary::from(vec![0xff, 0]))),
            "ff00"
        );
    }

    #[test]
    fn a_message_keeps_its_properties_and_body() {
        let properties = Properties::builder()
            .message_id(String::from("mid"))
            .correlation_id(MessageId::Ulong(9))
            .user_id(Binary::from(b"svc\xff".to_vec()))
            .to("/devices/d/messages/devicebound")
            .content_type("application/json")
            .content_encoding("utf-8")
            .absolute_expiry_time(Timestamp::from_milliseconds(1_700_000_000_123))
            .build();
        let app = ApplicationProperties::builder()
            .insert("iothub-ack", "full")
            .insert("n", SimpleValue::Int(-3))
            .insert("b", SimpleValue::Bool(true))
            .insert("f", SimpleValue::Double(1.5.into()))
            .insert("nan", SimpleValue::Double(f64::NAN.into()))
            .insert("bin", SimpleValue::Binary(Binary::from(vec![1, 2])))
            .build();
        let message = Message::builder()
            .properties(properties)
            .application_properties(app)
            .body(Body::<Value>::Data(
                vec![
                    Data(Binary::from(b"he".to_vec())),
                    Data(Binary::from(b"llo".to_vec())),
                ]
                .into(),
            ))
            .build();
        let m = c2d_message("d".into(), Some("m".into()), &message);
        assert_eq!(m.device_id, "d");
        assert_eq!(m.module_id.as_deref(), Some("m"));
        assert_eq!(m.message_id.as_deref(), Some("mid"));
        assert_eq!(m.correlation_id.as_deref(), Some("9"));
        assert_eq!(m.user_id.as_deref(), Some("svc\u{fffd}"));
        assert_eq!(m.to.as_deref(), Some("/devices/d/messages/devicebound"));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(m.absolute_expiry_time, Some(1_700_000_000_123));
        assert_eq!(m.body, b"hello");
        assert_eq!(m.ack(), "full");
        let p = &m.application_properties;
        assert_eq!(p["n"], json!(-3));
        assert_eq!(p["b"], json!(true));
        assert_eq!(p["f"], json!(1.5));
        assert_eq!(p["nan"], Json::Null);
        assert_eq!(p["bin"], json!("AQI="));
    }

    #[test]
    fn value_bodies_give_their_bytes() {
        let body = |v: Value| {
            let message = Message::builder().body(Body::Value(AmqpValue(v))).build();
            c2d_message("d".into(), None, &message).body
        };
        assert_eq!(body(Value::Binary(vec![1, 2, 3].into())), [1, 2, 3]);
        assert_eq!(body(Value::String("hi".into())), b"hi");
        assert_eq!(body(Value::Null), b"");
        let mut map = OrderedMap::new();
        map.insert(Value::String("k".into()), Value::Long(1));
        map.insert(Value::Int(2), Value::List(vec![Value::Bool(false)]));
        assert_eq!(body(Value::Map(map)), br#"{"2":[false],"k":1}"#);
        let empty = Message::builder().body(Body::<Value>::Empty).build();
        assert!(c2d_message("d".into(), None, &empty).body.is_empty());
    }

    #[test]
    fn text_reads_strings_and_symbols_only() {
        assert_eq!(text(&SimpleValue::String("a".into())), Some("a"));
        assert_eq!(text(&SimpleValue::Symbol("b".into())), Some("b"));
        assert_eq!(text(&SimpleValue::Int(1)), None);
    }
}
