//! Which consumers read which partition: the service's epoch (owner level) rules.
//!
//! - a receiver with epoch E displaces every receiver on the partition whose epoch is <= E and
//!   every non-epoch receiver (`amqp:link:stolen`);
//! - a receiver with a lower epoch than an existing one is refused (`amqp:link:stolen`);
//! - a non-epoch receiver is refused while an epoch receiver exists (`amqp:link:stolen`);
//! - at most five non-epoch receivers per partition and consumer group
//!   (`amqp:resource-limit-exceeded`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use crate::faults::LinkFault;

pub const MAX_NON_EPOCH_RECEIVERS: usize = 5;
pub const LINK_STOLEN: &str = "amqp:link:stolen";
pub const RESOURCE_LIMIT_EXCEEDED: &str = "amqp:resource-limit-exceeded";

/// Identifies one partition of one consumer group; names lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub hub: String,
    pub consumer_group: String,
    pub partition: String,
}

impl PartitionKey {
    pub fn new(hub: &str, consumer_group: &str, partition: &str) -> Self {
        Self {
            hub: hub.to_lowercase(),
            consumer_group: consumer_group.to_lowercase(),
            partition: partition.to_owned(),
        }
    }
}

#[derive(Debug)]
struct ActiveReceiver {
    id: u64,
    epoch: Option<i64>,
    /// Tells the receiver's link task to detach with this error.
    kick: mpsc::UnboundedSender<LinkFault>,
    /// Set to make the link stop delivering while staying attached (a stuck link).
    stalled: Arc<AtomicBool>,
}

/// Every active consumer link, by partition.
#[derive(Debug, Default)]
pub struct ReceiverRegistry {
    receivers: Mutex<HashMap<PartitionKey, Vec<ActiveReceiver>>>,
    next_id: AtomicU64,
}

/// Held by a consumer link task for as long as the link is up; deregisters on drop.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<ReceiverRegistry>,
    key: PartitionKey,
    id: u64,
    /// Faults and steals addressed to this link.
    pub kicked: mpsc::UnboundedReceiver<LinkFault>,
    stalled: Arc<AtomicBool>,
}

impl Registration {
    /// Whether fault injection froze this link: attached, but delivering nothing.
    pub fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut receivers = self.registry.lock();
        if let Some(list) = receivers.get_mut(&self.key) {
            list.retain(|r| r.id != self.id);
            if list.is_empty() {
                receivers.remove(&self.key);
            }
        }
    }
}

impl ReceiverRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<PartitionKey, Vec<ActiveReceiver>>> {
        self.receivers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Admits a new receiver under the epoch rules, displacing the receivers it outranks.
    pub fn register(
        self: &Arc<Self>,
        key: PartitionKey,
        epoch: Option<i64>,
    ) -> Result<Registration, LinkFault> {
        let mut receivers = self.lock();
        let list = receivers.entry(key.clone()).or_default();
        let highest_epoch = list.iter().filter_map(|r| r.epoch).max();
        match (epoch, highest_epoch) {
            (Some(new), Some(existing)) if new < existing => {
                return Err(LinkFault::new(
                    LINK_STOLEN,
                    format!(
                        "A receiver with a higher epoch '{existing}' already exists. A new receiver with epoch {new} cannot be created. Make sure you are creating receiver with increasing epoch value to ensure connectivity, or ensure all old epoch receivers are closed or disconnected."
                    ),
                ));
            }
            (None, Some(existing)) => {
                return Err(LinkFault::new(
                    LINK_STOLEN,
                    format!(
                        "At least one receiver for the endpoint is created with epoch of '{existing}', and so non-epoch receiver is not allowed. Either reconnect with a higher epoch, or make sure all epoch receivers are closed or disconnected."
                    ),
                ));
            }
            (None, None) if list.len() >= MAX_NON_EPOCH_RECEIVERS => {
                return Err(LinkFault::new(
                    RESOURCE_LIMIT_EXCEEDED,
                    format!(
                        "Exceeded the maximum number of allowed receivers per partition in a consumer group which is {MAX_NON_EPOCH_RECEIVERS}."
                    ),
                ));
            }
            (Some(new), _) => {
                for displaced in list.drain(..) {
                    let description = match displaced.epoch {
                        Some(old) => format!(
                            "New receiver 'nil' with higher epoch of '{new}' is created hence current receiver 'nil' with epoch '{old}' is getting disconnected. If you are recreating the receiver, make sure a higher epoch is used."
                        ),
                        None => format!(
                            "New receiver 'nil' with higher epoch of '{new}' is created hence current receiver 'nil' with epoch 'nil' is getting disconnected."
                        ),
                    };
                    // A receiver whose task already ended has dropped its channel; nothing to tell.
                    let _ = displaced
                        .kick
                        .send(LinkFault::new(LINK_STOLEN, description));
                }
            }
            (None, None) => {}
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (kick, kicked) = mpsc::unbounded_channel();
        let stalled = Arc::new(AtomicBool::new(false));
        list.push(ActiveReceiver {
            id,
            epoch,
            kick,
            stalled: Arc::clone(&stalled),
        });
        Ok(Registration {
            registry: Arc::clone(self),
            key,
            id,
            kicked,
            stalled,
        })
    }

    /// Sends `fault` to every receiver of the matching partitions; returns how many were told.
    pub fn kick(&self, matches: impl Fn(&PartitionKey) -> bool, fault: &LinkFault) -> usize {
        let receivers = self.lock();
        receivers
            .iter()
            .filter(|(key, _)| matches(key))
            .flat_map(|(_, list)| list.iter())
            .filter(|r| r.kick.send(fault.clone()).is_ok())
            .count()
    }

    /// Freezes the links attached now to the matching partitions (links attached later are
    /// not affected); returns how many. A frozen link delivers nothing until it is detached.
    pub fn stall(&self, matches: impl Fn(&PartitionKey) -> bool) -> usize {
        let receivers = self.lock();
        receivers
            .iter()
            .filter(|(key, _)| matches(key))
            .flat_map(|(_, list)| list.iter())
            .inspect(|r| r.stalled.store(true, Ordering::Relaxed))
            .count()
    }

    /// How many receivers are attached to a partition (for tests and diagnostics).
    pub fn count(&self, key: &PartitionKey) -> usize {
        self.lock().get(key).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PartitionKey {
        PartitionKey::new("Hub1", "$Default", "0")
    }

    #[test]
    fn equal_or_higher_epoch_steals_from_the_current_owner() {
        let registry = Arc::new(ReceiverRegistry::default());
        let mut first = registry.register(key(), Some(0)).unwrap();
        let _second = registry.register(key(), Some(0)).unwrap();
        let fault = first.kicked.try_recv().unwrap();
        assert_eq!(fault.condition, LINK_STOLEN);
        assert!(fault.description.contains("higher epoch of '0'"));
        let _third = registry.register(key(), Some(5)).unwrap();
        assert_eq!(registry.count(&key()), 1);
    }

    #[test]
    fn lower_epoch_and_non_epoch_are_refused_while_an_epoch_receiver_exists() {
        let registry = Arc::new(ReceiverRegistry::default());
        let _owner = registry.register(key(), Some(3)).unwrap();
        let lower = registry.register(key(), Some(2)).unwrap_err();
        assert_eq!(lower.condition, LINK_STOLEN);
        let non_epoch = registry.register(key(), None).unwrap_err();
        assert_eq!(non_epoch.condition, LINK_STOLEN);
        assert!(non_epoch
            .description
            .contains("non-epoch receiver is not allowed"));
    }

    #[test]
    fn an_epoch_receiver_disconnects_non_epoch_receivers() {
        let registry = Arc::new(ReceiverRegistry::default());
        let mut plain = registry.register(key(), None).unwrap();
        let _owner = registry.register(key(), Some(0)).unwrap();
        assert_eq!(plain.kicked.try_recv().unwrap().condition, LINK_STOLEN);
    }

    #[test]
    fn at_most_five_non_epoch_receivers_per_partition() {
        let registry = Arc::new(ReceiverRegistry::default());
        let held: Vec<_> = (0..5)
            .map(|_| registry.register(key(), None).unwrap())
            .collect();
        let refused = registry.register(key(), None).unwrap_err();
        assert_eq!(refused.condition, RESOURCE_LIMIT_EXCEEDED);
        // Another partition or consumer group is unaffected.
        assert!(registry
            .register(PartitionKey::new("hub1", "other", "0"), None)
            .is_ok());
        drop(held);
        assert_eq!(registry.count(&key()), 0);
        assert!(registry.register(key(), None).is_ok());
    }

    #[test]
    fn kick_reaches_only_matching_partitions() {
        let registry = Arc::new(ReceiverRegistry::default());
        let mut p0 = registry.register(key(), None).unwrap();
        let mut p1 = registry
            .register(PartitionKey::new("hub1", "$default", "1"), None)
            .unwrap();
        let fault = LinkFault::new("com.microsoft:server-busy", "busy");
        assert_eq!(registry.kick(|k| k.partition == "0", &fault), 1);
        assert!(p0.kicked.try_recv().is_ok());
        assert!(p1.kicked.try_recv().is_err());
    }
}
