//! `ReceivedEvent`: an event as the rest of hubcap sees it, owned and free of AMQP types.
//!
//! Decoding is the per-event hot path. fe2o3 has already parsed the message into sections;
//! here every string and byte buffer is moved out of them, never copied, and the
//! service annotations hubcap needs are read by key without rebuilding the maps.

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{Body, Message, MessageId, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};

/// A property or annotation value, in the shapes Event Hubs events carry.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyValue {
    Null,
    Bool(bool),
    /// Every AMQP integer type (byte to long, unsigned to ulong when it fits).
    Long(i64),
    /// An unsigned long above `i64::MAX`.
    UnsignedLong(u64),
    Double(f64),
    /// AMQP string and symbol.
    String(String),
    Bytes(Vec<u8>),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
    /// Anything else (lists, maps, decimals, chars), in a readable debug form.
    Other(String),
}

/// The event body as the publisher sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// One or more `data` sections (the normal case is exactly one).
    Data(Vec<Vec<u8>>),
    /// An `amqp-value` section.
    Value(PropertyValue),
    /// One or more `amqp-sequence` sections.
    Sequence(Vec<Vec<PropertyValue>>),
    /// No body section.
    Empty,
}

impl EventBody {
    /// The body as bytes, the way Capture stores it: data sections concatenated, a string
    /// value's UTF-8, a binary value's bytes; `None` for no body and other values.
    pub fn bytes(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        match self {
            EventBody::Data(sections) if sections.len() == 1 => Some(Cow::Borrowed(&sections[0])),
            EventBody::Data(sections) => Some(Cow::Owned(sections.concat())),
            EventBody::Value(PropertyValue::String(s)) => Some(Cow::Borrowed(s.as_bytes())),
            EventBody::Value(PropertyValue::Bytes(b)) => Some(Cow::Borrowed(b)),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            EventBody::Data(sections) => sections.iter().map(Vec::len).sum(),
            EventBody::Value(PropertyValue::String(s)) => s.len(),
            EventBody::Value(PropertyValue::Bytes(b)) => b.len(),
            _ => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One event received from a partition.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedEvent {
    pub sequence_number: i64,
    /// Opaque position string; with geo-replication it may not be numeric.
    pub offset: String,
    /// Milliseconds since the Unix epoch at which the service accepted the event.
    pub enqueued_time_ms: i64,
    pub partition_key: Option<String>,
    /// Application properties, in the order sent.
    pub properties: Vec<(String, PropertyValue)>,
    /// Message annotations other than the four above, plus the AMQP message properties that are
    /// set (`message-id`, `correlation-id`, `content-type`, ...), as Capture's `SystemProperties`.
    pub system_properties: Vec<(String, PropertyValue)>,
    pub body: EventBody,
}

impl ReceivedEvent {
    /// Bytes this event adds to an archive window, for size-based rollover and metrics.
    pub fn approximate_size(&self) -> usize {
        let props: usize = self
            .properties
            .iter()
            .chain(&self.system_properties)
            .map(|(k, _)| k.len() + 8)
            .sum();
        self.body.len() + self.offset.len() + props + 32
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("event has no {annotation} annotation of the expected type")]
    MissingAnnotation { annotation: &'static str },
}

const SEQUENCE_NUMBER: &str = "x-opt-sequence-number";
const OFFSET: &str = "x-opt-offset";
const ENQUEUED_TIME: &str = "x-opt-enqueued-time";
const PARTITION_KEY: &str = "x-opt-partition-key";

/// Turns a received message into a [`ReceivedEvent`], moving its contents.
pub fn decode(message: Message<Body<Value>>) -> Result<ReceivedEvent, DecodeError> {
    let mut sequence_number = None;
    let mut offset = None;
    let mut enqueued_time_ms = None;
    let mut partition_key = None;
    let mut system_properties = Vec::new();
    if let Some(annotations) = message.message_annotations {
        for (key, value) in annotations.0 {
            let name = match key {
                OwnedKey::Symbol(symbol) => symbol.0,
                OwnedKey::Ulong(code) => code.to_string(),
            };
            match (name.as_str(), value) {
                (SEQUENCE_NUMBER, Value::Long(n)) => sequence_number = Some(n),
                (OFFSET, Value::String(s)) => offset = Some(s),
                // Older services sent the offset as a number.
                (OFFSET, Value::Long(n)) => offset = Some(n.to_string()),
                (ENQUEUED_TIME, Value::Timestamp(t)) => enqueued_time_ms = Some(t.milliseconds()),
                (PARTITION_KEY, Value::String(s)) => partition_key = Some(s),
                (_, value) => system_properties.push((name, property_value(value))),
            }
        }
    }
    if let Some(properties) = message.properties {
        push_message_properties(properties, &mut system_properties);
    }
    let properties = message
        .application_properties
        .map(|props| {
            props
                .0
                .into_iter()
                .map(|(k, v)| (k, simple_value(v)))
                .collect()
        })
        .unwrap_or_default();
    let body = match message.body {
        Body::Data(sections) => {
            EventBody::Data(sections.into_iter().map(|d| d.0.into_vec()).collect())
        }
        Body::Value(value) => EventBody::Value(property_value(value.0)),
        Body::Sequence(sequences) => EventBody::Sequence(
            sequences
                .into_iter()
                .map(|s| s.0.into_iter().map(property_value).collect())
                .collect(),
        ),
        Body::Empty => EventBody::Empty,
    };
    Ok(ReceivedEvent {
        sequence_number: sequence_number.ok_or(DecodeError::MissingAnnotation {
            annotation: SEQUENCE_NUMBER,
        })?,
        offset: offset.ok_or(DecodeError::MissingAnnotation { annotation: OFFSET })?,
        enqueued_time_ms: enqueued_time_ms.ok_or(DecodeError::MissingAnnotation {
            annotation: ENQUEUED_TIME,
        })?,
        partition_key,
        properties,
        system_properties,
        body,
    })
}

fn push_message_properties(p: Properties, out: &mut Vec<(String, PropertyValue)>) {
    let mut push = |name: &str, value: PropertyValue| out.push((name.to_owned(), value));
    if let Some(id) = p.message_id {
        push("message-id", message_id(id));
    }
    if let Some(user_id) = p.user_id {
        push("user-id", PropertyValue::Bytes(user_id.into_vec()));
    }
    if let Some(to) = p.to {
        push("to", PropertyValue::String(to));
    }
    if let Some(subject) = p.subject {
        push("subject", PropertyValue::String(subject));
    }
    if let Some(reply_to) = p.reply_to {
        push("reply-to", PropertyValue::String(reply_to));
    }
    if let Some(id) = p.correlation_id {
        push("correlation-id", message_id(id));
    }
    if let Some(content_type) = p.content_type {
        push("content-type", PropertyValue::String(content_type.0));
    }
    if let Some(content_encoding) = p.content_encoding {
        push(
            "content-encoding",
            PropertyValue::String(content_encoding.0),
        );
    }
    if let Some(t) = p.absolute_expiry_time {
        push(
            "absolute-expiry-time",
            PropertyValue::Timestamp(t.milliseconds()),
        );
    }
    if let Some(t) = p.creation_time {
        push("creation-time", PropertyValue::Timestamp(t.milliseconds()));
    }
    if let Some(group_id) = p.group_id {
        push("group-id", PropertyValue::String(group_id));
    }
    if let Some(n) = p.group_sequence {
        push("group-sequence", PropertyValue::Long(i64::from(n)));
    }
    if let Some(id) = p.reply_to_group_id {
        push("reply-to-group-id", PropertyValue::String(id));
    }
}

fn message_id(id: MessageId) -> PropertyValue {
    match id {
        MessageId::String(s) => PropertyValue::String(s),
        MessageId::Ulong(n) => unsigned(n),
        MessageId::Uuid(u) => PropertyValue::Uuid(u.into_inner()),
        MessageId::Binary(b) => PropertyValue::Bytes(b.into_vec()),
    }
}

fn unsigned(n: u64) -> PropertyValue {
    i64::try_from(n).map_or(PropertyValue::UnsignedLong(n), PropertyValue::Long)
}

fn property_value(value: Value) -> PropertyValue {
    match value {
        Value::Null => PropertyValue::Null,
        Value::Bool(b) => PropertyValue::Bool(b),
        Value::Ubyte(n) => PropertyValue::Long(i64::from(n)),
        Value::Ushort(n) => PropertyValue::Long(i64::from(n)),
        Value::Uint(n) => PropertyValue::Long(i64::from(n)),
        Value::Ulong(n) => unsigned(n),
        Value::Byte(n) => PropertyValue::Long(i64::from(n)),
        Value::Short(n) => PropertyValue::Long(i64::from(n)),
        Value::Int(n) => PropertyValue::Long(i64::from(n)),
        Value::Long(n) => PropertyValue::Long(n),
        Value::Float(f) => PropertyValue::Double(f64::from(f.into_inner())),
        Value::Double(f) => PropertyValue::Double(f.into_inner()),
        Value::Timestamp(t) => PropertyValue::Timestamp(t.milliseconds()),
        Value::Uuid(u) => PropertyValue::Uuid(u.into_inner()),
        Value::Binary(b) => PropertyValue::Bytes(b.into_vec()),
        Value::String(s) => PropertyValue::String(s),
        Value::Symbol(s) => PropertyValue::String(s.0),
        other => PropertyValue::Other(format!("{other:?}")),
    }
}

fn simple_value(value: SimpleValue) -> PropertyValue {
    property_value(Value::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::messaging::{
        AmqpValue, ApplicationProperties, Data, MessageAnnotations,
    };
    use fe2o3_amqp::types::primitives::{Binary, OrderedMap, Symbol, Timestamp};

    fn annotated(body: Body<Value>) -> Message<Body<Value>> {
        let mut annotations = OrderedMap::new();
        let key = |s: &str| OwnedKey::Symbol(Symbol::from(s));
        annotations.insert(key(SEQUENCE_NUMBER), Value::Long(42));
        annotations.insert(key(OFFSET), Value::String("4096".into()));
        annotations.insert(
            key(ENQUEUED_TIME),
            Value::Timestamp(Timestamp::from_milliseconds(1_700_000_000_123)),
        );
        annotations.insert(key(PARTITION_KEY), Value::String("device-1".into()));
        annotations.insert(key("x-opt-publisher"), Value::String("pub".into()));
        let mut props = OrderedMap::new();
        props.insert("temp".to_owned(), SimpleValue::Double(21.5.into()));
        props.insert("count".to_owned(), SimpleValue::Int(7));
        Message {
            header: None,
            delivery_annotations: None,
            message_annotations: Some(MessageAnnotations(annotations)),
            properties: Some(Properties {
                message_id: Some(MessageId::String("m-1".into())),
                content_type: Some(Symbol::from("application/json")),
                ..Default::default()
            }),
            application_properties: Some(ApplicationProperties(props)),
            body,
            footer: None,
        }
    }

    #[test]
    fn decodes_service_annotations_properties_and_data_body() {
        let body = Body::Data(vec![Data(Binary::from(b"hello".to_vec()))].into());
        let event = decode(annotated(body)).unwrap();
        assert_eq!(event.sequence_number, 42);
        assert_eq!(event.offset, "4096");
        assert_eq!(event.enqueued_time_ms, 1_700_000_000_123);
        assert_eq!(event.partition_key.as_deref(), Some("device-1"));
        assert_eq!(event.body.bytes().unwrap().as_ref(), b"hello");
        assert_eq!(
            event.properties,
            vec![
                ("temp".to_owned(), PropertyValue::Double(21.5)),
                ("count".to_owned(), PropertyValue::Long(7)),
            ]
        );
        assert!(event.system_properties.contains(&(
            "x-opt-publisher".to_owned(),
            PropertyValue::String("pub".into())
        )));
        assert!(event
            .system_properties
            .contains(&("message-id".to_owned(), PropertyValue::String("m-1".into()))));
        assert!(event.system_properties.contains(&(
            "content-type".to_owned(),
            PropertyValue::String("application/json".into())
        )));
    }

    #[test]
    fn multi_section_value_sequence_and_empty_bodies() {
        let two = Body::Data(
            vec![
                Data(Binary::from(b"ab".to_vec())),
                Data(Binary::from(b"cd".to_vec())),
            ]
            .into(),
        );
        assert_eq!(
            decode(annotated(two))
                .unwrap()
                .body
                .bytes()
                .unwrap()
                .as_ref(),
            b"abcd"
        );
        let value = Body::Value(AmqpValue(Value::String("text".into())));
        assert_eq!(
            decode(annotated(value))
                .unwrap()
                .body
                .bytes()
                .unwrap()
                .as_ref(),
            b"text"
        );
        let empty = decode(annotated(Body::Empty)).unwrap();
        assert_eq!(empty.body, EventBody::Empty);
        assert!(empty.body.bytes().is_none());
    }

    #[test]
    fn a_message_without_service_annotations_is_an_error_not_a_panic() {
        let message = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: None,
            application_properties: None,
            body: Body::<Value>::Empty,
            footer: None,
        };
        assert_eq!(
            decode(message).unwrap_err(),
            DecodeError::MissingAnnotation {
                annotation: SEQUENCE_NUMBER
            }
        );
    }
}
