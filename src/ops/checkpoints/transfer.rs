//! The document `hubcap checkpoints export` writes and `import` reads: one consumer group's
//! checkpoints and ownerships, store-neutral, so a group moves between the `file` and the
//! `azure_blob` stores (or to a fresh container) and keeps its place.
//!
//! ```json
//! {
//!   "format": "hubcap-checkpoints",
//!   "version": 1,
//!   "exported_at": "2026-12-02T10:00:00.000Z",
//!   "fully_qualified_namespace": "myns.servicebus.windows.net",
//!   "event_hub": "telemetry",
//!   "consumer_group": "$Default",
//!   "checkpoints": [
//!     {"partition_id": "0", "offset": "8200", "sequence_number": 41,
//!      "committed_in": "myns/telemetry/0/2026/12/02/09/59/00.avro"}
//!   ],
//!   "ownerships": [
//!     {"partition_id": "0", "owner_id": "hubcap-a", "last_modified": "2026-12-02T09:59:58.120Z",
//!      "commit": {"first_sequence_number": 30, "last_sequence_number": 41,
//!                 "name": "myns/telemetry/0/2026/12/02/09/59/00.avro"}}
//!   ]
//! }
//! ```
//!
//! `offset`, `sequence_number`, `committed_in` and `commit` may be `null` (or left out).
//! Import writes each checkpoint as it is, and each ownership **released** (`owner_id ""`)
//! with its commit record: the owners of the exporting store do not own the importing one,
//! while the commit record belongs to the checkpoint (a window recorded but not checkpointed
//! is reproduced under its name by the next owner, as it would have been in the old store).
//! A partition the document has no checkpoint for keeps whatever the importing store has.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::checkpoint::{Checkpoint, CommitRecord, Ownership, StoreScope};
use crate::sink::stdout::rfc3339_ms;

/// The value of `format`.
pub const FORMAT: &str = "hubcap-checkpoints";
/// The value of `version` this build writes and reads.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Always [`FORMAT`]: tells this document from other JSON.
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// When it was exported (RFC 3339, UTC).
    pub exported_at: String,
    /// The records' scope: offsets belong to one event hub's partitions.
    pub fully_qualified_namespace: String,
    pub event_hub: String,
    pub consumer_group: String,
    pub checkpoints: Vec<CheckpointEntry>,
    pub ownerships: Vec<OwnershipEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointEntry {
    pub partition_id: String,
    #[serde(default)]
    pub offset: Option<String>,
    #[serde(default)]
    pub sequence_number: Option<i64>,
    /// hubcap: the archive file or blob holding the checkpointed event.
    #[serde(default)]
    pub committed_in: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnershipEntry {
    pub partition_id: String,
    /// `""` when released.
    pub owner_id: String,
    /// When the record was last written (RFC 3339, UTC); informative.
    pub last_modified: String,
    /// hubcap's commit record (see [`crate::checkpoint::schema`]).
    #[serde(default)]
    pub commit: Option<CommitRecord>,
}

impl Document {
    /// The document of a store's records.
    pub fn new(
        scope: &StoreScope,
        checkpoints: &[Checkpoint],
        ownerships: &[Ownership],
        now: SystemTime,
    ) -> Self {
        let mut checkpoints: Vec<CheckpointEntry> = checkpoints
            .iter()
            .map(|c| CheckpointEntry {
                partition_id: c.partition_id.clone(),
                offset: c.offset.clone(),
                sequence_number: c.sequence_number,
                committed_in: c.committed_in.clone(),
            })
            .collect();
        checkpoints.sort_by(|a, b| {
            super::partition_order(&a.partition_id).cmp(&super::partition_order(&b.partition_id))
        });
        let mut ownerships: Vec<OwnershipEntry> = ownerships
            .iter()
            .map(|o| OwnershipEntry {
                partition_id: o.partition_id.clone(),
                owner_id: o.owner_id.clone(),
                last_modified: rfc3339(o.last_modified),
                commit: o.commit.clone(),
            })
            .collect();
        ownerships.sort_by(|a, b| {
            super::partition_order(&a.partition_id).cmp(&super::partition_order(&b.partition_id))
        });
        Self {
            format: FORMAT.to_owned(),
            version: VERSION,
            exported_at: rfc3339(now),
            fully_qualified_namespace: scope.fully_qualified_namespace.clone(),
            event_hub: scope.event_hub.clone(),
            consumer_group: scope.consumer_group.clone(),
            checkpoints,
            ownerships,
        }
    }

    /// Pretty JSON with a final newline.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Parses and checks a document; `source` names it in messages.
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        let document: Self = serde_json::from_str(text).map_err(|e| {
            format!(
                "{source}: not a {FORMAT} document (as `hubcap checkpoints export` writes): {e}"
            )
        })?;
        if document.format != FORMAT {
            return Err(format!(
                "{source}: format is {:?}, expected {FORMAT:?}",
                document.format
            ));
        }
        if document.version != VERSION {
            return Err(format!(
                "{source}: version {} is not one this hubcap reads ({VERSION})",
                document.version
            ));
        }
        for (kind, ids) in [
            (
                "checkpoints",
                document
                    .checkpoints
                    .iter()
                    .map(|c| &c.partition_id)
                    .collect::<Vec<_>>(),
            ),
            (
                "ownerships",
                document
                    .ownerships
                    .iter()
                    .map(|o| &o.partition_id)
                    .collect(),
            ),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for id in ids {
                if id.is_empty() {
                    return Err(format!("{source}: {kind} has an empty partition_id"));
                }
                if !seen.insert(id) {
                    return Err(format!("{source}: {kind} lists partition {id} twice"));
                }
            }
        }
        Ok(document)
    }

    /// Differences between the document's scope and `target`'s: offsets and sequence numbers
    /// mean something only in the event hub they came from. Names compare as the stores
    /// compare them, without regard to case.
    pub fn scope_mismatches(&self, target: &StoreScope) -> Vec<String> {
        [
            (
                "namespace",
                &self.fully_qualified_namespace,
                &target.fully_qualified_namespace,
            ),
            ("event hub", &self.event_hub, &target.event_hub),
            (
                "consumer group",
                &self.consumer_group,
                &target.consumer_group,
            ),
        ]
        .into_iter()
        .filter(|(_, ours, theirs)| !ours.eq_ignore_ascii_case(theirs))
        .map(|(what, ours, theirs)| {
            format!("{what} {ours:?} (the document) is not {theirs:?} (the config)")
        })
        .collect()
    }

    /// What import writes, partition by partition: each checkpoint, and the commit record of
    /// each ownership.
    pub fn writes(&self) -> Vec<super::apply::Write> {
        let mut ids: Vec<&String> = self
            .checkpoints
            .iter()
            .map(|c| &c.partition_id)
            .chain(
                self.ownerships
                    .iter()
                    .filter(|o| o.commit.is_some())
                    .map(|o| &o.partition_id),
            )
            .collect();
        ids.sort_by(|a, b| super::partition_order(a).cmp(&super::partition_order(b)));
        ids.dedup();
        ids.into_iter()
            .map(|id| super::apply::Write {
                partition_id: id.clone(),
                checkpoint: self
                    .checkpoints
                    .iter()
                    .find(|c| &c.partition_id == id)
                    .map(|c| Checkpoint {
                        partition_id: id.clone(),
                        offset: c.offset.clone(),
                        sequence_number: c.sequence_number,
                        committed_in: c.committed_in.clone(),
                    }),
                commit: self
                    .ownerships
                    .iter()
                    .find(|o| &o.partition_id == id)
                    .and_then(|o| o.commit.clone()),
            })
            .collect()
    }
}

/// A time as RFC 3339 with milliseconds, UTC.
pub fn rfc3339(time: SystemTime) -> String {
    let ms = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    rfc3339_ms(i64::try_from(ms).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> StoreScope {
        StoreScope {
            fully_qualified_namespace: "MyNs.servicebus.windows.net".into(),
            event_hub: "hub1".into(),
            consumer_group: "$Default".into(),
        }
    }

    fn record() -> CommitRecord {
        CommitRecord {
            first_sequence_number: 30,
            last_sequence_number: 41,
            name: "ns/hub1/0/w.avro".into(),
        }
    }

    fn sample() -> Document {
        let checkpoints = [
            Checkpoint {
                partition_id: "10".into(),
                offset: None,
                sequence_number: Some(3),
                committed_in: None,
            },
            Checkpoint {
                partition_id: "0".into(),
                offset: Some("8200".into()),
                sequence_number: Some(41),
                committed_in: Some("ns/hub1/0/w.avro".into()),
            },
        ];
        let ownerships = [
            Ownership {
                partition_id: "0".into(),
                owner_id: "hubcap-a".into(),
                last_modified: UNIX_EPOCH + Duration::from_millis(1_796_112_000_250),
                version: "7".into(),
                commit: Some(record()),
            },
            Ownership {
                partition_id: "2".into(),
                owner_id: String::new(),
                last_modified: UNIX_EPOCH,
                version: "1".into(),
                commit: Some(record()),
            },
        ];
        Document::new(
            &scope(),
            &checkpoints,
            &ownerships,
            UNIX_EPOCH + Duration::from_secs(1_796_112_060),
        )
    }

    #[test]
    fn a_document_round_trips_in_partition_order() {
        let document = sample();
        let text = document.to_json();
        assert!(
            text.contains("\"format\": \"hubcap-checkpoints\""),
            "{text}"
        );
        assert!(
            text.contains("\"last_modified\": \"2026-12-01T08:00:00.250Z\""),
            "{text}"
        );
        let parsed = Document::parse(&text, "doc").unwrap();
        assert_eq!(parsed, document);
        let ids: Vec<&str> = parsed
            .checkpoints
            .iter()
            .map(|c| c.partition_id.as_str())
            .collect();
        assert_eq!(ids, ["0", "10"]);
    }

    #[test]
    fn import_writes_checkpoints_and_commit_records_and_no_owners() {
        let writes = sample().writes();
        let ids: Vec<&str> = writes.iter().map(|w| w.partition_id.as_str()).collect();
        assert_eq!(ids, ["0", "2", "10"]);
        assert_eq!(
            writes[0].checkpoint.as_ref().unwrap().offset.as_deref(),
            Some("8200")
        );
        assert_eq!(writes[0].commit, Some(record()));
        // An ownership with a commit record and no checkpoint: the record alone.
        assert_eq!(
            (writes[1].checkpoint.as_ref(), writes[1].commit.as_ref()),
            (None, Some(&record()))
        );
        assert_eq!(writes[2].commit, None);
    }

    #[test]
    fn scopes_compare_without_case_and_differences_are_named() {
        let document = sample();
        let mut target = scope();
        target.fully_qualified_namespace = "myns.servicebus.windows.net".into();
        assert!(document.scope_mismatches(&target).is_empty());
        target.event_hub = "other".into();
        assert_eq!(
            document.scope_mismatches(&target),
            ["event hub \"hub1\" (the document) is not \"other\" (the config)"]
        );
    }

    #[test]
    fn bad_documents_say_what_is_wrong() {
        let good = sample().to_json();
        for (text, expected) in [
            ("{}".to_owned(), "not a hubcap-checkpoints document"),
            (
                good.replace("\"version\": 1", "\"version\": 9"),
                "version 9",
            ),
            (
                good.replace("\"format\": \"hubcap-checkpoints\"", "\"format\": \"x\""),
                "format is \"x\"",
            ),
            (
                good.replace("\"10\"", "\"0\""),
                "checkpoints lists partition 0 twice",
            ),
            (
                good.replace("\"offset\": \"8200\"", "\"ofset\": \"8200\""),
                "unknown field `ofset`",
            ),
        ] {
            let error = Document::parse(&text, "doc.json").unwrap_err();
            assert!(error.contains(expected), "{expected}: {error}");
            assert!(error.starts_with("doc.json: "), "{error}");
        }
    }
}
