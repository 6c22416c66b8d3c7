//! One partition receiver: start filter, owner level, pre-settled transfers, manual credit.
//!
//! The service is asked to send every event pre-settled, so no disposition goes back per event;
//! credit is topped up each time half of it has been used. The credit is `prefetch` events, or
//! fewer when events are large, so that about `prefetch_bytes` are in flight per partition
//! ([`CreditBudget`]): memory follows the configuration, not the event size. Each receiver has
//! its own session, sized for its credit, so many partitions on one connection never exceed a
//! session window.

use std::sync::Arc;

use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::link::{ReceiverAttachError, RecvError};
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::Fields;
use fe2o3_amqp::types::definitions::{ReceiverSettleMode, SenderSettleMode};
use fe2o3_amqp::types::messaging::{Body, Source};
use fe2o3_amqp::types::primitives::{Symbol, Value};
use fe2o3_amqp::{Receiver, Session};
use futures_util::FutureExt;
use serde_amqp::described::Described;
use serde_amqp::descriptor::Descriptor;

use super::client::{EventHubClient, LiveConnection};
use super::error::{from_amqp, reason, EventHubsError};
use super::event::{decode, ReceivedEvent};

const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
const EPOCH_PROPERTY: &str = "com.microsoft:epoch";

/// Where a receiver starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPosition {
    Earliest,
    Latest,
    Offset {
        offset: String,
        inclusive: bool,
    },
    SequenceNumber {
        sequence_number: i64,
        inclusive: bool,
    },
    EnqueuedTime {
        enqueued_time_ms: i64,
        inclusive: bool,
    },
}

impl EventPosition {
    /// The selector filter expression the service understands.
    pub fn filter_expression(&self) -> String {
        let op = |inclusive: bool| if inclusive { ">=" } else { ">" };
        match self {
            EventPosition::Earliest => "amqp.annotation.x-opt-offset > '-1'".to_owned(),
            EventPosition::Latest => "amqp.annotation.x-opt-offset > '@latest'".to_owned(),
            EventPosition::Offset { offset, inclusive } => {
                format!("amqp.annotation.x-opt-offset {} '{offset}'", op(*inclusive))
            }
            EventPosition::SequenceNumber {
                sequence_number,
                inclusive,
            } => format!(
                "amqp.annotation.x-opt-sequence-number {} '{sequence_number}'",
                op(*inclusive)
            ),
            EventPosition::EnqueuedTime {
                enqueued_time_ms,
                inclusive,
            } => format!(
                "amqp.annotation.x-opt-enqueued-time {} '{enqueued_time_ms}'",
                op(*inclusive)
            ),
        }
    }
}

/// Receiver options that do not change between attaches.
#[derive(Debug, Clone, Copy)]
pub struct ReceiverOptions {
    /// Credit kept outstanding: how many events the service may send ahead.
    pub prefetch: u32,
    /// Bytes the service may send ahead, at the event sizes seen so far.
    pub prefetch_bytes: u64,
    /// `com.microsoft:epoch`; `None` attaches a non-epoch receiver.
    pub owner_level: Option<i64>,
}

#[derive(Debug)]
pub struct PartitionReceiver {
    partition_id: String,
    receiver: Receiver,
    session: SessionHandle<()>,
    connection: Arc<LiveConnection>,
    budget: CreditBudget,
}

impl EventHubClient {
    pub async fn open_receiver(
        &self,
        partition_id: &str,
        position: &EventPosition,
        options: ReceiverOptions,
    ) -> Result<PartitionReceiver, EventHubsError> {
        let connection = self.connection().await?;
        let lost = |e: String| EventHubsError::ConnectionLost { reason: e };
        let window = (options.prefetch * 2).max(64);
        let mut session = {
            let mut handle = connection.handle.lock().await;
            Session::builder()
                .incoming_window(window)
                .outgoing_window(window)
                .begin(&mut handle)
                .await
        };
        let mut session = match session.as_mut() {
            Ok(_) => session.map_err(|e| lost(reason(e)))?,
            Err(_) => {
                connection.mark_broken();
                return Err(lost(reason(session.unwrap_err())));
            }
        };
        let address = format!(
            "{}/ConsumerGroups/{}/Partitions/{partition_id}",
            self.settings.event_hub, self.settings.consumer_group
        );
        let filter = Some(Described {
            descriptor: Descriptor::Name(Symbol::from(SELECTOR_FILTER)),
            value: Value::String(position.filter_expression()),
        });
        let source = Source::builder()
            .address(address.clone())
            .add_to_filter(Symbol::from(SELECTOR_FILTER), filter)
            .build();
        let mut properties = Fields::new();
        if let Some(epoch) = options.owner_level {
            properties.insert(Symbol::from(EPOCH_PROPERTY), Value::Long(epoch));
        }
        let attached = Receiver::builder()
            .name(format!("hubcap-{partition_id}-{}", uuid::Uuid::new_v4()))
            .source(source)
            .target(format!("hubcap-receiver-{partition_id}"))
            .sender_settle_mode(SenderSettleMode::Settled)
            .receiver_settle_mode(ReceiverSettleMode::First)
            .properties(properties)
            .credit_mode(CreditMode::Manual)
            .attach(&mut session)
            .await;
        let mut receiver = match attached {
            Ok(receiver) => receiver,
            Err(error) => {
                let _ = session.end().await;
                return Err(attach_error(error, &connection));
            }
        };
        let mut budget = CreditBudget::new(options.prefetch, options.prefetch_bytes);
        let credit = budget.credit();
        if let Err(error) = receiver.set_credit(credit).await {
            return Err(lost(reason(error)));
        }
        budget.granted(credit);
        Ok(PartitionReceiver {
            partition_id: partition_id.to_owned(),
            receiver,
            session,
            connection,
            budget,
        })
    }
}

impl PartitionReceiver {
    pub fn partition_id(&self) -> &str {
        &self.partition_id
    }

    /// Waits for at least one event, then takes every event already buffered, up to `max`.
    /// Cancel-safe: dropping the future loses no event (events already taken are in `out`)
    /// and no credit (a top-up interrupted half-way is redone by the next call).
    pub async fn recv_batch(
        &mut self,
        max: usize,
        out: &mut Vec<ReceivedEvent>,
    ) -> Result<(), EventHubsError> {
        self.top_up_credit().await?;
        let first = self.receiver.recv::<Body<Value>>().await;
        self.take(first, out)?;
        while out.len() < max {
            match self.receiver.recv::<Body<Value>>().now_or_never() {
                Some(next) => self.take(next, out)?,
                None => break,
            }
        }
        self.top_up_credit().await
    }

    /// Sends a flow when [`CreditBudget::grant`] asks for one. The budget learns of it only
    /// after the flow went out, so an interrupted top-up is retried.
    async fn top_up_credit(&mut self) -> Result<(), EventHubsError> {
        if let Some(credit) = self.budget.grant() {
            self.receiver
                .set_credit(credit)
                .await
                .map_err(|e| self.link_error(RecvError::from(e)))?;
            self.budget.granted(credit);
        }
        Ok(())
    }

    fn take(
        &mut self,
        delivery: Result<fe2o3_amqp::Delivery<Body<Value>>, RecvError>,
        out: &mut Vec<ReceivedEvent>,
    ) -> Result<(), EventHubsError> {
        let delivery = delivery.map_err(|e| self.link_error(e))?;
        let message = delivery.into_message();
        let event = decode(message).map_err(|e| EventHubsError::Protocol {
            reason: format!("partition {}: {e}", self.partition_id),
        })?;
        self.budget.delivered(event.approximate_size());
        out.push(event);
        Ok(())
    }

    fn link_error(&self, error: RecvError) -> EventHubsError {
        match error {
            RecvError::LinkStateError(state) => {
                use fe2o3_amqp::link::LinkStateError as S;
                match state {
                    S::RemoteDetachedWithError(e) | S::RemoteClosedWithError(e) => {
                        from_amqp("receive", &e)
                    }
                    S::RemoteDetached | S::RemoteClosed => EventHubsError::Amqp {
                        context: "receive",
                        condition: "amqp:link:detach-forced".into(),
                        description: "the service detached the link without an error".into(),
                    },
                    other => {
                        self.connection.mark_broken();
                        EventHubsError::ConnectionLost {
                            reason: reason(other),
                        }
                    }
                }
            }
            other => EventHubsError::Protocol {
                reason: reason(other),
            },
        }
    }

    /// Detaches the link and ends its session.
    pub async fn close(mut self) {
        let _ = self.receiver.close().await;
        let _ = self.session.end().await;
    }
}

/// The credit a receiver keeps granted: `prefetch` events, or as many as fit in
/// `prefetch_bytes` at the size of the events seen lately, whichever is smaller (at least one).
///
/// Event sizes are tracked as a decaying maximum, so one large event cuts the next grant and
/// the credit recovers over the next few hundred smaller ones. Before the first event the size
/// is unknown and a large one is assumed.
///
/// Credit is never taken back: a grant smaller than the credit outstanding would be legal AMQP,
/// but the service may already have sent those transfers, and fe2o3 fails the link on a
/// transfer beyond its local credit. So after a switch to larger events the credit already
/// granted (at most `prefetch` events) still arrives, and the next grant is the small one.
#[derive(Debug, Clone)]
pub(crate) struct CreditBudget {
    prefetch: u32,
    prefetch_bytes: u64,
    /// Decaying maximum of recent event sizes; `None` before the first event.
    event_bytes: Option<u64>,
    /// Credit the service still holds: granted and not yet used by a delivery.
    outstanding: u32,
}

impl CreditBudget {
    /// The size assumed before any event was seen.
    const FIRST_GUESS_BYTES: u64 = 64 << 10;
    /// Each event moves the tracked maximum this fraction of the way down.
    const DECAY: u64 = 64;

    pub(crate) fn new(prefetch: u32, prefetch_bytes: u64) -> Self {
        CreditBudget {
            prefetch: prefetch.max(1),
            prefetch_bytes,
            event_bytes: None,
            outstanding: 0,
        }
    }

    /// A delivery arrived: it used one credit and weighed `bytes`.
    pub(crate) fn delivered(&mut self, bytes: usize) {
        self.outstanding = self.outstanding.saturating_sub(1);
        let bytes = bytes as u64;
        self.event_bytes = Some(match self.event_bytes {
            None => bytes,
            Some(tracked) if bytes >= tracked => bytes,
            Some(tracked) => tracked - (tracked - bytes) / Self::DECAY,
        });
    }

    /// The credit wanted now.
    pub(crate) fn credit(&self) -> u32 {
        let event_bytes = self.event_bytes.unwrap_or(Self::FIRST_GUESS_BYTES).max(1);
        let fits = (self.prefetch_bytes / event_bytes).max(1);
        u32::try_from(fits).unwrap_or(u32::MAX).min(self.prefetch)
    }

    /// The credit to grant, if a flow should go out: once no more than half of the wanted
    /// credit is outstanding. The grant is then never below what is outstanding.
    pub(crate) fn grant(&self) -> Option<u32> {
        let credit = self.credit();
        (self.outstanding <= credit / 2).then_some(credit)
    }

    /// The service now holds `credit` (a flow with that link credit went out).
    pub(crate) fn granted(&mut self, credit: u32) {
        self.outstanding = credit;
    }
}

fn attach_error(error: ReceiverAttachError, connection: &LiveConnection) -> EventHubsError {
    match error {
        ReceiverAttachError::RemoteClosedWithError(e) => from_amqp("attach", &e),
        other => {
            connection.mark_broken();
            EventHubsError::ConnectionLost {
                reason: reason(other),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget whose grant went out, after `sizes` were delivered.
    fn budget_after(prefetch: u32, sizes: &[usize]) -> CreditBudget {
        let mut budget = CreditBudget::new(prefetch, 1 << 20);
        budget.granted(budget.credit());
        for &size in sizes {
            budget.delivered(size);
        }
        budget
    }

    #[test]
    fn credit_is_the_event_count_for_small_events() {
        assert_eq!(budget_after(300, &[1100]).credit(), 300);
    }

    #[test]
    fn credit_shrinks_to_the_byte_budget_for_large_events() {
        let mut budget = budget_after(300, &[64 << 10]);
        assert_eq!(budget.credit(), 16);
        budget.delivered(4 << 20);
        assert_eq!(budget.credit(), 1, "never less than one event");
    }

    #[test]
    fn before_the_first_event_a_large_size_is_assumed() {
        assert_eq!(CreditBudget::new(300, 1 << 20).credit(), 16);
        assert_eq!(CreditBudget::new(5, 1 << 20).credit(), 5);
    }

    #[test]
    fn one_large_event_cuts_credit_at_once_and_it_recovers_gradually() {
        let mut budget = budget_after(300, &[1000, 512 << 10]);
        assert_eq!(budget.credit(), 2);
        for _ in 0..64 {
            budget.delivered(1000);
        }
        let partly = budget.credit();
        assert!(
            partly > 2 && partly < 300,
            "credit after 64 small events: {partly}"
        );
        for _ in 0..1000 {
            budget.delivered(1000);
        }
        assert_eq!(budget.credit(), 300);
    }

    #[test]
    fn a_flow_goes_out_once_half_the_credit_is_used() {
        let mut budget = CreditBudget::new(10, 1 << 20);
        budget.delivered(100);
        assert_eq!(budget.grant(), Some(10), "nothing granted yet");
        budget.granted(10);
        for _ in 0..4 {
            budget.delivered(100);
        }
        assert_eq!(budget.grant(), None, "6 of 10 still outstanding");
        budget.delivered(100);
        assert_eq!(budget.grant(), Some(10));
    }

    #[test]
    fn the_first_small_events_raise_the_credit_without_waiting_for_half() {
        // 16 granted for unknown sizes; once events turn out small the wanted credit is 300,
        // and the 16 outstanding are far below half of it.
        let mut budget = CreditBudget::new(300, 1 << 20);
        budget.granted(budget.credit());
        budget.delivered(1000);
        assert_eq!(budget.grant(), Some(300));
    }

    #[test]
    fn after_a_switch_to_larger_events_the_small_grant_waits_for_the_outstanding_credit() {
        let mut budget = budget_after(300, &[1000]);
        budget.granted(300);
        budget.delivered(256 << 10);
        assert_eq!(budget.grant(), None, "299 outstanding, never taken back");
        for _ in 0..297 {
            budget.delivered(256 << 10);
        }
        assert_eq!(budget.grant(), Some(4), "2 outstanding, 4 wanted");
    }

    #[test]
    fn a_credit_of_one_is_granted_again_after_each_event() {
        let mut budget = CreditBudget::new(1, 1 << 20);
        budget.granted(1);
        assert_eq!(budget.grant(), None);
        budget.delivered(100);
        assert_eq!(budget.grant(), Some(1));
    }

    #[test]
    fn filter_expressions_match_the_python_sdk_forms() {
        assert_eq!(
            EventPosition::Earliest.filter_expression(),
            "amqp.annotation.x-opt-offset > '-1'"
        );
        assert_eq!(
            EventPosition::Latest.filter_expression(),
            "amqp.annotation.x-opt-offset > '@latest'"
        );
        assert_eq!(
            EventPosition::Offset {
                offset: "4096".into(),
                inclusive: false
            }
            .filter_expression(),
            "amqp.annotation.x-opt-offset > '4096'"
        );
        assert_eq!(
            EventPosition::SequenceNumber {
                sequence_number: 7,
                inclusive: true
            }
            .filter_expression(),
            "amqp.annotation.x-opt-sequence-number >= '7'"
        );
        assert_eq!(
            EventPosition::EnqueuedTime {
                enqueued_time_ms: 1_700_000_000_000,
                inclusive: false
            }
            .filter_expression(),
            "amqp.annotation.x-opt-enqueued-time > '1700000000000'"
        );
    }
}
