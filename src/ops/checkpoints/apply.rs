//! How `set` and `import` write into a store that running processors share: refuse a partition
//! a live owner holds (unless forced), then take the partition, write, and give it back.
//!
//! 1. **Refuse** a partition whose ownership names an owner (`ownerid` non-empty) that renewed
//!    it within `[load_balancing] ownership_expiration`, naming that owner, unless `--force`.
//! 2. **Claim** every partition for this command (one compare-and-swap per record on the
//!    version just listed), already carrying the commit record the partition should have
//!    afterwards. From then on the previous owner's renewals fail, so its next fenced write
//!    (a checkpoint or a commit record, see [`crate::lease`]) is refused and it stops reading
//!    the partition; no other instance claims a partition whose owner is live. If a claim is
//!    lost (an instance renewed or claimed in between), the ones won are released with the
//!    records they had and nothing is written.
//! 3. **Write** each checkpoint (compare-and-swap, retried when another writer got there
//!    first), and read it back. The only writer that can still land a checkpoint is a
//!    previous owner that renewed just before step 2 and was between its renewal and its
//!    checkpoint write: it lands at most one write (its renewals fail after that), so a
//!    checkpoint found overwritten is written again.
//! 4. **Release** (`ownerid = ""`), so any instance or SDK processor claims the partition at
//!    its next cycle and starts from the new checkpoint. A released record is claimable at
//!    once, where a record naming a dead owner would hold the partition for the expiration.
//!
//! The commit record (`hubcapcommitfirst/last/name`, [`crate::checkpoint::schema`]) must go
//! with the checkpoint it belongs to: hubcap restarts at a recorded window's first event when
//! the checkpoint is before it ([`crate::supervisor::resume_point`]), which would ignore a
//! rewound checkpoint. `set` therefore clears it; `import` writes the one the document had.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;

use crate::checkpoint::{
    Checkpoint, CheckpointStore, CommitRecord, Ownership, OwnershipClaim, Store,
};

/// Rounds of list-and-claim before giving up: a live owner renewing between the listing and
/// the claim makes one round lose.
const CLAIM_ROUNDS: usize = 3;
/// Rounds of write-and-read-back of one checkpoint (see step 3 above).
const WRITE_ROUNDS: usize = 3;

/// What one partition should hold afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub partition_id: String,
    /// The checkpoint to write; `None` leaves the checkpoint record as it is.
    pub checkpoint: Option<Checkpoint>,
    /// The commit record the ownership holds afterwards (`None`: none).
    pub commit: Option<CommitRecord>,
}

/// Who holds a partition, as its ownership record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerState {
    /// No ownership record.
    NeverOwned,
    /// `ownerid` is `""`.
    Released,
    /// An owner, `since` its last renewal; `live` while that is within the expiration.
    Owned {
        owner_id: String,
        since: Duration,
        live: bool,
    },
}

impl OwnerState {
    pub fn of(ownership: Option<&Ownership>, now: SystemTime, expiration: Duration) -> Self {
        match ownership {
            None => Self::NeverOwned,
            Some(o) if o.owner_id.is_empty() => Self::Released,
            Some(o) => Self::Owned {
                owner_id: o.owner_id.clone(),
                since: o.age(now),
                live: o.is_active(now, expiration),
            },
        }
    }

    pub fn is_live(&self) -> bool {
        matches!(self, Self::Owned { live: true, .. })
    }
}

impl std::fmt::Display for OwnerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NeverOwned => f.write_str("never owned"),
            Self::Released => f.write_str("released"),
            Self::Owned {
                owner_id,
                since,
                live,
            } => write!(
                f,
                "{} owner {owner_id:?} (renewed {:.1} s ago)",
                if *live { "live" } else { "expired" },
                since.as_secs_f64()
            ),
        }
    }
}

/// What was found and done for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub partition_id: String,
    /// Who held it before.
    pub previous: OwnerState,
    /// The commit record it held before.
    pub previous_commit: Option<CommitRecord>,
}

/// Step 1 alone: what every partition of `partition_ids` holds, or an error naming each live
/// owner when `force` is off. Reads only.
pub async fn owner_states(
    store: &Store,
    partition_ids: &[String],
    expiration: Duration,
    force: bool,
) -> anyhow::Result<Vec<Applied>> {
    let ownerships = store
        .list_ownership()
        .await
        .context("reading the ownership records")?;
    let states = states_of(
        partition_ids.iter(),
        &ownerships,
        SystemTime::now(),
        expiration,
    );
    if !force {
        refuse_live(&states, expiration)?;
    }
    Ok(states)
}

/// What each partition's ownership record holds.
fn states_of<'a>(
    partition_ids: impl Iterator<Item = &'a String>,
    ownerships: &[Ownership],
    now: SystemTime,
    expiration: Duration,
) -> Vec<Applied> {
    partition_ids
        .map(|id| {
            let found = ownerships.iter().find(|o| &o.partition_id == id);
            Applied {
                partition_id: id.clone(),
                previous: OwnerState::of(found, now, expiration),
                previous_commit: found.and_then(|o| o.commit.clone()),
            }
        })
        .collect()
}

/// The refusal of step 1: every live owner, by partition.
fn refuse_live(states: &[Applied], expiration: Duration) -> anyhow::Result<()> {
    let live: Vec<String> = states
        .iter()
        .filter(|state| state.previous.is_live())
        .map(|state| format!("partition {}: {}", state.partition_id, state.previous))
        .collect();
    if live.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to write while a live owner holds the partition (ownership renewed within \
         the ownership_expiration of {} s), nothing written:\n  {}\nstop that consumer first \
         and wait for its ownership to be released or to expire, or pass --force to take the \
         partition from it (it stops reading and the next owner starts from the new checkpoint)",
        expiration.as_secs_f64(),
        live.join("\n  ")
    )
}

/// Steps 1 to 4 for every write, under the owner id `tool_owner`.
pub async fn apply(
    store: &Store,
    writes: &[Write],
    expiration: Duration,
    force: bool,
    tool_owner: &str,
) -> anyhow::Result<Vec<Applied>> {
    let (claimed, applied) = claim_all(store, writes, expiration, force, tool_owner).await?;
    let mut failure = None;
    for write in writes {
        if let Some(checkpoint) = &write.checkpoint {
            if let Err(error) = write_checkpoint(store, checkpoint).await {
                failure = Some(error);
                break;
            }
        }
    }
    // Released even after a failed write: holding the partitions would only stall them until
    // the claims expire. A partition whose checkpoint was not written keeps its old one, with
    // its old commit record.
    let releases: Vec<OwnershipClaim> = claimed
        .iter()
        .map(|ownership| {
            let write = writes
                .iter()
                .find(|w| w.partition_id == ownership.partition_id);
            let commit = match (&failure, write) {
                (None, Some(write)) => write.commit.clone(),
                _ => applied
                    .iter()
                    .find(|a| a.partition_id == ownership.partition_id)
                    .and_then(|a| a.previous_commit.clone()),
            };
            OwnershipClaim {
                partition_id: ownership.partition_id.clone(),
                owner_id: String::new(),
                version: Some(ownership.version.clone()),
                commit,
            }
        })
        .collect();
    let released = store.claim_ownership(&releases).await;
    if let Some(error) = failure {
        return Err(error);
    }
    let released = released.context("releasing the partitions after writing")?;
    if released.len() < releases.len() {
        let missing: Vec<&str> = releases
            .iter()
            .filter(|r| !released.iter().any(|o| o.partition_id == r.partition_id))
            .map(|r| r.partition_id.as_str())
            .collect();
        tracing::warn!(partitions = %missing.join(","), owner_id = %tool_owner,
            "could not release the partitions after writing; they are claimable once the ownership expires");
    }
    Ok(applied)
}

/// Steps 1 and 2: the claimed records and what each partition held before.
async fn claim_all(
    store: &Store,
    writes: &[Write],
    expiration: Duration,
    force: bool,
    tool_owner: &str,
) -> anyhow::Result<(Vec<Ownership>, Vec<Applied>)> {
    let mut lost = Vec::new();
    for _ in 0..CLAIM_ROUNDS {
        let ownerships = store
            .list_ownership()
            .await
            .context("reading the ownership records")?;
        let found = |id: &str| ownerships.iter().find(|o| o.partition_id == id);
        let applied = states_of(
            writes.iter().map(|w| &w.partition_id),
            &ownerships,
            SystemTime::now(),
            expiration,
        );
        if !force {
            refuse_live(&applied, expiration)?;
        }
        let claims: Vec<OwnershipClaim> = writes
            .iter()
            .map(|w| OwnershipClaim {
                partition_id: w.partition_id.clone(),
                owner_id: tool_owner.to_owned(),
                version: found(&w.partition_id).map(|o| o.version.clone()),
                commit: w.commit.clone(),
            })
            .collect();
        let won = store
            .claim_ownership(&claims)
            .await
            .context("claiming the partitions to write them")?;
        if won.len() == claims.len() {
            return Ok((won, applied));
        }
        // Give back what was won, as it was, and try again from a fresh listing.
        lost = claims
            .iter()
            .filter(|c| !won.iter().any(|o| o.partition_id == c.partition_id))
            .map(|c| c.partition_id.clone())
            .collect();
        let undo: Vec<OwnershipClaim> = won
            .iter()
            .map(|o| OwnershipClaim {
                partition_id: o.partition_id.clone(),
                owner_id: String::new(),
                version: Some(o.version.clone()),
                commit: found(&o.partition_id).and_then(|f| f.commit.clone()),
            })
            .collect();
        store
            .claim_ownership(&undo)
            .await
            .context("giving back the partitions claimed")?;
    }
    anyhow::bail!(
        "partition {}: the ownership record kept changing while this command tried to claim \
         it (another processor claims or renews it); nothing written",
        lost.join(", ")
    )
}

/// Step 3 for one checkpoint.
async fn write_checkpoint(store: &Store, checkpoint: &Checkpoint) -> anyhow::Result<()> {
    let id = &checkpoint.partition_id;
    for _ in 0..WRITE_ROUNDS {
        let mut version = checkpoint_version(store, id).await?;
        let mut written = false;
        for _ in 0..WRITE_ROUNDS {
            let swapped = store
                .swap_checkpoint(checkpoint, version.as_deref())
                .await
                .with_context(|| format!("partition {id}: writing the checkpoint"))?;
            if swapped.is_some() {
                written = true;
                break;
            }
            version = checkpoint_version(store, id).await?;
        }
        if !written {
            continue;
        }
        let now = store
            .list_checkpoints()
            .await
            .with_context(|| format!("partition {id}: reading the checkpoint back"))?;
        let found = now.iter().find(|c| &c.partition_id == id);
        if found.is_some_and(|c| same_position(c, checkpoint)) {
            return Ok(());
        }
    }
    anyhow::bail!(
        "partition {id}: the checkpoint was overwritten each time it was written (another \
         processor still checkpoints it); the partition was released: run the command again"
    )
}

/// Whether two checkpoints name the same position (hubcap's `committed_in` is not compared:
/// a store may drop it).
fn same_position(a: &Checkpoint, b: &Checkpoint) -> bool {
    a.offset == b.offset && a.sequence_number == b.sequence_number
}

async fn checkpoint_version(store: &Store, partition_id: &str) -> anyhow::Result<Option<String>> {
    let listed = store
        .list_checkpoint_versions()
        .await
        .with_context(|| format!("partition {partition_id}: reading the checkpoint"))?;
    Ok(listed
        .into_iter()
        .find(|(c, _)| c.partition_id == partition_id)
        .map(|(_, version)| version))
}

/// The owner id this command claims partitions under while it writes, so a store's readers
/// (and `status`) see who holds them.
pub fn tool_owner_id(command: &str) -> String {
    format!("hubcap-checkpoints-{command}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::file::FileCheckpointStore;
    use crate::checkpoint::{NameCase, StoreScope};

    const EXPIRATION: Duration = Duration::from_secs(60);

    fn store(root: &std::path::Path) -> Store {
        let scope = StoreScope {
            fully_qualified_namespace: "ns".into(),
            event_hub: "hub".into(),
            consumer_group: "$default".into(),
        };
        Store::File(FileCheckpointStore::open(root, scope, NameCase::Lower).unwrap())
    }

    fn record() -> CommitRecord {
        CommitRecord {
            first_sequence_number: 10,
            last_sequence_number: 19,
            name: "w.avro".into(),
        }
    }

    fn at(sequence_number: i64) -> Checkpoint {
        Checkpoint {
            partition_id: "0".into(),
            offset: Some((sequence_number * 100).to_string()),
            sequence_number: Some(sequence_number),
            committed_in: None,
        }
    }

    async fn claim(store: &Store, owner: &str, commit: Option<CommitRecord>) -> Ownership {
        let claim = OwnershipClaim {
            partition_id: "0".into(),
            owner_id: owner.into(),
            version: None,
            commit,
        };
        store.claim_ownership(&[claim]).await.unwrap().remove(0)
    }

    #[test]
    fn owners_are_live_until_the_expiration() {
        let now = SystemTime::now();
        let owned = |owner: &str, ago: u64| Ownership {
            partition_id: "0".into(),
            owner_id: owner.into(),
            last_modified: now - Duration::from_secs(ago),
            version: "1".into(),
            commit: None,
        };
        assert!(OwnerState::of(Some(&owned("a", 59)), now, EXPIRATION).is_live());
        let expired = OwnerState::of(Some(&owned("a", 61)), now, EXPIRATION);
        assert!(!expired.is_live());
        assert!(expired.to_string().starts_with("expired owner \"a\""));
        assert_eq!(
            OwnerState::of(Some(&owned("", 1)), now, EXPIRATION),
            OwnerState::Released
        );
        assert_eq!(
            OwnerState::of(None, now, EXPIRATION),
            OwnerState::NeverOwned
        );
    }

    #[tokio::test]
    async fn a_live_owner_is_named_and_nothing_is_written_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        claim(&store, "owner-a", Some(record())).await;
        let write = Write {
            partition_id: "0".into(),
            checkpoint: Some(at(4)),
            commit: None,
        };
        let error = apply(&store, &[write], EXPIRATION, false, "tool")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("partition 0: live owner \"owner-a\""),
            "{error}"
        );
        assert!(error.contains("--force"), "{error}");
        assert!(store.list_checkpoints().await.unwrap().is_empty());
        let ownership = &store.list_ownership().await.unwrap()[0];
        assert_eq!(ownership.owner_id, "owner-a");
        assert_eq!(ownership.commit, Some(record()));
    }

    #[tokio::test]
    async fn force_fences_the_owner_writes_clears_the_record_and_releases() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let held = claim(&store, "owner-a", Some(record())).await;
        store.update_checkpoint(&at(19)).await.unwrap();
        let write = Write {
            partition_id: "0".into(),
            checkpoint: Some(at(4)),
            commit: None,
        };
        let applied = apply(&store, &[write], EXPIRATION, true, "tool")
            .await
            .unwrap();
        assert!(applied[0].previous.is_live());
        assert_eq!(applied[0].previous_commit, Some(record()));
        assert_eq!(store.list_checkpoints().await.unwrap(), [at(4)]);
        let ownership = &store.list_ownership().await.unwrap()[0];
        assert_eq!(
            (ownership.owner_id.as_str(), &ownership.commit),
            ("", &None)
        );
        // The former owner's fenced renewal (a compare-and-swap on its version) now fails.
        let renewal = OwnershipClaim {
            partition_id: "0".into(),
            owner_id: "owner-a".into(),
            version: Some(held.version),
            commit: None,
        };
        assert!(store.claim_ownership(&[renewal]).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_expired_owner_needs_no_force_and_a_commit_record_can_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        claim(&store, "owner-a", None).await;
        let write = Write {
            partition_id: "0".into(),
            checkpoint: Some(at(9)),
            commit: Some(record()),
        };
        // An expiration of zero: every owner has expired.
        let applied = apply(&store, &[write], Duration::ZERO, false, "tool")
            .await
            .unwrap();
        assert!(matches!(
            applied[0].previous,
            OwnerState::Owned { live: false, .. }
        ));
        let ownership = &store.list_ownership().await.unwrap()[0];
        assert_eq!(
            (ownership.owner_id.as_str(), &ownership.commit),
            ("", &Some(record()))
        );
    }
}
