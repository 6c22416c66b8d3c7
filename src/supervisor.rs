//! The supervisor: balancing cycles, partition tasks, and the drain on shutdown.
//!
//! Every `update_interval` (plus up to 20% jitter, so replicas do not write in lock-step) it
//! lists the ownership records, plans with [`crate::balance`], renews the leases it holds,
//! claims what the plan says, and starts one [`PartitionTask`] per newly owned partition. On
//! shutdown it stops claiming, lets every task commit and checkpoint within the drain timeout,
//! and releases the partitions so other instances take them over at their next cycle.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::balance::{self, BalanceInput, Strategy};
use crate::checkpoint::{
    Checkpoint, CheckpointStore, CommitRecord, Ownership, OwnershipClaim, Store, StoreError,
};
use crate::eventhubs::{EventHubClient, EventHubsError, EventPosition};
use crate::health::Health;
use crate::lease::{CheckpointError, CommitJournal, OwnershipLease};
use crate::metrics::Metrics;
use crate::partition::{PartitionExit, PartitionSettings, PartitionTask};
use crate::recovery::Retry;
use crate::sink::{Sink, WindowNames, WindowSettings};

#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// This instance's id in ownership records.
    pub owner_id: String,
    pub strategy: Strategy,
    pub update_interval: Duration,
    pub ownership_expiration: Duration,
    /// Where partitions without a checkpoint start.
    pub start_position: EventPosition,
    pub window: WindowSettings,
    pub partition: PartitionSettings,
    /// How long shutdown waits for partitions to commit and checkpoint.
    pub drain_timeout: Duration,
    /// Names the sink substitutes into paths.
    pub names: Arc<WindowNames>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(transparent)]
    EventHubs(#[from] EventHubsError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Supervisor {
    pub client: Arc<EventHubClient>,
    pub store: Arc<Store>,
    pub sink: Sink,
    pub settings: SupervisorSettings,
    pub metrics: Metrics,
    pub health: Arc<Health>,
}

/// A partition this instance holds.
struct Owned {
    lease: Arc<OwnershipLease>,
    stop: CancellationToken,
}

impl Supervisor {
    /// Runs until `shutdown` is cancelled (then drains) or a fatal error.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SupervisorError> {
        let mut rng = StdRng::from_entropy();
        let Some(partition_ids) = self.partition_ids(&shutdown).await? else {
            return Ok(());
        };
        info!(owner_id = %self.settings.owner_id, partitions = partition_ids.len(), "supervisor started");
        let mut owned: HashMap<String, Owned> = HashMap::new();
        // Partitions lost to another reader, and when: not claimed again until the ownership
        // expiration has passed, so a reader that took the partition outside the store (a
        // higher epoch) is not fought every cycle, and the record can expire for other
        // instances.
        let mut cooldown: HashMap<String, tokio::time::Instant> = HashMap::new();
        // Partitions whose link was taken while their record stayed ours, retried at once (see
        // `reap`), and until when a second such loss means a cooldown.
        let mut retried: HashMap<String, tokio::time::Instant> = HashMap::new();
        let mut tasks: JoinSet<(String, PartitionExit)> = JoinSet::new();
        let mut next_cycle = tokio::time::Instant::now();
        let mut fatal = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_cycle) => {
                    if let Err(error) = self.cycle(&partition_ids, &mut owned, &mut tasks, &cooldown, &mut rng).await {
                        warn!(error = %error, "balancing cycle failed; retrying next cycle");
                    }
                    let jitter = rng.gen_range(0.0..0.2);
                    next_cycle = tokio::time::Instant::now() + self.settings.update_interval.mul_f64(1.0 + jitter);
                }
                Some(joined) = tasks.join_next() => {
                    if let Some(error) = self.reap(joined, &mut owned, &mut cooldown, &mut retried) {
                        fatal = Some(error);
                        break;
                    }
                }
                _ = shutdown.cancelled() => break,
            }
        }
        self.drain(owned, tasks).await;
        match fatal {
            Some(error) => Err(error.into()),
            None => Ok(()),
        }
    }

    /// The hub's partition ids, retried until they come or the error cannot be retried.
    async fn partition_ids(
        &self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Vec<String>>, SupervisorError> {
        let partition = &self.settings.partition;
        let client = &self.client;
        let properties = Retry::new(partition.retry_min_backoff, partition.retry_max_backoff)
            .run(
                || client.event_hub_properties(),
                EventHubsError::recovery,
                |error| warn!(error = %error, error_type = error.kind(), "cannot read the event hub's partitions; retrying"),
                shutdown.cancelled(),
            )
            .await;
        match properties {
            None => Ok(None),
            Some(Ok(properties)) => {
                self.health.eventhubs_reachable();
                Ok(Some(properties.partition_ids))
            }
            Some(Err(error)) => Err(error.into()),
        }
    }

    async fn cycle(
        &self,
        partition_ids: &[String],
        owned: &mut HashMap<String, Owned>,
        tasks: &mut JoinSet<(String, PartitionExit)>,
        cooldown: &HashMap<String, tokio::time::Instant>,
        rng: &mut StdRng,
    ) -> Result<(), StoreError> {
        for (partition_id, held) in owned.iter() {
            match held.lease.renew(&self.store).await {
                Ok(()) => {}
                Err(CheckpointError::Lost { .. }) => {
                    info!(partition_id = %partition_id, event = "stolen", "ownership renewal refused: another instance owns it now");
                }
                Err(CheckpointError::Store(error)) => {
                    warn!(partition_id = %partition_id, error = %error, "ownership renewal failed");
                }
            }
        }
        if self.client.is_connected() {
            self.health.eventhubs_reachable();
        }
        let ownerships = self.store.list_ownership().await?;
        self.health.store_reachable();
        let plan = balance::plan(
            &BalanceInput {
                partition_ids,
                ownerships: &ownerships,
                me: &self.settings.owner_id,
                now: SystemTime::now(),
                ownership_expiration: self.settings.ownership_expiration,
                strategy: self.settings.strategy,
            },
            rng,
        );
        let mut claims = claims_to_make(
            plan.renewals.into_iter().chain(plan.claims),
            |id| owned.contains_key(id),
            cooldown,
            tokio::time::Instant::now(),
        );
        // A claim carries over the commit record it replaces: the window the previous owner
        // was committing is this instance's to resolve now, and must not be forgotten if this
        // instance fails before it does.
        for claim in &mut claims {
            claim.commit = ownerships
                .iter()
                .find(|o| o.partition_id == claim.partition_id)
                .and_then(|o| o.commit.clone());
        }
        if claims.is_empty() {
            return Ok(());
        }
        let won = self.store.claim_ownership(&claims).await?;
        if won.is_empty() {
            return Ok(());
        }
        let checkpoints = self.store.list_checkpoint_versions().await?;
        for ownership in won {
            let previous = ownerships
                .iter()
                .find(|o| o.partition_id == ownership.partition_id);
            let kind = match previous {
                _ if plan.stolen.contains(&ownership.partition_id) => "stolen",
                Some(o) if !o.owner_id.is_empty() && o.owner_id != self.settings.owner_id => {
                    "expired"
                }
                _ => "claimed",
            };
            self.metrics.ownership_change(kind);
            info!(partition_id = %ownership.partition_id, event = kind, owner_id = %self.settings.owner_id, "partition claimed");
            let checkpoint = checkpoints
                .iter()
                .find(|(c, _)| c.partition_id == ownership.partition_id);
            self.start_partition(ownership, checkpoint, owned, tasks);
        }
        Ok(())
    }

    fn start_partition(
        &self,
        ownership: Ownership,
        checkpoint: Option<&(Checkpoint, String)>,
        owned: &mut HashMap<String, Owned>,
        tasks: &mut JoinSet<(String, PartitionExit)>,
    ) {
        let partition_id = ownership.partition_id.clone();
        let (checkpoint, checkpoint_version) = match checkpoint {
            Some((checkpoint, version)) => (Some(checkpoint), Some(version.clone())),
            None => (None, None),
        };
        let (start, expected_sequence_number, resume) = resume_point(
            checkpoint,
            ownership.commit.as_ref(),
            &self.settings.start_position,
        );
        if let Some(record) = &resume {
            info!(partition_id = %partition_id, event = "reproducing_recorded_window", name = %record.name, first_sequence_number = record.first_sequence_number,
                last_sequence_number = record.last_sequence_number,
                "completing the window the previous owner was committing");
        }
        let lease = Arc::new(OwnershipLease::new(ownership, checkpoint_version));
        let stop = CancellationToken::new();
        let mut sink = self.sink.open_partition(
            &partition_id,
            self.settings.window,
            Arc::clone(&self.settings.names),
            Some(CommitJournal::new(
                Arc::clone(&lease),
                Arc::clone(&self.store),
            )),
        );
        if let Some(record) = resume {
            sink.resume(record);
        }
        let task = PartitionTask {
            client: Arc::clone(&self.client),
            store: Arc::clone(&self.store),
            lease: Arc::clone(&lease),
            sink,
            settings: self.settings.partition.clone(),
            start,
            expected_sequence_number,
            stop: stop.clone(),
            metrics: self.metrics.partition(&partition_id),
            health: Arc::clone(&self.health),
        };
        let id = partition_id.clone();
        tasks.spawn(async move { (id, task.run().await) });
        owned.insert(partition_id, Owned { lease, stop });
        self.metrics.set_owned_partitions(owned.len());
    }

    /// Handles a finished partition task; returns a fatal error that must stop the process.
    fn reap(
        &self,
        joined: Result<(String, PartitionExit), tokio::task::JoinError>,
        owned: &mut HashMap<String, Owned>,
        cooldown: &mut HashMap<String, tokio::time::Instant>,
        retried: &mut HashMap<String, tokio::time::Instant>,
    ) -> Option<EventHubsError> {
        let (partition_id, exit) = match joined {
            Ok(result) => result,
            Err(join_error) => {
                error!(error = %join_error, "a partition task panicked");
                return None;
            }
        };
        let held = owned.remove(&partition_id);
        self.metrics.set_owned_partitions(owned.len());
        self.health.remove_partition(&partition_id);
        match exit {
            PartitionExit::Lost => {
                self.metrics.ownership_change("lost");
                let now = tokio::time::Instant::now();
                retried.retain(|_, until| *until > now);
                // The link was taken but the record is still ours: at start-up, a reader whose
                // claim another instance overwrote a moment later attaches once before its
                // renewal tells it so, and takes the rightful owner's link. Claiming the
                // partition again at the next cycle takes the link back (that reader has given
                // up by then); only a second such loss, a reader outside the store, waits out
                // the cooldown. Without this the partition stays unread until the record
                // expires.
                let record_still_ours = held.is_some_and(|held| !held.lease.is_lost());
                if record_still_ours && !retried.contains_key(&partition_id) {
                    retried.insert(
                        partition_id.clone(),
                        now + self.settings.ownership_expiration * 2,
                    );
                    info!(partition_id = %partition_id, event = "lost",
                        "partition task stopped: its link was taken while the ownership stays ours; claiming it again next cycle");
                    return None;
                }
                cooldown.retain(|_, until| *until > now);
                cooldown.insert(
                    partition_id.clone(),
                    now + self.settings.ownership_expiration,
                );
                info!(partition_id = %partition_id, event = "lost", "partition task stopped: ownership lost");
                None
            }
            PartitionExit::Drained => None,
            PartitionExit::Fatal(error) => {
                error!(partition_id = %partition_id, error = %error, "partition failed with an error that retrying cannot fix");
                Some(error)
            }
        }
    }

    async fn drain(
        &self,
        owned: HashMap<String, Owned>,
        mut tasks: JoinSet<(String, PartitionExit)>,
    ) {
        info!(
            partitions = owned.len(),
            "draining: committing open windows"
        );
        self.health.set_draining();
        for held in owned.values() {
            held.stop.cancel();
        }
        let deadline = tokio::time::Instant::now() + self.settings.drain_timeout;
        let mut drained = Vec::new();
        loop {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(Ok((partition_id, PartitionExit::Drained))) => drained.push(partition_id),
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    warn!(remaining = tasks.len(), "drain timeout: stopping without committing the remaining windows; they will be read again");
                    tasks.shutdown().await;
                    break;
                }
            }
        }
        for partition_id in drained {
            if let Some(held) = owned.get(&partition_id) {
                match held.lease.release(&self.store).await {
                    Ok(()) => {
                        self.metrics.ownership_change("released");
                        info!(partition_id = %partition_id, event = "released", "partition released");
                    }
                    Err(error) => {
                        warn!(partition_id = %partition_id, error = %error, "cannot release the partition; it will expire")
                    }
                }
            }
        }
    }
}

/// What a cycle claims of the plan. Records that name this instance without a running task (a
/// restart with a fixed owner id) are claimed like any other partition. A partition with a
/// running task is never claimed again, even when its record looks expired (renewals slower
/// than the expiration): a second task would read it twice and delete the first one's staging;
/// its lease renews it at the next cycle, or finds it taken. A partition lost a moment ago waits
/// out its cooldown.
fn claims_to_make(
    planned: impl Iterator<Item = OwnershipClaim>,
    running: impl Fn(&str) -> bool,
    cooldown: &HashMap<String, tokio::time::Instant>,
    now: tokio::time::Instant,
) -> Vec<OwnershipClaim> {
    planned
        .filter(|c| !running(&c.partition_id))
        .filter(|c| {
            cooldown
                .get(&c.partition_id)
                .is_none_or(|until| *until <= now)
        })
        .collect()
}

/// Where a newly owned partition starts, the sequence number its first event should have, and
/// the recorded window it must reproduce first.
///
/// A commit record the checkpoint has not reached (the previous owner stopped between writing
/// it and checkpointing) means that window may or may not be in the archive: reading restarts
/// at its first event, and the window is rebuilt under the record's name, which lets only one
/// copy in. A record the checkpoint reached is done. A checkpoint inside the recorded range was
/// moved by someone else (a tool, an SDK processor): the record no longer applies.
pub fn resume_point(
    checkpoint: Option<&Checkpoint>,
    commit: Option<&CommitRecord>,
    default: &EventPosition,
) -> (EventPosition, Option<i64>, Option<CommitRecord>) {
    let checkpointed = checkpoint.and_then(|c| c.sequence_number);
    match commit {
        Some(record) if checkpointed.is_none_or(|n| n < record.first_sequence_number) => (
            EventPosition::SequenceNumber {
                sequence_number: record.first_sequence_number,
                inclusive: true,
            },
            Some(record.first_sequence_number),
            Some(record.clone()),
        ),
        _ => {
            let (start, expected) = start_after(checkpoint, default);
            (start, expected, None)
        }
    }
}

/// The start position after a checkpoint (its offset, else its sequence number, exclusive),
/// and the sequence number the first event should then have.
pub fn start_after(
    checkpoint: Option<&Checkpoint>,
    default: &EventPosition,
) -> (EventPosition, Option<i64>) {
    let expected = checkpoint.and_then(|c| c.sequence_number).map(|n| n + 1);
    match checkpoint {
        Some(Checkpoint {
            offset: Some(offset),
            ..
        }) if !offset.is_empty() => (
            EventPosition::Offset {
                offset: offset.clone(),
                inclusive: false,
            },
            expected,
        ),
        Some(Checkpoint {
            sequence_number: Some(sequence_number),
            ..
        }) => (
            EventPosition::SequenceNumber {
                sequence_number: *sequence_number,
                inclusive: false,
            },
            expected,
        ),
        _ => (default.clone(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint(offset: Option<&str>, sequence_number: Option<i64>) -> Checkpoint {
        Checkpoint {
            partition_id: "0".into(),
            offset: offset.map(str::to_owned),
            sequence_number,
            committed_in: None,
        }
    }

    #[test]
    fn resumes_after_the_offset_else_the_sequence_number_else_the_default() {
        let default = EventPosition::Latest;
        assert_eq!(
            start_after(Some(&checkpoint(Some("512"), Some(4))), &default),
            (
                EventPosition::Offset {
                    offset: "512".into(),
                    inclusive: false
                },
                Some(5)
            )
        );
        assert_eq!(
            start_after(Some(&checkpoint(None, Some(4))), &default),
            (
                EventPosition::SequenceNumber {
                    sequence_number: 4,
                    inclusive: false
                },
                Some(5)
            )
        );
        assert_eq!(
            start_after(Some(&checkpoint(Some(""), None)), &default),
            (default.clone(), None)
        );
        assert_eq!(start_after(None, &default), (default.clone(), None));
    }

    #[test]
    fn a_commit_record_past_the_checkpoint_is_reproduced_and_one_it_reached_is_done() {
        let default = EventPosition::Earliest;
        let record = CommitRecord {
            first_sequence_number: 10,
            last_sequence_number: 19,
            name: "w.avro".into(),
        };
        let reproduce = (
            EventPosition::SequenceNumber {
                sequence_number: 10,
                inclusive: true,
            },
            Some(10),
            Some(record.clone()),
        );
        // Crash between the record and the checkpoint, and a first window never checkpointed.
        let before = checkpoint(Some("900"), Some(9));
        assert_eq!(
            resume_point(Some(&before), Some(&record), &default),
            reproduce
        );
        assert_eq!(resume_point(None, Some(&record), &default), reproduce);
        // A checkpoint moved back (a late write of an older one) changes nothing.
        let older = checkpoint(Some("100"), Some(3));
        assert_eq!(
            resume_point(Some(&older), Some(&record), &default),
            reproduce
        );
        // Checkpointed: done; inside the range: someone else moved it, the record is void.
        for reached in [
            checkpoint(Some("990"), Some(19)),
            checkpoint(Some("995"), Some(25)),
            checkpoint(Some("950"), Some(14)),
        ] {
            let (start, expected) = start_after(Some(&reached), &default);
            assert_eq!(
                resume_point(Some(&reached), Some(&record), &default),
                (start, expected, None)
            );
        }
        assert_eq!(
            resume_point(None, None, &default),
            (default.clone(), None, None)
        );
    }

    #[test]
    fn running_partitions_and_cooling_down_ones_are_never_claimed() {
        let claim = |id: &str| OwnershipClaim {
            partition_id: id.into(),
            owner_id: "me".into(),
            version: Some("v".into()),
            commit: None,
        };
        let now = tokio::time::Instant::now();
        let cooldown = HashMap::from([
            ("2".to_owned(), now + Duration::from_secs(5)),
            ("3".to_owned(), now - Duration::from_secs(1)),
        ]);
        let claims = claims_to_make(
            ["0", "1", "2", "3"].into_iter().map(claim),
            |id| id == "1",
            &cooldown,
            now,
        );
        let ids: Vec<_> = claims.iter().map(|c| c.partition_id.as_str()).collect();
        assert_eq!(ids, ["0", "3"]);
    }
}
