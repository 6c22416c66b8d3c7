//! Consuming links: a client receiver on `<hub>/ConsumerGroups/<cg>/Partitions/<id>`.
//!
//! Events go out pre-settled in full (11-field) transfers, never past the link credit the client
//! granted (fe2o3's sender waits for credit; Python flows 300 only when it reaches 0).

use std::sync::Arc;

use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::Sender;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::connection::{
    amqp_error, auth_deadline, unix_now, ConnectionContext, LinkPlan, NOT_FOUND, UNAUTHORIZED,
};
use crate::faults::LinkFault;
use crate::filter::{parse_selector, StartPosition};
use crate::message::{runtime_metric_annotations, StoredEvent};
use crate::receivers::{PartitionKey, Registration};
use crate::server::Shared;
use crate::store::{now_ms, Partition};

pub const RUNTIME_METRIC_CAPABILITY: &str = "com.microsoft:enable-receiver-runtime-metric";
const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
const EPOCH_PROPERTY: &str = "com.microsoft:epoch";
const ARGUMENT_OUT_OF_RANGE: &str = "com.microsoft:argument-out-of-range";
const ARGUMENT_ERROR: &str = "com.microsoft:argument-error";
/// Events copied out of the partition per lock; bounds a link's memory beyond its credit.
const READ_BATCH: usize = 256;

#[derive(Debug)]
pub struct ConsumePlan {
    partition: Arc<Partition>,
    /// First sequence number to deliver.
    start_sequence_number: i64,
    /// The link's place under the epoch rules, and where steals and faults arrive.
    registration: Registration,
    /// The client asked for last-enqueued information in delivery annotations.
    pub runtime_metric: bool,
    /// The link's address, which the connection's tokens must keep covering.
    address: String,
    authorized_until: u64,
}

#[allow(clippy::too_many_arguments)]
pub fn plan(
    shared: &Shared,
    context: &ConnectionContext,
    attach: &Attach,
    address: &str,
    hub_name: &str,
    consumer_group: &str,
    partition_id: &str,
) -> LinkPlan {
    let not_found = |what: String| LinkPlan::Refuse(LinkFault::new(NOT_FOUND, what));
    let Some(hub) = shared.namespace.hub(hub_name) else {
        return not_found(format!(
            "The messaging entity '{}/{hub_name}' could not be found.",
            shared.namespace.name
        ));
    };
    if !hub.has_consumer_group(consumer_group) {
        return not_found(format!(
            "The messaging entity '{}/{hub_name}/consumergroups/{consumer_group}' could not be found.",
            shared.namespace.name
        ));
    }
    let Some(partition) = hub.partition(partition_id) else {
        return not_found(format!(
            "The partition '{partition_id}' of '{hub_name}' does not exist."
        ));
    };
    let Some(authorized_until) = context.authorized_until(address, unix_now()) else {
        return LinkPlan::Refuse(LinkFault::new(
            UNAUTHORIZED,
            format!("Unauthorized access. 'Listen' claim(s) are required to perform this operation. Resource: '{address}'."),
        ));
    };
    let start = match start_position(attach) {
        Ok(start) => start,
        Err(fault) => return LinkPlan::Refuse(fault),
    };
    let start_sequence_number = match partition.resolve(&start) {
        Ok(sequence_number) => sequence_number,
        Err(error) => {
            return LinkPlan::Refuse(LinkFault::new(ARGUMENT_OUT_OF_RANGE, error.to_string()))
        }
    };
    let epoch = match epoch(attach) {
        Ok(epoch) => epoch,
        Err(fault) => return LinkPlan::Refuse(fault),
    };
    let key = PartitionKey::new(&hub.name, consumer_group, &partition.id);
    let registration = match shared.receivers.register(key, epoch) {
        Ok(registration) => registration,
        Err(fault) => return LinkPlan::Refuse(fault),
    };
    let runtime_metric = attach.desired_capabilities.as_ref().is_some_and(|caps| {
        caps.0
            .iter()
            .any(|c| c.as_str() == RUNTIME_METRIC_CAPABILITY)
    });
    LinkPlan::Consume(ConsumePlan {
        partition: Arc::clone(partition),
        start_sequence_number,
        registration,
        runtime_metric,
        address: address.to_owned(),
        authorized_until,
    })
}

/// The start position from the source's selector filter; no filter means the start of stream.
fn start_position(attach: &Attach) -> Result<StartPosition, LinkFault> {
    let filter = attach
        .source
        .as_ref()
        .and_then(|source| source.filter.as_ref())
        .and_then(|filters| filters.get(&Symbol::from(SELECTOR_FILTER)));
    let expression = match filter {
        None => return Ok(StartPosition::Earliest),
        Some(Value::Described(described)) => match &described.value {
            Value::String(expression) => expression,
            other => {
                return Err(LinkFault::new(
                    ARGUMENT_ERROR,
                    format!("the selector filter value must be a string, not {other:?}"),
                ))
            }
        },
        // Legacy clients send the bare expression.
        Some(Value::String(expression)) => expression,
        Some(other) => {
            return Err(LinkFault::new(
                ARGUMENT_ERROR,
                format!("unsupported selector filter {other:?}"),
            ))
        }
    };
    parse_selector(expression).map_err(|error| LinkFault::new(ARGUMENT_ERROR, error.to_string()))
}

fn epoch(attach: &Attach) -> Result<Option<i64>, LinkFault> {
    let value = attach
        .properties
        .as_ref()
        .and_then(|properties| properties.get(&Symbol::from(EPOCH_PROPERTY)));
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Long(epoch)) => Ok(Some(*epoch)),
        Some(Value::Int(epoch)) => Ok(Some(i64::from(*epoch))),
        Some(Value::Uint(epoch)) => Ok(Some(i64::from(*epoch))),
        Some(Value::Ulong(epoch)) => i64::try_from(*epoch)
            .map(Some)
            .map_err(|_| LinkFault::new(ARGUMENT_ERROR, format!("epoch {epoch} is out of range"))),
        Some(other) => Err(LinkFault::new(
            ARGUMENT_ERROR,
            format!("the epoch must be a long, not {other:?}"),
        )),
    }
}

/// Why a consuming link stops.
enum Stop {
    /// Detach with this error (steal, injected fault, expired token).
    Fault(LinkFault),
    /// The client detached or the connection is gone.
    Gone,
}

pub async fn serve(
    _shared: Arc<Shared>,
    context: Arc<ConnectionContext>,
    mut plan: ConsumePlan,
    mut sender: Sender,
    killed: CancellationToken,
) {
    let stop = deliver(&context, &mut plan, &mut sender, &killed).await;
    match stop {
        Stop::Fault(fault) => {
            debug!(connection = context.id, address = %plan.address, condition = %fault.condition, "detaching consumer");
            let _ = sender.close_with_error(amqp_error(&fault)).await;
        }
        Stop::Gone => {
            if !killed.is_cancelled() {
                let _ = sender.close().await;
            }
        }
    }
}

async fn deliver(
    context: &ConnectionContext,
    plan: &mut ConsumePlan,
    sender: &mut Sender,
    killed: &CancellationToken,
) -> Stop {
    let partition = Arc::clone(&plan.partition);
    let mut appended = partition.subscribe();
    let mut next = plan.start_sequence_number;
    let mut batch: Vec<StoredEvent> = Vec::with_capacity(READ_BATCH);
    loop {
        if plan.registration.is_stalled() {
            // A stuck link: attached, silent, until the client gives up on it.
            tokio::select! {
                fault = plan.registration.kicked.recv() => return fault.map_or(Stop::Gone, Stop::Fault),
                _ = sender.on_detach() => return Stop::Gone,
                _ = killed.cancelled() => return Stop::Gone,
            }
        }
        appended.borrow_and_update();
        batch.clear();
        next = partition.read_from(next, READ_BATCH, &mut batch);
        if batch.is_empty() {
            tokio::select! {
                changed = appended.changed() => {
                    if changed.is_err() { return Stop::Gone; }
                    continue;
                }
                fault = plan.registration.kicked.recv() => {
                    return fault.map_or(Stop::Gone, Stop::Fault);
                }
                _ = sender.on_detach() => return Stop::Gone,
                _ = auth_deadline(plan.authorized_until) => {
                    if let Some(stop) = recheck_authorization(context, plan) { return stop; }
                    continue;
                }
                _ = killed.cancelled() => return Stop::Gone,
            }
        }
        for event in &batch {
            let with_metrics;
            let sendable = if plan.runtime_metric {
                let props = partition.properties();
                let mut copy = (*event.sendable).clone();
                copy.message.delivery_annotations = Some(runtime_metric_annotations(
                    props.last_enqueued_sequence_number,
                    &props.last_enqueued_offset,
                    props.last_enqueued_time_ms,
                    now_ms(),
                ));
                with_metrics = copy;
                &with_metrics
            } else {
                &*event.sendable
            };
            tokio::select! {
                biased;
                fault = plan.registration.kicked.recv() => {
                    return fault.map_or(Stop::Gone, Stop::Fault);
                }
                _ = killed.cancelled() => return Stop::Gone,
                sent = sender.send_batchable_ref(sendable) => {
                    if sent.is_err() { return Stop::Gone; }
                }
            }
        }
        if plan.authorized_until <= unix_now() {
            if let Some(stop) = recheck_authorization(context, plan) {
                return stop;
            }
        }
    }
}

fn recheck_authorization(context: &ConnectionContext, plan: &mut ConsumePlan) -> Option<Stop> {
    match context.authorized_until(&plan.address, unix_now()) {
        Some(until) => {
            plan.authorized_until = until;
            None
        }
        None => Some(Stop::Fault(LinkFault::new(
            UNAUTHORIZED,
            "the token for this link expired",
        ))),
    }
}
