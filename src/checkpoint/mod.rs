//! Partition ownership and checkpoints, in the layout of the official SDKs' checkpoint stores.
//!
//! Records are named `<fully-qualified-namespace>/<event hub>/<consumer group>/ownership/<id>`
//! and `.../checkpoint/<id>`; an ownership holds `ownerid` (`""` = released), a checkpoint holds
//! `offset` and `sequencenumber`. Every ownership write is a compare-and-swap on the record's
//! version (a blob ETag, a file generation), which is what keeps two instances from owning one
//! partition. The pipeline fences its checkpoint writes by renewing its ownership (a
//! compare-and-swap) immediately before, under the partition's ownership lock, and writes them
//! as a compare-and-swap on the checkpoint's own version too ([`CheckpointStore::swap_checkpoint`]),
//! so a writer paused between the two cannot move a newer owner's checkpoint back.
//!
//! hubcap adds a few keys of its own (the exactly-once commit protocol's records, see
//! [`schema`]); the SDKs ignore keys they do not know, and drop them when they write a record.

pub mod blob;
pub mod file;
pub mod schema;

pub use schema::CommitRecord;

use std::future::Future;
use std::time::SystemTime;

/// Which records a store reads and writes: one consumer group of one event hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreScope {
    /// Namespace host as the clients know it, e.g. `myns.servicebus.windows.net` (Python keeps a
    /// `:port` if the endpoint had one).
    pub fully_qualified_namespace: String,
    /// Event hub name.
    pub event_hub: String,
    /// Consumer group name.
    pub consumer_group: String,
}

/// How record names are cased: the Python/.NET/JS stores lower-case the whole name, the
/// Go/Java/Rust stores keep it verbatim, so two processors share state only with the same casing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameCase {
    #[default]
    Lower,
    Verbatim,
}

impl StoreScope {
    /// `<fqns>/<hub>/<cg>/<kind>/` with the store's casing.
    pub fn prefix(&self, kind: RecordKind, case: NameCase) -> String {
        let prefix = format!(
            "{}/{}/{}/{}/",
            self.fully_qualified_namespace,
            self.event_hub,
            self.consumer_group,
            kind.as_str()
        );
        match case {
            NameCase::Lower => prefix.to_lowercase(),
            NameCase::Verbatim => prefix,
        }
    }

    /// The full record name for one partition.
    pub fn record_name(&self, kind: RecordKind, partition_id: &str, case: NameCase) -> String {
        let name = format!("{}{}", self.prefix(kind, NameCase::Verbatim), partition_id);
        match case {
            NameCase::Lower => name.to_lowercase(),
            NameCase::Verbatim => name,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    Ownership,
    Checkpoint,
}

impl RecordKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Ownership => "ownership",
            RecordKind::Checkpoint => "checkpoint",
        }
    }
}

/// An ownership record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ownership {
    pub partition_id: String,
    /// The owning processor's id; empty when the partition was released.
    pub owner_id: String,
    /// When the record was last written (the blob's Last-Modified): ownership expires after
    /// `ownership_expiration` without a renewal.
    pub last_modified: SystemTime,
    /// Opaque version for compare-and-swap (blob ETag, file generation).
    pub version: String,
    /// The window its owner was committing when it last wrote the record (see [`schema`]).
    pub commit: Option<CommitRecord>,
}

impl Ownership {
    /// How long ago the record was written; a record from the future (clock skew) counts as
    /// just written.
    pub fn age(&self, now: SystemTime) -> std::time::Duration {
        now.duration_since(self.last_modified).unwrap_or_default()
    }

    /// Whether an owner holds the partition: a non-empty owner id, written less than
    /// `expiration` ago. The balancer's rule, which the operator commands apply too.
    pub fn is_active(&self, now: SystemTime, expiration: std::time::Duration) -> bool {
        !self.owner_id.is_empty() && self.age(now) < expiration
    }
}

/// A request to own a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnershipClaim {
    pub partition_id: String,
    /// Who claims it; `""` releases the partition.
    pub owner_id: String,
    /// The version the claimer last saw: `None` creates the record and fails if one exists,
    /// `Some` succeeds only if the record still has that version.
    pub version: Option<String>,
    /// The commit record to keep in the ownership: a claim carries over the one it found, so a
    /// window the previous owner was committing is resolved by whoever owns the partition next.
    pub commit: Option<CommitRecord>,
}

/// Where a consumer resumes: the last event durably processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub partition_id: String,
    /// The event's offset, opaque (the SDKs resume from it first).
    pub offset: Option<String>,
    /// The event's sequence number (used when there is no offset).
    pub sequence_number: Option<i64>,
    /// hubcap only: the archive file or blob whose last event this is (see [`schema`]).
    pub committed_in: Option<String>,
}

/// A checkpoint record as listed: the checkpoint, its version and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCheckpoint {
    pub checkpoint: Checkpoint,
    /// Opaque version for compare-and-swap (blob ETag, file generation).
    pub version: String,
    /// When the record was last written (the blob's Last-Modified, the file's modification
    /// time); `None` when the store could not say. Operators read it as "how long since the
    /// consumer last moved its position".
    pub last_modified: Option<SystemTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with a transient failure: retry later.
    #[error("checkpoint store unavailable: {reason}")]
    Unavailable {
        reason: String,
        /// How long the store asked to be left alone (a throttled Blob Storage answer).
        retry_after: Option<std::time::Duration>,
    },
    /// The store refused the request (permissions, bad configuration): retrying will not help.
    #[error("checkpoint store refused the request: {reason}")]
    Refused { reason: String },
    /// A local store's filesystem failed (full, read-only, a device error): retried like
    /// `Unavailable`, labelled by what the operator must fix.
    #[error("checkpoint store cannot write ({error_type}): {reason}")]
    Disk {
        reason: String,
        /// [`crate::disk::error_type`]: `no_space`, `read_only`, `io_error`, ...
        error_type: &'static str,
    },
    /// A record exists but cannot be understood.
    #[error("checkpoint store record {name} is invalid: {reason}")]
    InvalidRecord { name: String, reason: String },
}

impl StoreError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Refused { .. } => "refused",
            StoreError::Disk { error_type, .. } => error_type,
            StoreError::InvalidRecord { .. } => "invalid_record",
        }
    }

    /// How long the store asked to wait before the next try, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            StoreError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// What hubcap needs from a checkpoint store. Implementations: [`file::FileCheckpointStore`]
/// (a local directory) and the Azure Blob store.
pub trait CheckpointStore: Send + Sync {
    /// Every ownership record of the scope, released ones included.
    fn list_ownership(&self) -> impl Future<Output = Result<Vec<Ownership>, StoreError>> + Send;

    /// Tries each claim as a compare-and-swap; returns the claims that succeeded, with their new
    /// versions and times. A claim lost to another writer is left out, not an error.
    fn claim_ownership(
        &self,
        claims: &[OwnershipClaim],
    ) -> impl Future<Output = Result<Vec<Ownership>, StoreError>> + Send;

    /// Every checkpoint record of the scope.
    fn list_checkpoints(&self) -> impl Future<Output = Result<Vec<Checkpoint>, StoreError>> + Send {
        async {
            let versioned = self.list_checkpoint_versions().await?;
            Ok(versioned
                .into_iter()
                .map(|(checkpoint, _)| checkpoint)
                .collect())
        }
    }

    /// Every checkpoint record of the scope with its version (for [`Self::swap_checkpoint`]).
    fn list_checkpoint_versions(
        &self,
    ) -> impl Future<Output = Result<Vec<(Checkpoint, String)>, StoreError>> + Send {
        async {
            let records = self.list_checkpoint_records().await?;
            Ok(records
                .into_iter()
                .map(|record| (record.checkpoint, record.version))
                .collect())
        }
    }

    /// Every checkpoint record of the scope with its version and write time.
    fn list_checkpoint_records(
        &self,
    ) -> impl Future<Output = Result<Vec<ListedCheckpoint>, StoreError>> + Send;

    /// Writes a checkpoint only if its record is still at `expected` (the version this writer
    /// last saw; `None`: the record must not exist yet). Returns the new version, or `None` when
    /// another writer changed the record first.
    fn swap_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        expected: Option<&str>,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Writes a checkpoint (creating the record if needed), durably before returning.
    fn update_checkpoint(
        &self,
        checkpoint: &Checkpoint,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The checkpoint stores hubcap has, as one closed type the pipeline holds.
#[derive(Debug)]
pub enum Store {
    File(file::FileCheckpointStore),
    Blob(blob::BlobCheckpointStore),
}

impl CheckpointStore for Store {
    async fn list_ownership(&self) -> Result<Vec<Ownership>, StoreError> {
        match self {
            Store::File(store) => store.list_ownership().await,
            Store::Blob(store) => store.list_ownership().await,
        }
    }

    async fn claim_ownership(
        &self,
        claims: &[OwnershipClaim],
    ) -> Result<Vec<Ownership>, StoreError> {
        match self {
            Store::File(store) => store.claim_ownership(claims).await,
            Store::Blob(store) => store.claim_ownership(claims).await,
        }
    }

    async fn list_checkpoint_records(&self) -> Result<Vec<ListedCheckpoint>, StoreError> {
        match self {
            Store::File(store) => store.list_checkpoint_records().await,
            Store::Blob(store) => store.list_checkpoint_records().await,
        }
    }

    async fn swap_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        expected: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        match self {
            Store::File(store) => store.swap_checkpoint(checkpoint, expected).await,
            Store::Blob(store) => store.swap_checkpoint(checkpoint, expected).await,
        }
    }

    async fn update_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        match self {
            Store::File(store) => store.update_checkpoint(checkpoint).await,
            Store::Blob(store) => store.update_checkpoint(checkpoint).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> StoreScope {
        StoreScope {
            fully_qualified_namespace: "MyNs.servicebus.windows.net".into(),
            event_hub: "Hub1".into(),
            consumer_group: "$Default".into(),
        }
    }

    #[test]
    fn names_follow_the_python_store_by_default_and_verbatim_on_request() {
        let scope = scope();
        assert_eq!(
            scope.record_name(RecordKind::Ownership, "0", NameCase::Lower),
            "myns.servicebus.windows.net/hub1/$default/ownership/0"
        );
        assert_eq!(
            scope.record_name(RecordKind::Checkpoint, "12", NameCase::Verbatim),
            "MyNs.servicebus.windows.net/Hub1/$Default/checkpoint/12"
        );
        assert_eq!(
            scope.prefix(RecordKind::Checkpoint, NameCase::Lower),
            "myns.servicebus.windows.net/hub1/$default/checkpoint/"
        );
    }
}
