//! The request/response nodes: `$cbs` (put-token) and `$management` (READ).
//!
//! Python sends requests without `reply-to`, so a response goes to the server-side sender
//! attached to the same node on the same connection (the one whose target equals `reply-to` when
//! there is one). The response's `correlation-id` is the request's `message-id`, same AMQP type.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::types::messaging::{AmqpValue, ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{Array, OrderedMap, SimpleValue, Timestamp, Value};
use fe2o3_amqp::{Receiver, Sendable, Sender};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::connection::ConnectionContext;
use crate::message::AmqpMessage;
use crate::server::Shared;
use crate::store::now_ms;
use crate::token::{self, TokenKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Cbs,
    Management,
}

/// A server-side sender on `$cbs`/`$management` and the channel feeding it.
#[derive(Debug)]
pub struct ReplyRoute {
    pub node: NodeKind,
    /// The client's receiver address (its `target`), matched against a request's `reply-to`.
    pub target: Option<String>,
    pub tx: mpsc::Sender<AmqpMessage>,
}

/// How long a response waits for its reply link to be attached (clients attach both links
/// before sending, but the two attaches may be processed in either order).
const REPLY_LINK_WAIT: Duration = Duration::from_secs(5);

pub async fn serve_requests(
    shared: Arc<Shared>,
    context: Arc<ConnectionContext>,
    node: NodeKind,
    mut receiver: Receiver,
    killed: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            delivery = receiver.recv::<Body<Value>>() => delivery,
            _ = killed.cancelled() => return,
        };
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(error) => {
                debug!(connection = context.id, ?node, %error, "request link ended");
                let _ = receiver.close().await;
                return;
            }
        };
        let (info, request) = delivery.into_parts();
        if let Err(error) = receiver.accept(info).await {
            debug!(connection = context.id, %error, "cannot settle a request");
            return;
        }
        let (status, description, body) = match node {
            NodeKind::Cbs => put_token(&shared, &context, &request),
            NodeKind::Management => management(&shared, &context, &request),
        };
        let response = response_to(&request, status, &description, body);
        let reply_to = request.properties.as_ref().and_then(|p| p.reply_to.clone());
        if !deliver_response(&context, node, reply_to.as_deref(), response).await {
            debug!(
                connection = context.id,
                ?node,
                "no reply link for a response; dropped"
            );
        }
    }
}

pub async fn serve_replies(
    mut sender: Sender,
    mut responses: mpsc::Receiver<AmqpMessage>,
    killed: CancellationToken,
) {
    loop {
        tokio::select! {
            response = responses.recv() => {
                let Some(response) = response else { break };
                let sendable = Sendable::builder().message(response).settled(true).build();
                // Full 11-field transfers: pyamqp reads transfer fields by position.
                match sender.send_batchable(sendable).await {
                    Ok(_settled) => {}
                    Err(_) => break,
                }
            }
            _ = sender.on_detach() => return,
            _ = killed.cancelled() => return,
        }
    }
    let _ = sender.close().await;
}

async fn deliver_response(
    context: &ConnectionContext,
    node: NodeKind,
    reply_to: Option<&str>,
    response: AmqpMessage,
) -> bool {
    let deadline = tokio::time::Instant::now() + REPLY_LINK_WAIT;
    loop {
        let tx = {
            let mut routes = context.replies.lock().unwrap_or_else(|p| p.into_inner());
            routes.retain(|r| !r.tx.is_closed());
            let same_node = routes.iter().filter(|r| r.node == node);
            let by_reply_to = reply_to.and_then(|reply_to| {
                routes
                    .iter()
                    .filter(|r| r.node == node)
                    .find(|r| r.target.as_deref() == Some(reply_to))
            });
            by_reply_to
                .or(same_node.clone().next())
                .map(|r| r.tx.clone())
        };
        if let Some(tx) = tx {
            return tx.send(response).await.is_ok();
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn app_property<'a>(request: &'a AmqpMessage, key: &str) -> Option<&'a SimpleValue> {
    request.application_properties.as_ref()?.0.get(key)
}

fn app_string<'a>(request: &'a AmqpMessage, key: &str) -> Option<&'a str> {
    match app_property(request, key)? {
        SimpleValue::String(s) => Some(s),
        SimpleValue::Symbol(s) => Some(s.as_str()),
        _ => None,
    }
}

fn body_string(request: &AmqpMessage) -> Option<&str> {
    match &request.body {
        Body::Value(AmqpValue(Value::String(s))) => Some(s),
        Body::Value(AmqpValue(Value::Symbol(s))) => Some(s.as_str()),
        _ => None,
    }
}

fn now_unix() -> u64 {
    (now_ms() / 1000) as u64
}

fn put_token(
    shared: &Shared,
    context: &ConnectionContext,
    request: &AmqpMessage,
) -> (i32, String, Value) {
    if app_string(request, "operation") != Some("put-token") {
        return (400, "unsupported $cbs operation".into(), Value::Null);
    }
    let (Some(token_type), Some(audience), Some(token)) = (
        app_string(request, "type"),
        app_string(request, "name"),
        body_string(request),
    ) else {
        return (
            400,
            "put-token needs type, name and a string body".into(),
            Value::Null,
        );
    };
    match verify(shared, token_type, token, audience) {
        Ok(verified) => {
            context.grant(audience, verified.expires_at_unix);
            info!(connection = context.id, %audience, expires_at = verified.expires_at_unix, "token accepted");
            (202, "Accepted".into(), Value::Null)
        }
        Err(error) => {
            info!(connection = context.id, %audience, %error, "token refused");
            (401, error.to_string(), Value::Null)
        }
    }
}

fn verify(
    shared: &Shared,
    token_type: &str,
    token: &str,
    audience: &str,
) -> Result<token::VerifiedToken, token::TokenError> {
    match TokenKind::from_type(token_type) {
        Some(TokenKind::Sas) => token::verify_sas(token, &shared.keys, audience, now_unix()),
        Some(TokenKind::Jwt) if shared.accept_jwt => token::verify_jwt(token, audience, now_unix()),
        _ => Err(token::TokenError::UnsupportedType {
            token_type: token_type.to_owned(),
        }),
    }
}

fn management(
    shared: &Shared,
    context: &ConnectionContext,
    request: &AmqpMessage,
) -> (i32, String, Value) {
    let name = app_string(request, "name").unwrap_or_default();
    let authorized = match app_string(request, "security_token") {
        Some(token) if token.starts_with("SharedAccessSignature") => {
            verify(shared, "servicebus.windows.net:sastoken", token, name).is_ok()
        }
        Some(token) => verify(shared, "jwt", token, name).is_ok(),
        None => false,
    } || context.has_any_grant(now_unix());
    if !authorized {
        return (
            401,
            "Unauthorized: no valid token for the management request".into(),
            Value::Null,
        );
    }
    if app_string(request, "operation") != Some("READ") {
        return (
            400,
            "only the READ operation is supported".into(),
            Value::Null,
        );
    }
    let Some(hub) = shared.namespace.hub(name) else {
        return (
            404,
            format!(
                "The messaging entity '{}/{name}' could not be found.",
                shared.namespace.name
            ),
            Value::Null,
        );
    };
    let mut map = OrderedMap::new();
    let mut put = |key: &str, value: Value| {
        map.insert(Value::String(key.to_owned()), value);
    };
    match app_string(request, "type") {
        Some("com.microsoft:eventhub") => {
            put("name", Value::String(hub.name.clone()));
            put("type", Value::String("com.microsoft:eventhub".into()));
            put(
                "created_at",
                Value::Timestamp(Timestamp::from_milliseconds(hub.created_at_ms)),
            );
            put("partition_count", Value::Int(hub.partitions.len() as i32));
            put(
                "partition_ids",
                Value::Array(Array::from(
                    hub.partition_ids()
                        .into_iter()
                        .map(Value::String)
                        .collect::<Vec<_>>(),
                )),
            );
        }
        Some("com.microsoft:partition") => {
            let id = app_string(request, "partition").unwrap_or_default();
            let Some(partition) = hub.partition(id) else {
                return (
                    404,
                    format!("partition '{id}' of '{name}' does not exist"),
                    Value::Null,
                );
            };
            let props = partition.properties();
            put("type", Value::String("com.microsoft:partition".into()));
            put("name", Value::String(hub.name.clone()));
            put("partition", Value::String(partition.id.clone()));
            put(
                "begin_sequence_number",
                Value::Long(props.begin_sequence_number),
            );
            put(
                "last_enqueued_sequence_number",
                Value::Long(props.last_enqueued_sequence_number),
            );
            put("last_enqueued_sequence_number_epoch", Value::Long(0));
            put(
                "last_enqueued_offset",
                Value::String(props.last_enqueued_offset),
            );
            put(
                "last_enqueued_time_utc",
                Value::Timestamp(Timestamp::from_milliseconds(props.last_enqueued_time_ms)),
            );
            put("is_partition_empty", Value::Bool(props.is_empty));
        }
        other => {
            return (
                400,
                format!("unsupported management type {other:?}"),
                Value::Null,
            );
        }
    }
    (200, "OK".into(), Value::Map(map))
}

fn response_to(request: &AmqpMessage, status: i32, description: &str, body: Value) -> AmqpMessage {
    let correlation_id = request
        .properties
        .as_ref()
        .and_then(|p| p.message_id.clone());
    let mut application_properties = OrderedMap::new();
    application_properties.insert("status-code".to_owned(), SimpleValue::Int(status));
    application_properties.insert(
        "status-description".to_owned(),
        SimpleValue::String(description.to_owned()),
    );
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            correlation_id,
            ..Properties::default()
        }),
        application_properties: Some(ApplicationProperties(application_properties)),
        body: Body::Value(AmqpValue(body)),
        footer: None,
    }
}
