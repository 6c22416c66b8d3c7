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

/// The right to checkpoint one partition. Both the supervisor's renewals and the partition's
/// checkpoints go through it, so the version used for each compare-and-swap is always current.
#[derive(Debug)]
pub struct OwnershipLease {
    pub partition_id: String,
    /// The record as last written by this instance; the lock serialises renewals and
    /// checkpoints.
    ownership: Mutex<Ownership>,
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
}

impl OwnershipLease {
    pub fn new(ownership: Ownership) -> Self {
        Self {
            partition_id: ownership.partition_id.clone(),
            ownership: Mutex::new(ownership),
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

    /// Writes `checkpoint` only if this instance still owns the partition.
    pub async fn checkpoint(
        &self,
        store: &Store,
        checkpoint: &Checkpoint,
    ) -> Result<(), CheckpointError> {
        let mut ownership = self.ownership.lock().await;
        self.renew_locked(store, &mut ownership).await?;
        store.update_checkpoint(checkpoint).await?;
        Ok(())
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
