//! `$management` READ: event hub and partition properties.

use std::time::Duration;

use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{OrderedMap, SimpleValue, Value};
use fe2o3_amqp::{Receiver, Sender, Session};

use super::auth::status_of;
use super::client::EventHubClient;
use super::error::{reason, EventHubsError};

const MANAGEMENT_NODE: &str = "$management";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What READ on `com.microsoft:eventhub` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHubProperties {
    pub name: String,
    pub created_at_ms: i64,
    pub partition_ids: Vec<String>,
}

/// What READ on `com.microsoft:partition` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProperties {
    pub partition_id: String,
    pub begin_sequence_number: i64,
    /// `-1` for an empty partition.
    pub last_enqueued_sequence_number: i64,
    pub last_enqueued_offset: String,
    pub last_enqueued_time_ms: i64,
    pub is_empty: bool,
}

impl EventHubClient {
    pub async fn event_hub_properties(&self) -> Result<EventHubProperties, EventHubsError> {
        let map = self.read("com.microsoft:eventhub", None).await?;
        let partition_ids = match map.get(&Value::String("partition_ids".into())) {
            Some(Value::Array(ids)) => ids
                .0
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(protocol(format!("partition id {other:?} is not a string"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(Value::List(ids)) => ids
                .iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => return Err(protocol("hub properties have no partition_ids".into())),
        };
        Ok(EventHubProperties {
            name: string(&map, "name")?,
            created_at_ms: timestamp(&map, "created_at").unwrap_or(0),
            partition_ids,
        })
    }

    pub async fn partition_properties(
        &self,
        partition_id: &str,
    ) -> Result<PartitionProperties, EventHubsError> {
        let map = self
            .read("com.microsoft:partition", Some(partition_id))
            .await?;
        Ok(PartitionProperties {
            partition_id: partition_id.to_owned(),
            begin_sequence_number: long(&map, "begin_sequence_number")?,
            last_enqueued_sequence_number: long(&map, "last_enqueued_sequence_number")?,
            last_enqueued_offset: string(&map, "last_enqueued_offset")?,
            last_enqueued_time_ms: timestamp(&map, "last_enqueued_time_utc").unwrap_or(0),
            is_empty: matches!(
                map.get(&Value::String("is_partition_empty".into())),
                Some(Value::Bool(true))
            ),
        })
    }

    /// One READ request on its own short-lived session (management calls are rare: start-up,
    /// balancing cycles and lag sampling).
    async fn read(
        &self,
        entity_type: &str,
        partition_id: Option<&str>,
    ) -> Result<OrderedMap<Value, Value>, EventHubsError> {
        let live = self.connection().await?;
        // Partitions ask concurrently on one connection: link names and the reply address must
        // be unique per request, or responses go to the wrong waiter.
        let request_id = uuid::Uuid::new_v4().simple().to_string();
        let reply_to = format!("hubcap-management-{request_id}");
        let result = tokio::time::timeout(REQUEST_TIMEOUT, async {
            let lost = |e: String| EventHubsError::ConnectionLost { reason: e };
            let mut session = {
                let mut handle = live.handle.lock().await;
                Session::begin(&mut handle)
                    .await
                    .map_err(|e| lost(reason(e)))?
            };
            let mut sender = Sender::attach(
                &mut session,
                format!("hubcap-mgmt-sender-{request_id}"),
                MANAGEMENT_NODE,
            )
            .await
            .map_err(|e| lost(reason(e)))?;
            let mut receiver = Receiver::builder()
                .name(format!("hubcap-mgmt-receiver-{request_id}"))
                .source(MANAGEMENT_NODE)
                .target(reply_to.clone())
                .attach(&mut session)
                .await
                .map_err(|e| lost(reason(e)))?;
            let mut props = OrderedMap::new();
            props.insert("operation".to_owned(), SimpleValue::String("READ".into()));
            props.insert("type".to_owned(), SimpleValue::String(entity_type.into()));
            props.insert(
                "name".to_owned(),
                SimpleValue::String(self.settings.event_hub.clone()),
            );
            if let Some(id) = partition_id {
                props.insert("partition".to_owned(), SimpleValue::String(id.into()));
            }
            let request = Message {
                header: None,
                delivery_annotations: None,
                message_annotations: None,
                properties: Some(Properties {
                    message_id: Some(MessageId::Ulong(1)),
                    reply_to: Some(reply_to.clone()),
                    ..Default::default()
                }),
                application_properties: Some(ApplicationProperties(props)),
                body: Body::Value(AmqpValue(Value::Null)),
                footer: None,
            };
            sender.send(request).await.map_err(|e| lost(reason(e)))?;
            let delivery = receiver
                .recv::<Body<Value>>()
                .await
                .map_err(|e| lost(reason(e)))?;
            let _ = receiver.accept(&delivery).await;
            let _ = sender.close().await;
            let _ = receiver.close().await;
            let _ = session.end().await;
            Ok::<_, EventHubsError>(delivery.into_message())
        })
        .await
        .map_err(|_| EventHubsError::Timeout {
            operation: "management READ",
            seconds: REQUEST_TIMEOUT.as_secs(),
        });
        let response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(error)) | Err(error) => {
                live.mark_broken();
                return Err(error);
            }
        };
        let (status, description) = status_of(&response);
        match (status, response.body) {
            (Some(200), Body::Value(AmqpValue(Value::Map(map)))) => Ok(map),
            (Some(200), _) => Err(protocol("management response body is not a map".into())),
            (Some(status), _) => Err(EventHubsError::Management {
                operation: format!("READ {entity_type}"),
                status,
                description,
            }),
            (None, _) => Err(protocol("management response has no status-code".into())),
        }
    }
}

fn protocol(reason: String) -> EventHubsError {
    EventHubsError::Protocol { reason }
}

fn string(map: &OrderedMap<Value, Value>, key: &str) -> Result<String, EventHubsError> {
    match map.get(&Value::String(key.into())) {
        Some(Value::String(s)) => Ok(s.clone()),
        other => Err(protocol(format!("{key} is {other:?}, expected a string"))),
    }
}

fn long(map: &OrderedMap<Value, Value>, key: &str) -> Result<i64, EventHubsError> {
    match map.get(&Value::String(key.into())) {
        Some(Value::Long(n)) => Ok(*n),
        Some(Value::Int(n)) => Ok(i64::from(*n)),
        other => Err(protocol(format!("{key} is {other:?}, expected a long"))),
    }
}

fn timestamp(map: &OrderedMap<Value, Value>, key: &str) -> Option<i64> {
    match map.get(&Value::String(key.into())) {
        Some(Value::Timestamp(t)) => Some(t.milliseconds()),
        _ => None,
    }
}
