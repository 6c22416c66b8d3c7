//! What links deliver and how they fail, and the messages tests publish.

use std::time::Duration;

use fe2o3_amqp::link::{DetachError, LinkStateError, RecvError, SendError};
use fe2o3_amqp::types::definitions;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{Body, Data, Message, MessageAnnotations, Outcome};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, Symbol, Value};
use fe2o3_amqp::{Delivery, Receiver, Sendable, Sender};

use super::*;

/// An AMQP error a link was detached or refused with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError {
    pub condition: String,
    pub description: String,
}

impl LinkError {
    fn from_amqp(error: &definitions::Error) -> Self {
        // The condition is a symbol on the wire whichever enum variant fe2o3 decoded it into.
        let encoded = serde_amqp::to_vec(&error.condition).expect("a condition encodes");
        let condition: Symbol = serde_amqp::from_slice(&encoded).expect("a condition is a symbol");
        Self {
            condition: condition.0,
            description: error.description.clone().unwrap_or_default(),
        }
    }
}

fn link_state_error(error: &LinkStateError) -> Option<LinkError> {
    match error {
        LinkStateError::RemoteClosedWithError(e) | LinkStateError::RemoteDetachedWithError(e) => {
            Some(LinkError::from_amqp(e))
        }
        _ => None,
    }
}

/// The AMQP error carried by a receive failure, if the peer sent one.
pub fn recv_link_error(error: &RecvError) -> Option<LinkError> {
    match error {
        RecvError::LinkStateError(state) => link_state_error(state),
        _ => None,
    }
}

/// The AMQP error carried by a send failure, if the peer sent one.
pub fn send_link_error(error: &SendError) -> Option<LinkError> {
    match error {
        SendError::LinkStateError(state) => link_state_error(state),
        SendError::Detached(detach) => detach_link_error(detach),
        _ => None,
    }
}

pub fn detach_link_error(error: &DetachError) -> Option<LinkError> {
    match error {
        DetachError::RemoteClosedWithError(e) | DetachError::RemoteDetachedWithError(e) => {
            Some(LinkError::from_amqp(e))
        }
        _ => None,
    }
}

/// A received event with its service annotations, each checked for its exact AMQP type.
#[derive(Debug)]
pub struct Event {
    pub sequence_number: i64,
    pub offset: String,
    pub enqueued_time_ms: i64,
    pub partition_key: Option<String>,
    pub message: Message<Body<Value>>,
}

impl Event {
    pub fn from_message(message: Message<Body<Value>>) -> Self {
        let annotations = message
            .message_annotations
            .as_ref()
            .expect("an event has message annotations");
        let get = |name: &str| annotations.0.get(&OwnedKey::Symbol(Symbol::from(name)));
        let sequence_number = match get("x-opt-sequence-number") {
            Some(Value::Long(n)) => *n,
            other => panic!("x-opt-sequence-number must be a long, got {other:?}"),
        };
        let offset = match get("x-opt-offset") {
            Some(Value::String(s)) => s.clone(),
            other => panic!("x-opt-offset must be a string, got {other:?}"),
        };
        let enqueued_time_ms = match get("x-opt-enqueued-time") {
            Some(Value::Timestamp(t)) => t.milliseconds(),
            other => panic!("x-opt-enqueued-time must be a timestamp, got {other:?}"),
        };
        let partition_key = match get("x-opt-partition-key") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            other => panic!("x-opt-partition-key must be a string, got {other:?}"),
        };
        Self {
            sequence_number,
            offset,
            enqueued_time_ms,
            partition_key,
            message,
        }
    }

    /// The body's data sections joined; empty for other body kinds.
    pub fn data(&self) -> Vec<u8> {
        match &self.message.body {
            Body::Data(sections) => sections.iter().flat_map(|d| d.0.to_vec()).collect(),
            _ => Vec::new(),
        }
    }
}

/// The next event on `receiver`; fails the test on a link error or after [`STEP`].
pub async fn next_event(receiver: &mut Receiver) -> Event {
    let delivery: Delivery<Body<Value>> = within("receive an event", STEP, receiver.recv())
        .await
        .unwrap_or_else(|e| panic!("receive failed: {e:?}"));
    Event::from_message(delivery.into_message())
}

pub async fn next_events(receiver: &mut Receiver, count: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(count);
    for _ in 0..count {
        events.push(next_event(receiver).await);
    }
    events
}

/// Asserts that no event (and no error) arrives within `window`.
pub async fn assert_no_event_within(receiver: &mut Receiver, window: Duration) {
    if let Ok(result) = tokio::time::timeout(window, receiver.recv::<Body<Value>>()).await {
        match result {
            Ok(delivery) => panic!(
                "expected no event within {window:?}, got {:?}",
                Event::from_message(delivery.into_message()).sequence_number
            ),
            Err(e) => panic!("expected no event within {window:?}, the link failed: {e:?}"),
        }
    }
}

/// The error a refused link was closed with; fails if an event arrives first.
pub async fn refusal(receiver: &mut Receiver) -> LinkError {
    match within(
        "a refused link's detach",
        STEP,
        receiver.recv::<Body<Value>>(),
    )
    .await
    {
        Ok(delivery) => panic!(
            "expected the link to be refused, got event {:?}",
            Event::from_message(delivery.into_message()).sequence_number
        ),
        Err(error) => recv_link_error(&error)
            .unwrap_or_else(|| panic!("expected a detach with an error, got {error:?}")),
    }
}

/// The error a receiving link is eventually detached with, skipping any events before it.
pub async fn detach_error(receiver: &mut Receiver) -> LinkError {
    within("a detach", STEP, async {
        loop {
            match receiver.recv::<Body<Value>>().await {
                Ok(_) => continue,
                Err(error) => {
                    return recv_link_error(&error).unwrap_or_else(|| {
                        panic!("expected a detach with an error, got {error:?}")
                    })
                }
            }
        }
    })
    .await
}

/// The error a sending link was detached or refused with.
pub async fn sender_detach_error(sender: &mut Sender) -> LinkError {
    let error = within("a sender's detach", STEP, sender.on_detach()).await;
    detach_link_error(&error)
        .unwrap_or_else(|| panic!("expected a detach with an error, got {error:?}"))
}

/// An event with a data body and no other sections.
pub fn event_message(body: &[u8]) -> Message<Body<Value>> {
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body: Body::Data(vec![Data(Binary::from(body.to_vec()))].into()),
        footer: None,
    }
}

/// A batch envelope (message format 0x80013700): one data section per serialized event, the
/// partition key in the envelope's annotations, as the Python SDK sends it.
pub fn batch(
    events: &[Message<Body<Value>>],
    partition_key: Option<&str>,
) -> Sendable<Body<Value>> {
    let sections: Vec<Data> = events
        .iter()
        .map(|event| {
            let bytes = serde_amqp::to_vec(&Serializable(event)).expect("an event encodes");
            Data(Binary::from(bytes))
        })
        .collect();
    let message_annotations = partition_key.map(|key| {
        let mut map = OrderedMap::new();
        map.insert(
            OwnedKey::Symbol(Symbol::from("x-opt-partition-key")),
            Value::String(key.into()),
        );
        MessageAnnotations(map)
    });
    let envelope = Message {
        header: None,
        delivery_annotations: None,
        message_annotations,
        properties: None,
        application_properties: None,
        body: Body::Data(sections.into()),
        footer: None,
    };
    Sendable::builder()
        .message(envelope)
        .message_format(BATCH_MESSAGE_FORMAT)
        .build()
}

/// Sends and asserts the emulator accepted the publication.
pub async fn publish(sender: &mut Sender, sendable: impl Into<Sendable<Body<Value>>>) {
    let outcome = within("publish", STEP, sender.send(sendable.into()))
        .await
        .unwrap_or_else(|e| panic!("publish failed: {e:?}"));
    assert!(
        matches!(outcome, Outcome::Accepted(_)),
        "publication not accepted: {outcome:?}"
    );
}
