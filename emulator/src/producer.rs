//! Publishing links: a client sender to `<hub>` or `<hub>/Partitions/<id>`.

use std::sync::Arc;

use fe2o3_amqp::link::RecvError;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Receiver;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::connection::{amqp_error, ConnectionContext, LinkPlan, NOT_FOUND, UNAUTHORIZED};
use crate::connection::{auth_deadline, unix_now};
use crate::faults::LinkFault;
use crate::message::unpack_published;
use crate::server::Shared;
use crate::store::{Hub, Partition};

#[derive(Debug)]
pub struct PublishPlan {
    hub: Arc<Hub>,
    /// Fixed partition for `<hub>/Partitions/<id>`; `None` routes each publication.
    partition: Option<Arc<Partition>>,
    /// The link's address, which the connection's tokens must keep covering.
    address: String,
    authorized_until: u64,
}

pub fn plan(
    shared: &Shared,
    context: &ConnectionContext,
    address: &str,
    hub_name: &str,
    partition_id: Option<&str>,
) -> LinkPlan {
    let Some(hub) = shared.namespace.hub(hub_name) else {
        return LinkPlan::Refuse(LinkFault::new(
            NOT_FOUND,
            format!(
                "The messaging entity '{}/{hub_name}' could not be found.",
                shared.namespace.name
            ),
        ));
    };
    let partition = match partition_id {
        None => None,
        Some(id) => match hub.partition(id) {
            Some(partition) => Some(Arc::clone(partition)),
            None => {
                return LinkPlan::Refuse(LinkFault::new(
                    NOT_FOUND,
                    format!("The partition '{id}' of '{hub_name}' does not exist."),
                ))
            }
        },
    };
    let Some(authorized_until) = context.authorized_until(address, unix_now()) else {
        return LinkPlan::Refuse(LinkFault::new(
            UNAUTHORIZED,
            format!("Unauthorized access. 'Send' claim(s) are required to perform this operation. Resource: '{address}'."),
        ));
    };
    LinkPlan::Publish(PublishPlan {
        hub: Arc::clone(hub),
        partition,
        address: address.to_owned(),
        authorized_until,
    })
}

pub async fn serve(
    _shared: Arc<Shared>,
    context: Arc<ConnectionContext>,
    mut plan: PublishPlan,
    mut receiver: Receiver,
    killed: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            delivery = receiver.recv::<Body<Value>>() => delivery,
            _ = auth_deadline(plan.authorized_until) => {
                match context.authorized_until(&plan.address, unix_now()) {
                    Some(until) => { plan.authorized_until = until; continue; }
                    None => {
                        let fault = LinkFault::new(UNAUTHORIZED, "the token for this link expired");
                        let _ = receiver.close_with_error(amqp_error(&fault)).await;
                        return;
                    }
                }
            }
            _ = killed.cancelled() => return,
        };
        let delivery = match delivery {
            Ok(delivery) => delivery,
            // fe2o3 has already closed the link with amqp:link:message-size-exceeded.
            Err(RecvError::MessageSizeExceeded(error)) => {
                debug!(connection = context.id, %error, "publication over the size limit");
                return;
            }
            Err(error) => {
                debug!(connection = context.id, %error, "publishing link ended");
                let _ = receiver.close().await;
                return;
            }
        };
        let format = delivery.message_format().unwrap_or(0);
        let (info, message) = delivery.into_parts();
        let outcome = unpack_published(format, message).and_then(|(events, key)| {
            let partition = match &plan.partition {
                Some(partition) => partition,
                None => plan.hub.route(key.as_deref()),
            };
            partition.append(events, key.as_deref())
        });
        let disposed = match outcome {
            Ok(_) => receiver.accept(info).await,
            Err(error) => {
                let fault = LinkFault::new("amqp:decode-error", error.to_string());
                receiver.reject(info, amqp_error(&fault)).await
            }
        };
        if disposed.is_err() {
            return;
        }
    }
}
