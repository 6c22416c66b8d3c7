//! Event messages as the emulator stores and serves them.
//!
//! The service stores each published message as it arrived and adds its own message annotations
//! (`x-opt-sequence-number` long, `x-opt-offset` string, `x-opt-enqueued-time` timestamp,
//! `x-opt-partition-key` string). The emulator does the same once, at append time, so serving an
//! event is a reference-counted clone and one serialization.

use std::sync::Arc;

use fe2o3_amqp::Sendable;
use fe2o3_amqp_types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp_types::messaging::{
    annotations::OwnedKey, Body, Data, DeliveryAnnotations, Message, MessageAnnotations,
};
use fe2o3_amqp_types::primitives::{Binary, Symbol, Timestamp, Value};
use serde_amqp::primitives::OrderedMap;

/// A decoded AMQP message with any body kind.
pub type AmqpMessage = Message<Body<Value>>;

/// Message format of the Microsoft batch envelope: each data section holds one encoded message.
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

pub const SEQUENCE_NUMBER_ANNOTATION: &str = "x-opt-sequence-number";
pub const OFFSET_ANNOTATION: &str = "x-opt-offset";
pub const ENQUEUED_TIME_ANNOTATION: &str = "x-opt-enqueued-time";
pub const PARTITION_KEY_ANNOTATION: &str = "x-opt-partition-key";

/// One event in a partition, annotated and ready to serve.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Position in the partition, assigned at append, consecutive from 0.
    pub sequence_number: i64,
    /// Byte position of the event in the partition, as the service's numeric offsets.
    pub offset: u64,
    /// Milliseconds since the Unix epoch at which the emulator appended the event.
    pub enqueued_time_ms: i64,
    /// Serialized size of the stamped message; the next event's offset is `offset + encoded_len`.
    pub encoded_len: u64,
    /// The message with the service annotations, shared by every consumer that reads it.
    pub sendable: Arc<Sendable<Body<Value>>>,
}

/// Where an event sits and when it arrived; written into its annotations.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub sequence_number: i64,
    pub offset: u64,
    pub enqueued_time_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("cannot decode message: {0}")]
    Decode(serde_amqp::Error),
    #[error("cannot encode message: {0}")]
    Encode(serde_amqp::Error),
    #[error("batch message section {index} is not a data section holding a message")]
    BadBatch { index: usize },
}

/// Splits a published transfer into the events it carries: a batch envelope yields one message
/// per data section, anything else is one event. The envelope's partition key applies to every
/// inner message that has none of its own.
pub fn unpack_published(
    message_format: u32,
    message: AmqpMessage,
) -> Result<(Vec<AmqpMessage>, Option<String>), MessageError> {
    let envelope_key = partition_key_of(&message);
    if message_format != BATCH_MESSAGE_FORMAT {
        return Ok((vec![message], envelope_key));
    }
    let sections = match message.body {
        Body::Data(sections) => sections,
        Body::Empty => return Ok((Vec::new(), envelope_key)),
        _ => return Err(MessageError::BadBatch { index: 0 }),
    };
    let mut events = Vec::with_capacity(sections.len());
    for (index, Data(bytes)) in sections.into_iter().enumerate() {
        let inner = decode_message(&bytes).map_err(|_| MessageError::BadBatch { index })?;
        events.push(inner);
    }
    Ok((events, envelope_key))
}

pub fn decode_message(bytes: &[u8]) -> Result<AmqpMessage, MessageError> {
    serde_amqp::from_slice::<Deserializable<AmqpMessage>>(bytes)
        .map(|decoded| decoded.0)
        .map_err(MessageError::Decode)
}

pub fn partition_key_of(message: &AmqpMessage) -> Option<String> {
    let annotations = message.message_annotations.as_ref()?;
    match annotations
        .0
        .get(&OwnedKey::Symbol(Symbol::from(PARTITION_KEY_ANNOTATION)))
    {
        Some(Value::String(key)) => Some(key.clone()),
        Some(Value::Symbol(key)) => Some(key.0.clone()),
        _ => None,
    }
}

/// Adds the service annotations to a published message and makes it servable.
pub fn stamp(
    mut message: AmqpMessage,
    stamp: Stamp,
    partition_key: Option<&str>,
) -> Result<StoredEvent, MessageError> {
    // Delivery annotations belong to one hop; the service never stores the publisher's.
    message.delivery_annotations = None;
    let annotations = &mut message
        .message_annotations
        .get_or_insert_with(|| MessageAnnotations(OrderedMap::new()))
        .0;
    annotations.insert(
        symbol_key(SEQUENCE_NUMBER_ANNOTATION),
        Value::Long(stamp.sequence_number),
    );
    annotations.insert(
        symbol_key(OFFSET_ANNOTATION),
        Value::String(stamp.offset.to_string()),
    );
    annotations.insert(
        symbol_key(ENQUEUED_TIME_ANNOTATION),
        Value::Timestamp(Timestamp::from_milliseconds(stamp.enqueued_time_ms)),
    );
    if let Some(key) = partition_key {
        let key_annotation = symbol_key(PARTITION_KEY_ANNOTATION);
        if !annotations.contains_key(&key_annotation) {
            annotations.insert(key_annotation, Value::String(key.to_owned()));
        }
    }
    let sendable = Sendable::builder().message(message).settled(true).build();
    let encoded_len = serde_amqp::serialized_size(&Serializable(&sendable.message))
        .map_err(MessageError::Encode)? as u64;
    Ok(StoredEvent {
        sequence_number: stamp.sequence_number,
        offset: stamp.offset,
        enqueued_time_ms: stamp.enqueued_time_ms,
        encoded_len,
        sendable: Arc::new(sendable),
    })
}

/// A synthetic event of `size` body bytes, for preloading partitions without AMQP.
pub fn synthetic_event(index: u64, size: usize) -> AmqpMessage {
    let mut body = vec![0u8; size];
    // Vary the bytes so compressing sinks see realistic rather than all-zero data.
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for byte in body.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = b'a' + (state % 26) as u8;
    }
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body: Body::Data(vec![Data(Binary::from(body))].into()),
        footer: None,
    }
}

/// The runtime-metric delivery annotations a receiver asks for with
/// `com.microsoft:enable-receiver-runtime-metric`.
pub fn runtime_metric_annotations(
    last_sequence_number: i64,
    last_offset: &str,
    last_enqueued_time_ms: i64,
    now_ms: i64,
) -> DeliveryAnnotations {
    let mut map = OrderedMap::new();
    map.insert(
        symbol_key("last_enqueued_sequence_number"),
        Value::Long(last_sequence_number),
    );
    map.insert(
        symbol_key("last_enqueued_offset"),
        Value::String(last_offset.to_owned()),
    );
    map.insert(
        symbol_key("last_enqueued_time_utc"),
        Value::Timestamp(Timestamp::from_milliseconds(last_enqueued_time_ms)),
    );
    map.insert(
        symbol_key("runtime_info_retrieval_time_utc"),
        Value::Timestamp(Timestamp::from_milliseconds(now_ms)),
    );
    DeliveryAnnotations(map)
}

fn symbol_key(name: &str) -> OwnedKey {
    OwnedKey::Symbol(Symbol::from(name))
}
