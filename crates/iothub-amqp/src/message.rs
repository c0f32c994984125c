//! Cloud-to-device messages: the typed builder, the Python reference's property mapping, and
//! the AMQP message that goes on the wire.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Data, Message as AmqpMessage, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Symbol, Timestamp};
use iothub_auth::ids::{check_device_id, check_module_id};

use crate::error::{Error, Result};

/// The largest body the hub accepts for a cloud-to-device message: 64 KB.
pub const MAX_BODY_SIZE: usize = 64 * 1024;

/// The application property that asks the hub for delivery feedback.
pub const ACK_PROPERTY: &str = "iothub-ack";

/// Which delivery feedback the hub sends for a message (its `iothub-ack` property), read with
/// [`ServiceClient::feedback_receiver`](crate::ServiceClient::feedback_receiver).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ack {
    /// No feedback (the hub's default).
    None,
    /// Feedback when the device completes the message.
    Positive,
    /// Feedback when the message expires, exceeds its delivery count or is rejected.
    Negative,
    /// Both positive and negative feedback.
    Full,
}

impl Ack {
    /// The value of the `iothub-ack` property: `none`, `positive`, `negative` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Ack::None => "none",
            Ack::Positive => "positive",
            Ack::Negative => "negative",
            Ack::Full => "full",
        }
    }
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Ack {
    type Err = Error;

    /// Parses `none`, `positive`, `negative` or `full` (exactly; the hub is case-sensitive).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Ack::None),
            "positive" => Ok(Ack::Positive),
            "negative" => Ok(Ack::Negative),
            "full" => Ok(Ack::Full),
            other => Err(Error::invalid(
                "ack",
                format!("{other:?} is not one of none, positive, negative, full"),
            )),
        }
    }
}

/// A cloud-to-device message, validated and ready to send with
/// [`ServiceClient::send`](crate::ServiceClient::send).
///
/// Build one with [`Message::builder`], or with [`Message::from_reference_properties`] for the
/// Python SDK's `send_c2d_message` semantics. `Debug` shows the body's length, not its bytes.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use iothub_amqp::{Ack, Message};
///
/// let message = Message::builder("thermostat-1")
///     .body("set-point 21.5")
///     .ack(Ack::Full)
///     .content_type("text/plain")
///     .expiry(SystemTime::now() + Duration::from_secs(600))
///     .property("priority", "high")
///     .build()?;
/// assert_eq!(message.to(), "/devices/thermostat-1/messages/devicebound");
/// assert_eq!(message.message_id().len(), 36); // a UUID, since none was given
/// # Ok::<(), iothub_amqp::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    device_id: String,
    module_id: Option<String>,
    body: Vec<u8>,
    message_id: String,
    correlation_id: Option<String>,
    content_type: Option<String>,
    content_encoding: Option<String>,
    // Milliseconds since the Unix epoch, as the AMQP timestamp carries it.
    expiry_ms: Option<i64>,
    ack: Option<Ack>,
    properties: BTreeMap<String, String>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("to", &self.to())
            .field("message_id", &self.message_id)
            .field("correlation_id", &self.correlation_id)
            .field("content_type", &self.content_type)
            .field("content_encoding", &self.content_encoding)
            .field("expiry_ms", &self.expiry_ms)
            .field("ack", &self.ack)
            .field("properties", &self.properties)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Message {
    /// Starts a message to a device.
    pub fn builder(device_id: impl Into<String>) -> MessageBuilder {
        MessageBuilder {
            message: Message {
                device_id: device_id.into(),
                module_id: None,
                body: Vec::new(),
                message_id: String::new(),
                correlation_id: None,
                content_type: None,
                content_encoding: None,
                expiry_ms: None,
                ack: None,
                properties: BTreeMap::new(),
            },
            message_id_given: false,
            error: None,
        }
    }

    /// A message built the way the Python reference SDK's
    /// `IoTHubRegistryManager.send_c2d_message(device_id, message, properties)` builds it.
    ///
    /// From `properties`, `messageId`, `correlationId`, `contentType` and `contentEncoding`
    /// become the AMQP properties of the same name, and `expiryTimeUtc` (milliseconds since
    /// the Unix epoch, as an integer string) becomes `absolute-expiry-time`. Every other entry,
    /// `iothub-ack` included, becomes an application property verbatim. Without `messageId` the
    /// message id is a new UUID v4, as in Python.
    ///
    /// Unlike Python, the device id is validated and a body over [`MAX_BODY_SIZE`] is refused.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use iothub_amqp::{Ack, Message};
    ///
    /// let properties = BTreeMap::from([
    ///     ("messageId".to_owned(), "order-17".to_owned()),
    ///     ("iothub-ack".to_owned(), "full".to_owned()),
    ///     ("expiryTimeUtc".to_owned(), "1767225600000".to_owned()),
    ///     ("color".to_owned(), "blue".to_owned()),
    /// ]);
    /// let message = Message::from_reference_properties("dev1", "hello", &properties)?;
    /// assert_eq!(message.message_id(), "order-17");
    /// assert_eq!(message.ack(), Some(Ack::Full));
    /// assert_eq!(message.properties().get("color").map(String::as_str), Some("blue"));
    /// # Ok::<(), iothub_amqp::Error>(())
    /// ```
    pub fn from_reference_properties<I, K, V>(
        device_id: impl Into<String>,
        body: impl Into<Vec<u8>>,
        properties: I,
    ) -> Result<Message>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut builder = Message::builder(device_id).body(body);
        let mut rest = BTreeMap::new();
        let mut expiry_ms = None;
        for (key, value) in properties {
            let (key, value) = (key.into(), value.into());
            match key.as_str() {
                "messageId" => builder = builder.message_id(value),
                "correlationId" => builder = builder.correlation_id(value),
                "contentType" => builder = builder.content_type(value),
                "contentEncoding" => builder = builder.content_encoding(value),
                "expiryTimeUtc" => {
                    let ms = value.trim().parse::<i64>().map_err(|_| {
                        Error::invalid(
                            "properties",
                            format!(
                                "expiryTimeUtc must be milliseconds since the Unix epoch, \
                                 as an integer; got {value:?}"
                            ),
                        )
                    })?;
                    expiry_ms = Some(ms);
                }
                _ => {
                    rest.insert(key, value);
                }
            }
        }
        let mut message = builder.build()?;
        message.expiry_ms = expiry_ms;
        // A known `iothub-ack` value is kept as the typed ack (same wire form); anything else
        // stays a verbatim property, as Python sends it.
        if let Some(ack) = rest.get(ACK_PROPERTY).and_then(|v| v.parse::<Ack>().ok()) {
            rest.remove(ACK_PROPERTY);
            message.ack = Some(ack);
        }
        message.properties = rest;
        Ok(message)
    }

    /// The target device.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// The target module, if the message goes to a module.
    pub fn module_id(&self) -> Option<&str> {
        self.module_id.as_deref()
    }

    /// The body, sent as one AMQP Data section.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The message id: the one given, or a UUID v4 made when the message was built. Feedback
    /// records refer to it, and devices can use it to drop duplicates.
    pub fn message_id(&self) -> &str {
        &self.message_id
    }

    /// The correlation id, if any.
    pub fn correlation_id(&self) -> Option<&str> {
        self.correlation_id.as_deref()
    }

    /// The content type, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The content encoding, if any.
    pub fn content_encoding(&self) -> Option<&str> {
        self.content_encoding.as_deref()
    }

    /// When the hub drops the message if the device has not received it, if set.
    pub fn expiry(&self) -> Option<SystemTime> {
        let ms = self.expiry_ms?;
        let magnitude = Duration::from_millis(ms.unsigned_abs());
        if ms >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    /// The requested delivery feedback, if set.
    pub fn ack(&self) -> Option<Ack> {
        self.ack
    }

    /// The user properties (AMQP application properties), without `iothub-ack`.
    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    /// The `to` address the hub routes by: `/devices/{id}/messages/devicebound`, or
    /// `/devices/{id}/modules/{module}/messages/devicebound`.
    pub fn to(&self) -> String {
        match &self.module_id {
            Some(module) => format!(
                "/devices/{}/modules/{module}/messages/devicebound",
                self.device_id
            ),
            None => format!("/devices/{}/messages/devicebound", self.device_id),
        }
    }

    /// The AMQP message sent on the `/messages/devicebound` link.
    pub(crate) fn to_amqp(&self) -> AmqpMessage<Data> {
        let properties = Properties {
            message_id: Some(MessageId::String(self.message_id.clone())),
            to: Some(self.to()),
            correlation_id: self.correlation_id.clone().map(MessageId::String),
            content_type: self.content_type.clone().map(Symbol::from),
            content_encoding: self.content_encoding.clone().map(Symbol::from),
            absolute_expiry_time: self.expiry_ms.map(Timestamp::from_milliseconds),
            ..Properties::default()
        };
        let mut application = ApplicationProperties::default();
        for (key, value) in &self.properties {
            application.insert(key.clone(), SimpleValue::String(value.clone()));
        }
        if let Some(ack) = self.ack {
            application.insert(
                ACK_PROPERTY.to_owned(),
                SimpleValue::String(ack.as_str().to_owned()),
            );
        }
        AmqpMessage::builder()
            .properties(properties)
            .application_properties(application)
            .data(Binary::from(self.body.clone()))
            .build()
    }
}

/// Builds a [`Message`]; see [`Message::builder`]. Every problem is reported by
/// [`build`](Self::build).
#[derive(Debug)]
#[must_use = "call build() to get the message"]
pub struct MessageBuilder {
    message: Message,
    message_id_given: bool,
    error: Option<Error>,
}

impl MessageBuilder {
    /// Sends to a module of the device instead of the device itself.
    pub fn module(mut self, module_id: impl Into<String>) -> Self {
        self.message.module_id = Some(module_id.into());
        self
    }

    /// The body (empty by default). At most [`MAX_BODY_SIZE`] bytes.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.message.body = body.into();
        self
    }

    /// The message id; a UUID v4 string when not given. Must not be empty.
    pub fn message_id(mut self, message_id: impl Into<String>) -> Self {
        self.message.message_id = message_id.into();
        self.message_id_given = true;
        self
    }

    /// The correlation id.
    pub fn correlation_id(mut self, correlation_id: impl Into<String>) -> Self {
        self.message.correlation_id = Some(correlation_id.into());
        self
    }

    /// The content type, e.g. `application/json`.
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.message.content_type = Some(content_type.into());
        self
    }

    /// The content encoding, e.g. `utf-8`.
    pub fn content_encoding(mut self, content_encoding: impl Into<String>) -> Self {
        self.message.content_encoding = Some(content_encoding.into());
        self
    }

    /// When the hub drops the message if the device has not received it (the hub also applies
    /// its own default and maximum time to live). Sent with millisecond precision.
    pub fn expiry(mut self, at: SystemTime) -> Self {
        match at.duration_since(UNIX_EPOCH) {
            Ok(since) => match i64::try_from(since.as_millis()) {
                Ok(ms) => self.message.expiry_ms = Some(ms),
                Err(_) => self.fail(Error::invalid("expiry", "is too far in the future")),
            },
            Err(_) => self.fail(Error::invalid("expiry", "is before 1970")),
        }
        self
    }

    /// Asks for delivery feedback (the `iothub-ack` application property).
    pub fn ack(mut self, ack: Ack) -> Self {
        self.message.ack = Some(ack);
        self
    }

    /// Adds a user property (an AMQP application property with a string value). Setting a key
    /// again replaces its value. The key must not be empty, and `iothub-ack` is set with
    /// [`ack`](Self::ack) instead.
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        if key.is_empty() {
            self.fail(Error::invalid("property", "the key must not be empty"));
        } else if key == ACK_PROPERTY {
            self.fail(Error::invalid(
                "property",
                "set `iothub-ack` with MessageBuilder::ack",
            ));
        } else {
            self.message.properties.insert(key, value.into());
        }
        self
    }

    /// Validates and returns the message.
    ///
    /// # Errors
    ///
    /// - [`Error::InvalidArgument`] for a device or module id that the hub would refuse (1–128
    ///   characters of `A-Za-z0-9-:.+%_#*?!(),=@;$'`, and not `.` or `..`; the rules of
    ///   [`iothub_auth::ids`]), an empty message id, or a bad property or expiry;
    /// - [`Error::BodyTooLarge`] for a body over [`MAX_BODY_SIZE`].
    pub fn build(self) -> Result<Message> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let mut message = self.message;
        // The SDK's one set of id rules: an id goes into the `to` address verbatim, as the
        // Python reference sends it, so a `/` (or a lone `.` or `..`) must never get through.
        check_device_id(&message.device_id)
            .map_err(|error| Error::invalid("device_id", error.to_string()))?;
        if let Some(module) = &message.module_id {
            check_module_id(module)
                .map_err(|error| Error::invalid("module_id", error.to_string()))?;
        }
        if message.body.len() > MAX_BODY_SIZE {
            return Err(Error::BodyTooLarge {
                size: message.body.len(),
                max: MAX_BODY_SIZE,
            });
        }
        if !self.message_id_given {
            message.message_id = uuid::Uuid::new_v4().to_string();
        } else if message.message_id.is_empty() {
            return Err(Error::invalid("message_id", "must not be empty"));
        }
        Ok(message)
    }

    // Keeps the first problem; `build` reports it.
    fn fail(&mut self, error: Error) {
        self.error.get_or_insert(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::Body;

    fn app_props(message: &AmqpMessage<Data>) -> BTreeMap<String, SimpleValue> {
        message
            .application_properties
            .as_ref()
            .map(|props| {
                props
                    .0
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn string(value: &str) -> SimpleValue {
        SimpleValue::String(value.to_owned())
    }

    #[test]
    fn a_minimal_message_gets_a_uuid_and_the_device_address() {
        let message = Message::builder("dev1").body("hi").build().unwrap();
        let id = uuid::Uuid::parse_str(message.message_id()).unwrap();
        assert_eq!(id.get_version_num(), 4);
        assert_eq!(message.to(), "/devices/dev1/messages/devicebound");

        let amqp = message.to_amqp();
        let props = amqp.properties.as_ref().unwrap();
        assert_eq!(
            props.message_id,
            Some(MessageId::String(message.message_id().to_owned()))
        );
        assert_eq!(
            props.to.as_deref(),
            Some("/devices/dev1/messages/devicebound")
        );
        assert_eq!(props.correlation_id, None);
        assert_eq!(props.absolute_expiry_time, None);
        assert_eq!(props.content_type, None);
        assert!(app_props(&amqp).is_empty());
        assert_eq!(amqp.body, Data(Binary::from(b"hi".to_vec())));
        // Two builds never share an id.
        let other = Message::builder("dev1").build().unwrap();
        assert_ne!(other.message_id(), message.message_id());
    }

    #[test]
    fn every_field_reaches_the_amqp_message() {
        let expiry = UNIX_EPOCH + Duration::from_millis(1_767_225_600_123);
        let message = Message::builder("dev-1")
            .module("mod.A")
            .body(vec![0u8, 1, 2])
            .message_id("m-1")
            .correlation_id("c-1")
            .content_type("application/json")
            .content_encoding("utf-8")
            .expiry(expiry)
            .ack(Ack::Negative)
            .property("b", "2")
            .property("a", "1")
            .property("a", "3")
            .build()
            .unwrap();
        assert_eq!(message.expiry(), Some(expiry));
        assert_eq!(
            message.to(),
            "/devices/dev-1/modules/mod.A/messages/devicebound"
        );

        let amqp = message.to_amqp();
        let props = amqp.properties.clone().unwrap();
        let expected = Properties {
            message_id: Some(MessageId::String("m-1".into())),
            to: Some("/devices/dev-1/modules/mod.A/messages/devicebound".into()),
            correlation_id: Some(MessageId::String("c-1".into())),
            content_type: Some(Symbol::from("application/json")),
            content_encoding: Some(Symbol::from("utf-8")),
            absolute_expiry_time: Some(Timestamp::from_milliseconds(1_767_225_600_123)),
            ..Properties::default()
        };
        assert_eq!(props, expected);
        assert_eq!(
            app_props(&amqp),
            BTreeMap::from([
                ("a".to_owned(), string("3")),
                ("b".to_owned(), string("2")),
                ("iothub-ack".to_owned(), string("negative")),
            ])
        );
        assert_eq!(amqp.body, Data(Binary::from(vec![0u8, 1, 2])));
        assert!(amqp.header.is_none() && amqp.message_annotations.is_none());
    }

    #[test]
    fn the_body_is_one_data_section_even_when_empty() {
        let amqp = Message::builder("d").build().unwrap().to_amqp();
        // Encode and decode as a generic body to see the sections on the wire.
        let bytes = serde_amqp::to_vec(
            &fe2o3_amqp::types::messaging::message::__private::Serializable(amqp),
        )
        .unwrap();
        let decoded: fe2o3_amqp::types::messaging::message::__private::Deserializable<
            AmqpMessage<Body<serde_amqp::Value>>,
        > = serde_amqp::from_slice(&bytes).unwrap();
        match decoded.0.body {
            Body::Data(batch) => {
                assert_eq!(batch.len(), 1);
                assert!(batch[0].0.is_empty());
            }
            other => panic!("expected one Data section, got {other:?}"),
        }
    }

    #[test]
    fn every_ack_value_is_the_hub_string() {
        for (ack, text) in [
            (Ack::None, "none"),
            (Ack::Positive, "positive"),
            (Ack::Negative, "negative"),
            (Ack::Full, "full"),
        ] {
            assert_eq!(ack.as_str(), text);
            assert_eq!(text.parse::<Ack>().unwrap(), ack);
            let amqp = Message::builder("d").ack(ack).build().unwrap().to_amqp();
            assert_eq!(app_props(&amqp)["iothub-ack"], string(text));
        }
        assert!("Full".parse::<Ack>().is_err());
    }

    #[test]
    fn invalid_input_is_refused_before_sending() {
        let invalid = |result: Result<Message>, want: &str| match result {
            Err(Error::InvalidArgument { argument, .. }) => assert_eq!(argument, want),
            other => panic!("expected InvalidArgument({want}), got {other:?}"),
        };
        invalid(Message::builder("").build(), "device_id");
        invalid(Message::builder("a/b").build(), "device_id");
        invalid(Message::builder("d").module("m/x").build(), "module_id");
        invalid(Message::builder("d").module("").build(), "module_id");
        invalid(Message::builder("d").message_id("").build(), "message_id");
        invalid(Message::builder("d").property("", "v").build(), "property");
        invalid(
            Message::builder("d").property("iothub-ack", "full").build(),
            "property",
        );
        invalid(
            Message::builder("d")
                .expiry(UNIX_EPOCH - Duration::from_secs(1))
                .build(),
            "expiry",
        );
        // The first problem wins.
        invalid(
            Message::builder("")
                .property("", "v")
                .expiry(UNIX_EPOCH - Duration::from_secs(1))
                .build(),
            "property",
        );
    }

    fn id_reason(id: &str) -> String {
        match Message::builder(id).build() {
            Err(Error::InvalidArgument { argument, reason }) => {
                assert_eq!(argument, "device_id");
                reason
            }
            other => panic!("{id:?}: expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn allowed_ids_pass() {
        for id in [
            "sensor-1",
            "-:.+%_#*?!(),=@;$'",
            "$edgeHub",
            &"a".repeat(128),
            "ABCxyz019",
        ] {
            Message::builder(id)
                .build()
                .unwrap_or_else(|e| panic!("{id:?}: {e}"));
        }
    }

    #[test]
    fn bad_ids_say_why() {
        assert_eq!(id_reason(""), "must not be empty");
        assert!(id_reason("a/b").contains("'/' (U+002F) at index 1"));
        assert!(id_reason("dev 1").contains("' '"));
        assert!(id_reason("hüb").contains("U+00FC"));
        assert_eq!(
            id_reason(&"a".repeat(129)),
            "is 129 characters long; at most 128 are allowed"
        );
    }

    #[test]
    fn dot_segment_ids_are_refused_before_sending() {
        for id in [".", ".."] {
            let error = Message::builder(id).build().unwrap_err();
            assert!(
                matches!(&error, Error::InvalidArgument { argument: "device_id", reason }
                    if reason.contains("URL normalisation")),
                "{id:?}: {error:?}"
            );
            let error = Message::builder("d").module(id).build().unwrap_err();
            assert!(
                matches!(
                    &error,
                    Error::InvalidArgument {
                        argument: "module_id",
                        ..
                    }
                ),
                "{id:?}: {error:?}"
            );
        }
        // Dots inside an id are fine.
        Message::builder("...").module("a..b").build().unwrap();
    }

    #[test]
    fn bodies_over_64_kb_are_refused() {
        Message::builder("d")
            .body(vec![0; MAX_BODY_SIZE])
            .build()
            .unwrap();
        match Message::builder("d")
            .body(vec![0; MAX_BODY_SIZE + 1])
            .build()
        {
            Err(Error::BodyTooLarge { size, max }) => {
                assert_eq!((size, max), (65_537, 65_536));
            }
            other => panic!("{other:?}"),
        }
        let properties: [(&str, &str); 0] = [];
        assert!(matches!(
            Message::from_reference_properties("d", vec![1; 70_000], properties),
            Err(Error::BodyTooLarge { .. })
        ));
    }

    #[test]
    fn the_reference_mapping_matches_python() {
        let properties = BTreeMap::from([
            ("messageId", "mid"),
            ("correlationId", "cid"),
            ("contentType", "application/json"),
            ("contentEncoding", "utf-8"),
            ("expiryTimeUtc", "1700000000123"),
            ("iothub-ack", "positive"),
            ("custom", "x"),
            ("MessageId", "not-the-id"),
            ("to", "/devices/other/messages/devicebound"),
        ]);
        let message =
            Message::from_reference_properties("dev1", "body", properties.clone()).unwrap();
        let amqp = message.to_amqp();
        let expected = Properties {
            message_id: Some(MessageId::String("mid".into())),
            to: Some("/devices/dev1/messages/devicebound".into()),
            correlation_id: Some(MessageId::String("cid".into())),
            content_type: Some(Symbol::from("application/json")),
            content_encoding: Some(Symbol::from("utf-8")),
            absolute_expiry_time: Some(Timestamp::from_milliseconds(1_700_000_000_123)),
            ..Properties::default()
        };
        assert_eq!(amqp.properties.clone().unwrap(), expected);
        // Everything else verbatim, keys case-sensitive, `to` not an override.
        assert_eq!(
            app_props(&amqp),
            BTreeMap::from([
                ("MessageId".to_owned(), string("not-the-id")),
                ("custom".to_owned(), string("x")),
                ("iothub-ack".to_owned(), string("positive")),
                (
                    "to".to_owned(),
                    string("/devices/other/messages/devicebound")
                ),
            ])
        );
        assert_eq!(amqp.body, Data(Binary::from(b"body".to_vec())));
        assert_eq!(message.ack(), Some(Ack::Positive));
    }

    #[test]
    fn the_reference_mapping_keeps_unknown_ack_values_and_defaults_the_id() {
        let message = Message::from_reference_properties(
            "dev1",
            "",
            [("iothub-ack".to_owned(), "FULL".to_owned())],
        )
        .unwrap();
        assert_eq!(message.ack(), None);
        assert_eq!(app_props(&message.to_amqp())["iothub-ack"], string("FULL"));
        uuid::Uuid::parse_str(message.message_id()).unwrap();
    }

    #[test]
    fn the_reference_mapping_needs_integer_milliseconds() {
        for bad in ["soon", "2025-01-01T00:00:00Z", "1.5", ""] {
            match Message::from_reference_properties("d", "", [("expiryTimeUtc", bad)]) {
                Err(Error::InvalidArgument { argument, reason }) => {
                    assert_eq!(argument, "properties");
                    assert!(reason.contains("expiryTimeUtc"), "{reason}");
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        let message =
            Message::from_reference_properties("d", "", [("expiryTimeUtc", " 42 ")]).unwrap();
        assert_eq!(
            message.expiry(),
            Some(UNIX_EPOCH + Duration::from_millis(42))
        );
        assert!(matches!(
            Message::from_reference_properties("a/b", "", [("k", "v")]),
            Err(Error::InvalidArgument {
                argument: "device_id",
                ..
            })
        ));
    }

    #[test]
    fn debug_shows_the_body_length_only() {
        let message = Message::builder("d")
            .body("secret-ish payload")
            .build()
            .unwrap();
        let text = format!("{message:?}");
        assert!(text.contains("body_len: 18"), "{text}");
        assert!(!text.contains("payload"), "{text}");
    }
}
