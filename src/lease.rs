//! The ownership lease: the fence that keeps a former owner from checkpointing.
//!
//! Both the supervisor's periodic renewals and the partition task's checkpoints go through one
//! [`OwnershipLease`] per owned partition. A checkpoint is written only after a compare-and-swap
//! renewal of the ownership record succeeds, under the lease's lock, so:
//!
//! - once another instance has written the record (steal, or claim after expiry), the renewal's
//!   version no longer matches, the lease is marked lost for good, and no checkpoint follows;
//! - a stealer must first read the record (at its next cycle) to get a version it can swap, so
//!   our renewal-then-write pair is not interleaved with a steal in practice; the window is the
//!   duration of one checkpoint write.
//!
//! The lease also keeps the partition's commit record ([`CommitRecord`]): every write of the
//! ownership record carries it, so a renewal never erases it, and [`CommitJournal::record`]
//! replaces it (a compare-and-swap like any renewal) before a window is committed.

use std::sync::Arc;

use tokio::sync::Mutex;

use crate::recovery::Recovery;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{
    Checkpoint, CheckpointStore, CommitRecord, Ownership, OwnershipClaim, Store, StoreError,
};

/// Compare-and-swap attempts of one checkpoint write before it reports the store unavailable.
const CHECKPOINT_SWAP_ATTEMPTS: usize = 3;

/// The right to checkpoint one partition. Both the supervisor's renewals and the partition's
/// checkpoints go through it, so the version used for each compare-and-swap is always current.
#[derive(Debug)]
pub struct OwnershipLease {
    pub partition_id: String,
    /// The record as last written by this instance; the lock serialises renewals and
    /// checkpoints.
    ownership: Mutex<Ownership>,
    /// The checkpoint record's version as last seen or written (`None`: there is none yet):
    /// checkpoints are a compare-and-swap on it, taken under the `ownership` lock.
    checkpoint_version: Mutex<Option<String>>,
    /// Cancelled for good when a renewal finds the partition owned by someone else.
    lost: CancellationToken,
}

/// Why a checkpoint was not written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("partition {partition_id} is no longer owned by this instance")]
    Lost { partition_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CheckpointError {
    /// See [`crate::recovery`]: a lost compare-and-swap loses the partition; a store that
    /// fails (unreachable, or refusing) is retried.
    pub fn recovery(&self) -> Recovery {
        match self {
            CheckpointError::Lost { .. } => Recovery::PartitionLost,
            CheckpointError::Store(_) => Recovery::Retry,
        }
    }

    /// A bounded label for metrics and `/readyz`: the store's error kind, or `lost`.
    pub fn kind(&self) -> &'static str {
        match self {
            CheckpointError::Lost { .. } => "lost",
            CheckpointError::Store(error) => error.kind(),
        }
    }

    /// How long the store asked to wait before the next try, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            CheckpointError::Lost { .. } => None,
            CheckpointError::Store(error) => error.retry_after(),
        }
    }
}

impl OwnershipLease {
    /// The lease of a just-claimed `ownership`; `checkpoint_version` is the version of the
    /// partition's checkpoint record read after the claim (`None` if it has none).
    pub fn new(ownership: Ownership, checkpoint_version: Option<String>) -> Self {
        Self {
            partition_id: ownership.partition_id.clone(),
            ownership: Mutex::new(ownership),
            checkpoint_version: Mutex::new(checkpoint_version),
            lost: CancellationToken::new(),
        }
    }

    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Renews the ownership (compare-and-swap on the last version); marks the lease lost if
    /// another instance wrote the record since.
    pub async fn renew(&self, store: &Store) -> Result<(), CheckpointError> {
        let mut ownership = self.ownership.lock().await;
        self.renew_locked(store, &mut ownership).await
    }

    async fn renew_locked(
        &self,
        store: &Store,
        ownership: &mut Ownership,
    ) -> Result<(), CheckpointError> {
        let commit = ownership.commit.clone();
        self.write_locked(store, ownership, commit).await
    }

    /// Writes the ownership record with `commit` (compare-and-swap on the last version).
    async fn write_locked(
        &self,
        store: &Store,
        ownership: &mut Ownership,
        commit: Option<CommitRecord>,
    ) -> Result<(), CheckpointError> {
        if self.lost.is_cancelled() {
            return Err(self.lost_error());
        }
        let claim = OwnershipClaim {
            partition_id: ownership.partition_id.clone(),
            owner_id: ownership.owner_id.clone(),
            version: Some(ownership.version.clone()),
            commit,
        };
        let won = store.claim_ownership(std::slice::from_ref(&claim)).await?;
        match won.into_iter().next() {
            Some(renewed) => {
                *ownership = renewed;
                Ok(())
            }
            None => {
                self.lost.cancel();
                Err(self.lost_error())
            }
        }
    }

    /// Writes `checkpoint` only if this instance still owns the partition: a renewal, then a
    /// compare-and-swap on the checkpoint's version. If the checkpoint changed since (a former
    /// owner paused between its renewal and its write, whose late write landed), a record
    /// behind ours is overwritten; one ahead of ours means another instance has read further,
    /// and the partition is lost.
    pub async fn checkpoint(
        &self,
        store: &Store,
        checkpoint: &Checkpoint,
    ) -> Result<(), CheckpointError> {
        let mut ownership = self.ownership.lock().await;
        self.renew_locked(store, &mut ownership).await?;
        let mut version = self.checkpoint_version.lock().await;
        for _ in 0..CHECKPOINT_SWAP_ATTEMPTS {
            if let Some(written) = store
                .swap_checkpoint(checkpoint, version.as_deref())
                .await?
            {
                *version = Some(written);
                return Ok(());
            }
            let current = store
                .list_checkpoint_versions()
                .await?
                .into_iter()
                .find(|(c, _)| c.partition_id == checkpoint.partition_id);
            let ahead =
                |found: &Checkpoint| match (found.sequence_number, checkpoint.sequence_number) {
                    (Some(found), Some(ours)) => found > ours,
                    _ => false,
                };
            match current {
                Some((found, _)) if ahead(&found) => {
                    tracing::warn!(partition_id = %self.partition_id, found = ?found.sequence_number,
                        ours = ?checkpoint.sequence_number, "the checkpoint is ahead of this instance's: another instance reads the partition");
                    self.lost.cancel();
                    return Err(self.lost_error());
                }
                Some((_, found_version)) => *version = Some(found_version),
                None => *version = None,
            }
        }
        Err(CheckpointError::Store(StoreError::Unavailable {
            reason: format!(
                "the checkpoint of partition {} kept changing under this instance's writes",
                self.partition_id
            ),
            retry_after: None,
        }))
    }

    /// Gives the partition up (`ownerid = ""`) so another instance can claim it at once.
    pub async fn release(&self, store: &Store) -> Result<(), CheckpointError> {
        let mut ownership = self.ownership.lock().await;
        if self.lost.is_cancelled() {
            return Ok(());
        }
        let claim = OwnershipClaim {
            partition_id: ownership.partition_id.clone(),
            owner_id: String::new(),
            version: Some(ownership.version.clone()),
            // Kept: if the last window's checkpoint did not land, the next owner resolves it.
            commit: ownership.commit.clone(),
        };
        let released = store.claim_ownership(std::slice::from_ref(&claim)).await?;
        self.lost.cancel();
        if let Some(record) = released.into_iter().next() {
            *ownership = record;
        }
        Ok(())
    }

    /// The commit record the ownership holds now.
    pub async fn commit_record(&self) -> Option<CommitRecord> {
        self.ownership.lock().await.commit.clone()
    }

    fn lost_error(&self) -> CheckpointError {
        CheckpointError::Lost {
            partition_id: self.partition_id.clone(),
        }
    }
}

/// What a sink calls before committing a window: writes the window's [`CommitRecord`] into the
/// partition's ownership record, through the lease. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CommitJournal {
    lease: Arc<OwnershipLease>,
    store: Arc<Store>,
}

impl CommitJournal {
    pub fn new(lease: Arc<OwnershipLease>, store: Arc<Store>) -> Self {
        Self { lease, store }
    }

    /// Records that `record` is about to be committed. Fails with
    /// [`CheckpointError::Lost`] once another instance owns the partition: the window must then
    /// not be committed (its new owner completes it).
    pub async fn record(&self, record: &CommitRecord) -> Result<(), CheckpointError> {
        let mut ownership = self.lease.ownership.lock().await;
        self.lease
            .write_locked(&self.store, &mut ownership, Some(record.clone()))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::file::FileCheckpointStore;
    use crate::checkpoint::{NameCase, StoreScope};

    fn store(root: &std::path::Path) -> Arc<Store> {
        let scope = StoreScope {
            fully_qualified_namespace: "ns".into(),
            event_hub: "hub".into(),
            consumer_group: "$default".into(),
        };
        Arc::new(Store::File(
            FileCheckpointStore::open(root, scope, NameCase::Lower).unwrap(),
        ))
    }

    async fn claimed(store: &Store) -> OwnershipLease {
        let claim = OwnershipClaim {
            partition_id: "0".into(),
            owner_id: "me".into(),
            version: None,
            commit: None,
        };
        let won = store.claim_ownership(&[claim]).await.unwrap();
        OwnershipLease::new(won.into_iter().next().unwrap(), None)
    }

    fn at(sequence_number: i64) -> Checkpoint {
        Checkpoint {
            partition_id: "0".into(),
            offset: Some(sequence_number.to_string()),
            sequence_number: Some(sequence_number),
            committed_in: None,
        }
    }

    async fn checkpointed(store: &Store) -> Option<i64> {
        store.list_checkpoints().await.unwrap()[0].sequence_number
    }

    #[tokio::test]
    async fn a_late_write_of_an_older_checkpoint_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let lease = claimed(&store).await;
        lease.checkpoint(&store, &at(10)).await.unwrap();
        // A former owner, paused between its renewal and its write, writes an older one.
        store.update_checkpoint(&at(4)).await.unwrap();
        lease.checkpoint(&store, &at(20)).await.unwrap();
        assert_eq!(checkpointed(&store).await, Some(20));
        assert!(!lease.is_lost());
    }

    #[tokio::test]
    async fn a_checkpoint_ahead_of_ours_loses_the_partition_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let lease = claimed(&store).await;
        lease.checkpoint(&store, &at(10)).await.unwrap();
        store.update_checkpoint(&at(90)).await.unwrap();
        assert!(matches!(
            lease.checkpoint(&store, &at(20)).await,
            Err(CheckpointError::Lost { .. })
        ));
        assert!(lease.is_lost());
        assert_eq!(checkpointed(&store).await, Some(90));
    }

    #[tokio::test]
    async fn renewals_and_the_release_carry_the_commit_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let lease = Arc::new(claimed(&store).await);
        let record = CommitRecord {
            first_sequence_number: 1,
            last_sequence_number: 2,
            name: "w.avro".into(),
        };
        let journal = CommitJournal::new(Arc::clone(&lease), Arc::clone(&store));
        journal.record(&record).await.unwrap();
        lease.renew(&store).await.unwrap();
        lease.checkpoint(&store, &at(0)).await.unwrap();
        lease.release(&store).await.unwrap();
        let listed = store.list_ownership().await.unwrap();
        assert_eq!(
            (listed[0].owner_id.as_str(), listed[0].commit.as_ref()),
            ("", Some(&record))
        );
        assert_eq!(lease.commit_record().await, Some(record));
    }
}
