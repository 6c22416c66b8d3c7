//! One client connection: SASL, sessions, and routing each attached link to its node.
//!
//! pyamqp reads performatives at fixed list positions, while fe2o3 leaves out trailing fields
//! that are null or default. So the server's Open carries `properties` and a non-default
//! `channel_max`, every Begin carries `handle_max` and `properties`, and every Attach carries
//! `properties` (see the interop notes).

use std::sync::{Arc, Mutex};

use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::{
    LinkAcceptor, LinkEndpoint, ListenerConnectionHandle, ListenerSessionHandle, SaslAcceptor,
    SessionAcceptor, SupportedReceiverSettleModes, SupportedSenderSettleModes,
};
use fe2o3_amqp::types::definitions::{
    self, ErrorCondition, Fields, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp::types::messaging::TargetArchetype;
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{Array, Symbol, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::address::{self, Node};
use crate::faults::LinkFault;
use crate::request::{self, ReplyRoute};
use crate::server::Shared;
use crate::token::{normalize_resource, resource_covers};
use crate::{consumer, producer};

pub const UNAUTHORIZED: &str = "amqp:unauthorized-access";
pub const NOT_FOUND: &str = "amqp:not-found";

/// What one connection knows: the tokens put on its `$cbs` node and where replies go.
#[derive(Debug, Default)]
pub struct ConnectionContext {
    /// Connection number, for logs.
    pub id: u64,
    /// Resources granted by put-token, with their expiry (Unix seconds).
    grants: Mutex<Vec<Grant>>,
    /// Server-side senders attached to `$cbs` / `$management`, where responses are sent.
    pub replies: Mutex<Vec<ReplyRoute>>,
}

#[derive(Debug, Clone)]
struct Grant {
    resource: String,
    expires_at_unix: u64,
}

impl ConnectionContext {
    pub fn new(id: u64) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }

    /// Records a put-token; a newer token for the same resource replaces the old one.
    pub fn grant(&self, audience: &str, expires_at_unix: u64) {
        let resource = normalize_resource(audience);
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants.retain(|g| g.resource != resource);
        grants.push(Grant {
            resource,
            expires_at_unix,
        });
    }

    /// The latest expiry among unexpired grants covering `resource`, if any.
    pub fn authorized_until(&self, resource: &str, now_unix: u64) -> Option<u64> {
        let resource = normalize_resource(resource);
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants
            .iter()
            .filter(|g| g.expires_at_unix > now_unix && resource_covers(&g.resource, &resource))
            .map(|g| g.expires_at_unix)
            .max()
    }

    /// Whether any unexpired token was put on this connection.
    pub fn has_any_grant(&self, now_unix: u64) -> bool {
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants.iter().any(|g| g.expires_at_unix > now_unix)
    }
}

/// SASL: offer MSSBCBS (.NET) and ANONYMOUS (Python, Rust); real auth happens on `$cbs`.
#[derive(Debug, Clone, Default)]
pub struct EventHubsSasl;

impl SaslAcceptor for EventHubsSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        Array::from(vec![Symbol::from("MSSBCBS"), Symbol::from("ANONYMOUS")])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        let code = match init.mechanism.as_str() {
            "MSSBCBS" | "ANONYMOUS" => SaslCode::Ok,
            _ => SaslCode::Auth,
        };
        SaslServerFrame::Outcome(SaslOutcome {
            code,
            additional_data: None,
        })
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        SaslServerFrame::Outcome(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        })
    }
}

pub fn server_properties(shared: &Shared) -> Fields {
    let mut fields = Fields::new();
    fields.insert(
        Symbol::from("product"),
        Value::String("hubcap-emulator".into()),
    );
    fields.insert(
        Symbol::from("version"),
        Value::String(env!("CARGO_PKG_VERSION").into()),
    );
    fields.insert(
        Symbol::from("com.microsoft:namespace"),
        Value::String(shared.namespace.name.clone()),
    );
    fields
}

/// Serves one accepted AMQP connection until the peer closes it or a fault drops it.
pub async fn serve(
    shared: Arc<Shared>,
    mut connection: ListenerConnectionHandle,
    context: Arc<ConnectionContext>,
    killed: CancellationToken,
) {
    let session_acceptor = SessionAcceptor::builder()
        .handle_max(65535u32)
        .incoming_window(65536)
        .outgoing_window(65536)
        .properties(server_properties(&shared))
        .build();
    let links = TaskTracker::new();
    loop {
        tokio::select! {
            incoming = connection.next_incoming_session() => {
                let Some(incoming) = incoming else { break };
                match session_acceptor.accept_incoming_session(incoming, &mut connection).await {
                    Ok(session) => {
                        let shared = Arc::clone(&shared);
                        let context = Arc::clone(&context);
                        let links_for_session = links.clone();
                        let killed = killed.clone();
                        links.spawn(serve_session(shared, session, context, links_for_session, killed));
                    }
                    Err(error) => {
                        debug!(connection = context.id, %error, "session not accepted");
                        break;
                    }
                }
            }
            _ = killed.cancelled() => break,
        }
    }
    links.close();
    if !killed.is_cancelled() {
        let _ = connection.close().await;
    }
    links.wait().await;
}

async fn serve_session(
    shared: Arc<Shared>,
    mut session: ListenerSessionHandle,
    context: Arc<ConnectionContext>,
    links: TaskTracker,
    killed: CancellationToken,
) {
    loop {
        let attach = tokio::select! {
            attach = session.next_incoming_attach() => match attach {
                Some(attach) => attach,
                None => break,
            },
            _ = killed.cancelled() => break,
        };
        let plan = plan_link(&shared, &context, &attach);
        let acceptor = link_acceptor(&shared, &attach, &plan);
        let link = match acceptor.accept_incoming_attach(attach, &mut session).await {
            Ok(link) => link,
            Err(error) => {
                debug!(connection = context.id, %error, "link not accepted");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let context = Arc::clone(&context);
        let killed = killed.clone();
        links.spawn(async move { run_link(shared, context, link, plan, killed).await });
    }
    if !killed.is_cancelled() {
        let _ = session.end().await;
    }
}

/// What a freshly attached link is for, decided from its Attach before it is accepted.
#[derive(Debug)]
pub enum LinkPlan {
    /// Client sends requests to `$cbs` or `$management`.
    Requests { node: request::NodeKind },
    /// Client receives responses from `$cbs` or `$management`.
    Replies {
        node: request::NodeKind,
        target: Option<String>,
    },
    /// Client publishes events.
    Publish(producer::PublishPlan),
    /// Client consumes a partition.
    Consume(consumer::ConsumePlan),
    /// Accept the attach and close the link at once with this error.
    Refuse(LinkFault),
}

fn plan_link(shared: &Shared, context: &ConnectionContext, attach: &Attach) -> LinkPlan {
    let address = match attach.role {
        // The remote sends: the node is its target.
        Role::Sender => target_address(attach),
        Role::Receiver => attach.source.as_ref().and_then(|s| s.address.clone()),
    };
    let Some(address) = address else {
        return LinkPlan::Refuse(LinkFault::new(NOT_FOUND, "the link has no address"));
    };
    let node = match address::parse_address(&address) {
        Ok(node) => node,
        Err(error) => return LinkPlan::Refuse(LinkFault::new(NOT_FOUND, error.to_string())),
    };
    match (node, &attach.role) {
        (Node::Cbs, Role::Sender) => LinkPlan::Requests {
            node: request::NodeKind::Cbs,
        },
        (Node::Management, Role::Sender) => LinkPlan::Requests {
            node: request::NodeKind::Management,
        },
        (Node::Cbs, Role::Receiver) => LinkPlan::Replies {
            node: request::NodeKind::Cbs,
            target: target_address(attach),
        },
        (Node::Management, Role::Receiver) => LinkPlan::Replies {
            node: request::NodeKind::Management,
            target: target_address(attach),
        },
        (Node::Hub { hub }, Role::Sender) => producer::plan(shared, context, &address, &hub, None),
        (Node::HubPartition { hub, partition }, Role::Sender) => {
            producer::plan(shared, context, &address, &hub, Some(&partition))
        }
        (
            Node::ConsumerGroupPartition {
                hub,
                consumer_group,
                partition,
            },
            Role::Receiver,
        ) => consumer::plan(
            shared,
            context,
            attach,
            &address,
            &hub,
            &consumer_group,
            &partition,
        ),
        (node, role) => LinkPlan::Refuse(LinkFault::new(
            NOT_FOUND,
            format!("the node {node:?} cannot be attached as a {role:?} link"),
        )),
    }
}

fn target_address(attach: &Attach) -> Option<String> {
    match attach.target.as_deref() {
        Some(TargetArchetype::Target(target)) => target.address.clone(),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

/// fe2o3's acceptor with its default (non-dynamic) source and target handlers.
type StaticLinkAcceptor = LinkAcceptor<
    fn(fe2o3_amqp::types::messaging::Source) -> Option<fe2o3_amqp::types::messaging::Source>,
    fn(fe2o3_amqp::types::messaging::Target) -> Option<fe2o3_amqp::types::messaging::Target>,
>;

fn link_acceptor(shared: &Shared, attach: &Attach, plan: &LinkPlan) -> StaticLinkAcceptor {
    let mut builder = LinkAcceptor::builder()
        .properties(server_properties(shared))
        .initial_delivery_count(0)
        .verify_incoming_source(false)
        .verify_incoming_target(false)
        // Producers complete only on a settled disposition: settle on the first disposition.
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        // Transfers to consumers go pre-settled; a client asking for unsettled gets settled.
        .supported_sender_settle_modes(SupportedSenderSettleModes::SettledAndMixed)
        .fallback_sender_settle_mode(SenderSettleMode::Settled);
    if attach.role == Role::Sender {
        builder = builder.max_message_size(shared.max_message_size);
    }
    if let LinkPlan::Consume(consume) = plan {
        if consume.runtime_metric {
            builder = builder.add_offered_capabilities(consumer::RUNTIME_METRIC_CAPABILITY);
        }
    }
    builder.build()
}

async fn run_link(
    shared: Arc<Shared>,
    context: Arc<ConnectionContext>,
    link: LinkEndpoint,
    plan: LinkPlan,
    killed: CancellationToken,
) {
    match (plan, link) {
        (LinkPlan::Refuse(fault), link) => close_with_fault(link, &fault).await,
        (LinkPlan::Requests { node }, LinkEndpoint::Receiver(receiver)) => {
            request::serve_requests(shared, context, node, receiver, killed).await
        }
        (LinkPlan::Replies { node, target }, LinkEndpoint::Sender(sender)) => {
            let (tx, rx) = mpsc::channel(64);
            context
                .replies
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(ReplyRoute { node, target, tx });
            request::serve_replies(sender, rx, killed).await
        }
        (LinkPlan::Publish(plan), LinkEndpoint::Receiver(receiver)) => {
            producer::serve(shared, context, plan, receiver, killed).await
        }
        (LinkPlan::Consume(plan), LinkEndpoint::Sender(sender)) => {
            consumer::serve(shared, context, plan, sender, killed).await
        }
        (plan, link) => {
            warn!(?plan, "link role does not match its plan");
            close_with_fault(link, &LinkFault::new(NOT_FOUND, "unexpected link role")).await
        }
    }
}

pub fn amqp_error(fault: &LinkFault) -> definitions::Error {
    definitions::Error::new(
        ErrorCondition::Custom(Symbol::from(fault.condition.as_str())),
        Some(fault.description.clone()),
        None,
    )
}

pub async fn close_with_fault(link: LinkEndpoint, fault: &LinkFault) {
    let result = match link {
        LinkEndpoint::Sender(sender) => sender.close_with_error(amqp_error(fault)).await,
        LinkEndpoint::Receiver(receiver) => receiver.close_with_error(amqp_error(fault)).await,
    };
    if let Err(error) = result {
        debug!(%error, condition = %fault.condition, "closing a link with an error failed");
    }
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Completes when a token that expires at `expires_at_unix` has expired.
pub async fn auth_deadline(expires_at_unix: u64) {
    let now = unix_now();
    let wait = std::time::Duration::from_secs(expires_at_unix.saturating_sub(now));
    // Tokens expire on whole seconds; the extra millisecond makes the recheck land after it.
    tokio::time::sleep(wait + std::time::Duration::from_millis(1)).await;
}
