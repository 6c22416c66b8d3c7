//! Publishing: batches in the service's batch format (0x80013700), for `hubcap send` and the demo.
//!
//! A batch is an envelope message whose body is one data section per event, each holding the
//! event's complete encoded message. The service stores every inner message as its own event,
//! all in one partition. Batches are filled up to the link's max-message-size.

use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::Serializable;
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations, Outcome,
};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, SimpleValue, Symbol, Value};
use fe2o3_amqp::{Sendable, Sender, Session};

use super::client::EventHubClient;
use super::error::{from_amqp, reason, EventHubsError};

const BATCH_FORMAT: u32 = 0x8001_3700;
const PARTITION_KEY: &str = "x-opt-partition-key";
/// Per-event framing inside a batch (the SDKs count 5 bytes under 256 B, 8 above).
const PER_EVENT_OVERHEAD: usize = 8;
/// Room for the envelope's own sections.
const ENVELOPE_OVERHEAD: usize = 512;
/// Used when the service reports no limit.
const DEFAULT_MAX_MESSAGE_SIZE: u64 = 1024 * 1024;

/// An event to publish.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutgoingEvent {
    pub body: Vec<u8>,
    pub properties: Vec<(String, String)>,
}

/// Where published events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTarget {
    /// Round-robin across partitions.
    Hub,
    /// Always this partition.
    Partition(String),
    /// Whatever partition the service hashes this key to.
    PartitionKey(String),
}

#[derive(Debug)]
pub struct EventSender {
    session: SessionHandle<()>,
    sender: Sender,
    max_message_size: usize,
    partition_key: Option<String>,
}

impl EventHubClient {
    pub async fn open_sender(&self, target: &SendTarget) -> Result<EventSender, EventHubsError> {
        let connection = self.connection().await?;
        let lost = |e: String| EventHubsError::ConnectionLost { reason: e };
        let mut session = {
            let mut handle = connection.handle.lock().await;
            Session::begin(&mut handle)
                .await
                .map_err(|e| lost(reason(e)))?
        };
        let address = match target {
            SendTarget::Partition(id) => format!("{}/Partitions/{id}", self.settings.event_hub),
            _ => self.settings.event_hub.clone(),
        };
        let sender = Sender::attach(
            &mut session,
            format!("hubcap-sender-{}", uuid::Uuid::new_v4()),
            address,
        )
        .await
        .map_err(|e| lost(reason(e)))?;
        let max_message_size = sender
            .max_message_size()
            .filter(|size| *size > 0)
            .unwrap_or(DEFAULT_MAX_MESSAGE_SIZE) as usize;
        Ok(EventSender {
            session,
            sender,
            max_message_size,
            partition_key: match target {
                SendTarget::PartitionKey(key) => Some(key.clone()),
                _ => None,
            },
        })
    }
}

impl EventSender {
    /// Largest publication the service accepts on this link.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// Publishes `events` in as few batches as fit; returns how many batches were sent.
    /// Each batch is confirmed by the service before the next is sent.
    pub async fn send(&mut self, events: &[OutgoingEvent]) -> Result<usize, EventHubsError> {
        let budget = self.max_message_size.saturating_sub(ENVELOPE_OVERHEAD);
        let mut batches = 0;
        let mut sections: Vec<Data> = Vec::new();
        let mut size = 0;
        for event in events {
            let encoded = encode_event(event, self.partition_key.as_deref())?;
            if encoded.len() + PER_EVENT_OVERHEAD > budget {
                return Err(EventHubsError::Settings {
                    reason: format!(
                        "an event of {} bytes does not fit the service's limit of {} bytes",
                        encoded.len(),
                        self.max_message_size
                    ),
                });
            }
            if size + encoded.len() + PER_EVENT_OVERHEAD > budget {
                self.send_batch(std::mem::take(&mut sections)).await?;
                batches += 1;
                size = 0;
            }
            size += encoded.len() + PER_EVENT_OVERHEAD;
            sections.push(Data(Binary::from(encoded)));
        }
        if !sections.is_empty() {
            self.send_batch(sections).await?;
            batches += 1;
        }
        Ok(batches)
    }

    async fn send_batch(&mut self, sections: Vec<Data>) -> Result<(), EventHubsError> {
        let envelope = Message {
            header: None,
            delivery_annotations: None,
            message_annotations: self.partition_key.as_deref().map(key_annotation),
            properties: None,
            application_properties: None,
            body: Body::<Value>::Data(sections.into()),
            footer: None,
        };
        let sendable = Sendable::builder()
            .message(envelope)
            .message_format(BATCH_FORMAT)
            .build();
        let outcome = self
            .sender
            .send(sendable)
            .await
            .map_err(|e| EventHubsError::ConnectionLost { reason: reason(e) })?;
        match outcome {
            Outcome::Accepted(_) => Ok(()),
            Outcome::Rejected(rejected) => Err(match &rejected.error {
                Some(error) => from_amqp("send", error),
                None => EventHubsError::Protocol {
                    reason: "the service rejected a batch without an error".into(),
                },
            }),
            other => Err(EventHubsError::Protocol {
                reason: format!("the service answered a send with {other:?}"),
            }),
        }
    }

    pub async fn close(mut self) {
        let _ = self.sender.close().await;
        let _ = self.session.end().await;
    }
}

fn key_annotation(key: &str) -> MessageAnnotations {
    let mut map = OrderedMap::new();
    map.insert(
        OwnedKey::Symbol(Symbol::from(PARTITION_KEY)),
        Value::String(key.to_owned()),
    );
    MessageAnnotations(map)
}

fn encode_event(
    event: &OutgoingEvent,
    partition_key: Option<&str>,
) -> Result<Vec<u8>, EventHubsError> {
    let application_properties = (!event.properties.is_empty()).then(|| {
        let mut map = OrderedMap::new();
        for (k, v) in &event.properties {
            map.insert(k.clone(), SimpleValue::String(v.clone()));
        }
        ApplicationProperties(map)
    });
    let message = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: partition_key.map(key_annotation),
        properties: None,
        application_properties,
        body: Body::<Value>::Data(vec![Data(Binary::from(event.body.clone()))].into()),
        footer: None,
    };
    serde_amqp::to_vec(&Serializable(&message)).map_err(|e| EventHubsError::Protocol {
        reason: format!("cannot encode an event: {e}"),
    })
}
