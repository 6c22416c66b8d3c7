//! The checkpoint store in Azure Blob Storage, in the official SDKs' layout, so hubcap shares
//! state with (and takes over from) Python, .NET, Java, Go and Rust event processors.
//!
//! Each record is an empty block blob named `<fqns>/<hub>/<consumer group>/ownership/<id>` or
//! `.../checkpoint/<id>`; all state is in metadata: `ownerid` on ownerships, `offset` and
//! `sequencenumber` on checkpoints. An ownership's time is the blob's Last-Modified and its
//! version the blob's ETag (without quotes).
//!
//! The HTTP sequence is the Python store's (see `reference/eventhubs-protocol.md` §9):
//! - claim with a version: Set Blob Metadata `{ownerid}` + `If-Match: <etag>`; 412 or 404 means
//!   another writer got there first and the claim is left out of the result;
//! - claim without a version: Put Blob (empty) `{ownerid}` + `If-None-Match: *`; 409 or 412 =
//!   lost. Never Set Blob Metadata with `If-None-Match: *`: Azurite ignores that condition;
//! - checkpoint: Set Blob Metadata `{offset, sequencenumber}` unconditionally, and Put Blob if
//!   the blob does not exist yet (hubcap's pipeline uses the conditional form instead: `If-Match`
//!   on the ETag it last saw, or Put Blob with `If-None-Match: *`). An absent value is written as `""`, as .NET does, so every
//!   reader finds both keys.
//!
//! hubcap's own keys (the commit record on ownerships, `hubcapcommitted` on checkpoints) are
//! defined in [`super::schema`].

use std::collections::HashMap;

use futures_util::{stream, StreamExt as _};

use super::{
    Checkpoint, CheckpointStore, ListedCheckpoint, NameCase, Ownership, OwnershipClaim, RecordKind,
    StoreError, StoreScope,
};
use crate::storage::{BlobContainer, Condition, StorageError, Written};

use super::schema::{self, CommitRecord, COMMITTED_IN, OFFSET, OWNER_ID, SEQUENCE_NUMBER};
/// Claims in flight at once: one balancing cycle claims every owned partition.
const CONCURRENT_CLAIMS: usize = 16;

/// A [`CheckpointStore`] in a blob container. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobCheckpointStore {
    /// The container holding the records.
    container: BlobContainer,
    /// The consumer group whose records this store reads and writes.
    scope: StoreScope,
    /// Casing of blob names; must match the other processors sharing the container.
    case: NameCase,
}

/// How one claim ended.
enum ClaimOutcome {
    Won(Ownership),
    /// Another writer changed or created the record first.
    Lost,
}

impl BlobCheckpointStore {
    /// A store for `scope` in `container`. Does no I/O.
    pub fn new(container: BlobContainer, scope: StoreScope, case: NameCase) -> Self {
        Self {
            container,
            scope,
            case,
        }
    }

    /// The records of one kind as `(partition id, blob)`. Blobs nested deeper than a partition
    /// id are not records.
    async fn list(
        &self,
        kind: RecordKind,
    ) -> Result<Vec<(String, crate::storage::BlobItem)>, StoreError> {
        let prefix = self.scope.prefix(kind, self.case);
        let items = self
            .container
            .list_with_metadata(&prefix)
            .await
            .map_err(store_error)?;
        Ok(items
            .into_iter()
            .filter_map(|item| {
                let partition_id = item.name.strip_prefix(&prefix)?.to_owned();
                let is_record = !partition_id.is_empty() && !partition_id.contains('/');
                is_record.then_some((partition_id, item))
            })
            .collect())
    }

    /// The blob name of one partition's record, refusing ids that are not one name segment.
    fn record_name(&self, kind: RecordKind, partition_id: &str) -> Result<String, StoreError> {
        if partition_id.is_empty() || partition_id.contains('/') {
            return Err(StoreError::Refused {
                reason: format!("partition id {partition_id:?} cannot name a blob record"),
            });
        }
        Ok(self.scope.record_name(kind, partition_id, self.case))
    }

    /// A record's compare-and-swap: Set Blob Metadata with `If-Match: <version>`, or, without a
    /// version, Put Blob (empty) with `If-None-Match: *` (never Set Blob Metadata with that
    /// condition: Azurite ignores it).
    ///
    /// A 412 or 409 is checked against the record before it is believed: when the client's
    /// retry follows a try that was applied but answered with an error (a 500, a cut
    /// connection), the retry's condition fails on our own write. If the record holds exactly
    /// what was written, the write landed and its ETag is the record's; otherwise another
    /// writer changed it.
    async fn write_if(
        &self,
        name: &str,
        metadata: &HashMap<String, String>,
        version: Option<&str>,
    ) -> Result<Written, StorageError> {
        let written = match version {
            Some(etag) => {
                self.container
                    .set_metadata(name, metadata, Condition::IfMatch(etag.to_owned()))
                    .await
            }
            None => {
                self.container
                    .upload_empty(name, metadata, Condition::IfNoneMatchAny)
                    .await
            }
        };
        match written {
            Err(
                lost @ (StorageError::ConditionNotMet { .. } | StorageError::AlreadyExists { .. }),
            ) => match self.container.get_properties(name).await? {
                Some(record) if same_metadata(&record.metadata, metadata) => Ok(Written {
                    etag: record.etag,
                    last_modified: record.last_modified,
                }),
                _ => Err(lost),
            },
            other => other,
        }
    }

    async fn claim_one(&self, claim: &OwnershipClaim) -> Result<ClaimOutcome, StoreError> {
        let name = self.record_name(RecordKind::Ownership, &claim.partition_id)?;
        let mut metadata = HashMap::from([(OWNER_ID.to_owned(), claim.owner_id.clone())]);
        if let Some(commit) = &claim.commit {
            commit.write(&mut metadata);
        }
        match self
            .write_if(&name, &metadata, claim.version.as_deref())
            .await
        {
            Ok(Written {
                etag,
                last_modified,
            }) => Ok(ClaimOutcome::Won(Ownership {
                partition_id: claim.partition_id.clone(),
                owner_id: claim.owner_id.clone(),
                last_modified,
                version: etag,
                commit: claim.commit.clone(),
            })),
            Err(StorageError::ConditionNotMet { .. } | StorageError::AlreadyExists { .. }) => {
                Ok(ClaimOutcome::Lost)
            }
            // The record vanished since it was read: whoever deleted it did not leave it to us.
            Err(StorageError::NotFound { .. }) if claim.version.is_some() => Ok(ClaimOutcome::Lost),
            Err(err) => Err(store_error(err)),
        }
    }
}

impl CheckpointStore for BlobCheckpointStore {
    async fn list_ownership(&self) -> Result<Vec<Ownership>, StoreError> {
        let records = self.list(RecordKind::Ownership).await?;
        Ok(records
            .into_iter()
            .map(|(partition_id, item)| Ownership {
                partition_id,
                owner_id: item.metadata.get(OWNER_ID).cloned().unwrap_or_default(),
                commit: CommitRecord::read(&item.metadata),
                last_modified: item.last_modified,
                version: item.etag,
            })
            .collect())
    }

    /// Claims run concurrently. A claim that fails for another reason than a lost race is left
    /// out like a lost one (as the Python store does) and logged; only when every claim failed
    /// is the first failure returned, so a dead store is not mistaken for lost races.
    async fn claim_ownership(
        &self,
        claims: &[OwnershipClaim],
    ) -> Result<Vec<Ownership>, StoreError> {
        // Collected first: a closure inside the stream trips rustc's higher-ranked Send check.
        let attempts: Vec<_> = claims.iter().map(|claim| self.claim_one(claim)).collect();
        let outcomes: Vec<_> = stream::iter(attempts)
            .buffered(CONCURRENT_CLAIMS)
            .collect()
            .await;
        let mut won = Vec::new();
        let mut first_error = None;
        let mut answered = false;
        for (claim, outcome) in claims.iter().zip(outcomes) {
            match outcome {
                Ok(ClaimOutcome::Won(ownership)) => {
                    answered = true;
                    won.push(ownership);
                }
                Ok(ClaimOutcome::Lost) => {
                    answered = true;
                    tracing::debug!(
                        partition_id = %claim.partition_id,
                        owner_id = %claim.owner_id,
                        "ownership claim lost to another writer"
                    );
                }
                Err(err) => {
                    tracing::warn!(
                        partition_id = %claim.partition_id,
                        error = %err,
                        "ownership claim failed"
                    );
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) if !answered => Err(err),
            _ => Ok(won),
        }
    }

    async fn list_checkpoint_records(&self) -> Result<Vec<ListedCheckpoint>, StoreError> {
        let records = self.list(RecordKind::Checkpoint).await?;
        records
            .into_iter()
            .map(|(partition_id, item)| {
                let value = |key: &str| {
                    item.metadata
                        .get(key)
                        .filter(|value| !value.is_empty())
                        .cloned()
                };
                let sequence_number = value(SEQUENCE_NUMBER)
                    .map(|text| {
                        text.parse::<i64>().map_err(|_| StoreError::InvalidRecord {
                            name: item.name.clone(),
                            reason: format!("sequencenumber {text:?} is not an integer"),
                        })
                    })
                    .transpose()?;
                let checkpoint = Checkpoint {
                    partition_id,
                    offset: value(OFFSET),
                    sequence_number,
                    committed_in: value(COMMITTED_IN).and_then(|name| schema::decode_name(&name)),
                };
                Ok(ListedCheckpoint {
                    checkpoint,
                    version: item.etag.clone(),
                    // The listing reports the epoch when the service left the time out.
                    last_modified: Some(item.last_modified)
                        .filter(|time| *time != std::time::SystemTime::UNIX_EPOCH),
                })
            })
            .collect()
    }

    /// Set Blob Metadata with `If-Match`, or Put Blob with `If-None-Match: *` for a record that
    /// should not exist yet; 412, 409 or 404 = changed by another writer.
    async fn swap_checkpoint(
        &self,
        checkpoint: &Checkpoint,
        expected: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let name = self.record_name(RecordKind::Checkpoint, &checkpoint.partition_id)?;
        let metadata = checkpoint_metadata(checkpoint);
        match self.write_if(&name, &metadata, expected).await {
            Ok(written) => Ok(Some(written.etag)),
            Err(
                StorageError::ConditionNotMet { .. }
                | StorageError::AlreadyExists { .. }
                | StorageError::NotFound { .. },
            ) => Ok(None),
            Err(err) => Err(store_error(err)),
        }
    }

    async fn update_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let name = self.record_name(RecordKind::Checkpoint, &checkpoint.partition_id)?;
        let metadata = checkpoint_metadata(checkpoint);
        match self
            .container
            .set_metadata(&name, &metadata, Condition::None)
            .await
        {
            Ok(_) => Ok(()),
            Err(StorageError::NotFound { .. }) => self
                .container
                .upload_empty(&name, &metadata, Condition::None)
                .await
                .map(drop)
                .map_err(store_error),
            Err(err) => Err(store_error(err)),
        }
    }
}

/// Whether a record's metadata is what was written (keys lower-cased by the listing; an empty
/// value is the same as an absent one, as services may drop either).
fn same_metadata(record: &HashMap<String, String>, written: &HashMap<String, String>) -> bool {
    let present = |metadata: &HashMap<String, String>| -> HashMap<String, String> {
        metadata
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(key, value)| (key.to_ascii_lowercase(), value.clone()))
            .collect()
    };
    present(record) == present(written)
}

/// A checkpoint's metadata: the SDKs' keys (an absent value as `""`, as .NET writes it, so every
/// reader finds both) and hubcap's.
fn checkpoint_metadata(checkpoint: &Checkpoint) -> HashMap<String, String> {
    let mut metadata = HashMap::from([
        (
            OFFSET.to_owned(),
            checkpoint.offset.clone().unwrap_or_default(),
        ),
        (
            SEQUENCE_NUMBER.to_owned(),
            checkpoint
                .sequence_number
                .map(|number| number.to_string())
                .unwrap_or_default(),
        ),
    ]);
    if let Some(name) = &checkpoint.committed_in {
        metadata.insert(COMMITTED_IN.to_owned(), schema::encode_name(name));
    }
    metadata
}

/// Transient storage failures are worth retrying; everything else needs a person.
fn store_error(err: StorageError) -> StoreError {
    if err.is_transient() {
        StoreError::Unavailable {
            reason: err.to_string(),
            retry_after: err.retry_after(),
        }
    } else {
        StoreError::Refused {
            reason: err.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn a_record_is_ours_only_if_it_holds_exactly_what_was_written() {
        let written = metadata(&[("ownerid", "a"), ("offset", ""), ("sequencenumber", "7")]);
        assert!(same_metadata(
            &metadata(&[("ownerid", "a"), ("sequencenumber", "7")]),
            &written
        ));
        assert!(same_metadata(
            &metadata(&[("OwnerId", "a"), ("offset", ""), ("sequencenumber", "7")]),
            &written
        ));
        assert!(!same_metadata(
            &metadata(&[("ownerid", "b"), ("sequencenumber", "7")]),
            &written
        ));
        assert!(!same_metadata(
            &metadata(&[("ownerid", "a"), ("sequencenumber", "8")]),
            &written
        ));
        // Another writer's extra key (a commit record) means it is not our write.
        assert!(!same_metadata(
            &metadata(&[
                ("ownerid", "a"),
                ("sequencenumber", "7"),
                ("hubcapcommitlast", "9")
            ]),
            &written
        ));
    }
}
