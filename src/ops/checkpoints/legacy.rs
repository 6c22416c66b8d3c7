//! The lease blobs of the legacy EventProcessorHost, read by `hubcap checkpoints import
//! --legacy-dir DIR` or `--legacy-container NAME [--legacy-prefix PREFIX]`, so a consumer group
//! that ran on it (the v1 SDK `Microsoft.Azure.EventHubs.Processor`, on which Azure Functions'
//! Event Hubs trigger ran before extension 5.x) keeps its place. The v5 SDKs (and hubcap)
//! neither read nor migrate these blobs.
//!
//! The layout, from that SDK's source (Azure/azure-event-hubs-dotnet,
//! `src/Microsoft.Azure.EventHubs.Processor/`):
//!
//! - `AzureStorageCheckpointLeaseManager.cs`: one block blob per partition in the lease
//!   container, named `<storageBlobPrefix><consumer group name>/<partition id>`
//!   (`consumerGroupDirectory.GetBlockBlobReference(partitionId)`; the prefix is empty unless
//!   the host was given one); its content is the lease serialized by Newtonsoft.Json
//!   (`UploadTextAsync(JsonConvert.SerializeObject(lease))`), read back the same way; the
//!   checkpoint lives in the lease (`UpdateCheckpointAsync` copies `Offset` and
//!   `SequenceNumber` into it), and `GetCheckpointAsync` reports no checkpoint when `Offset` is
//!   null or empty.
//! - `Lease.cs` / `AzureBlobLease.cs`: the serialized properties are `PartitionId`, `Owner`,
//!   `Token`, `Epoch` (long), `Offset` (string) and `SequenceNumber` (long); the blob itself is
//!   `[JsonIgnore]`. For example
//!   `{"Offset":"8200","SequenceNumber":41,"PartitionId":"0","Owner":"host-1","Token":"…","Epoch":3}`.
//! - `PartitionContext.cs`: a checkpoint is the offset and sequence number of the last
//!   processed event (`CheckpointAsync(EventData)`), and `EventHubPartitionPump.cs` resumes
//!   with `CreateEpochReceiver(group, partition, offset, epoch)`, i.e. after that offset:
//!   the same exclusive meaning as a v5 checkpoint, so `Offset` and `SequenceNumber` carry
//!   over unchanged. `-1` (`PartitionReceiver.StartOfStream`) means the start of the stream.
//!
//! The Java and JavaScript EventProcessorHosts write the same fields in camelCase
//! (`offset`, `sequenceNumber`, `partitionId`...), so keys are matched without regard to case.
//! `Owner`, `Token` and `Epoch` belong to blob leases, which the v5 ownership records do not
//! use: they are reported, not carried over.
//!
//! A lease's partition is its `PartitionId`, else its blob (or file) name, less a `.json`
//! extension. A UTF-8 byte order mark is skipped.

use std::path::Path;

use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::storage::BlobContainer;

/// One legacy lease, as far as hubcap uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyLease {
    pub partition_id: String,
    /// `Offset`: `None` when the partition was never checkpointed.
    pub offset: Option<String>,
    /// `SequenceNumber` (0 when never checkpointed: the SDK's default).
    pub sequence_number: i64,
    /// `Owner`, if any, for the report.
    pub owner: Option<String>,
    /// `Epoch`, if any, for the report.
    pub epoch: Option<i64>,
    /// Where it was read from, for messages.
    pub source: String,
}

impl LegacyLease {
    /// The v5 checkpoint this lease's checkpoint is, `None` if it has none. The start of the
    /// stream gets sequence number -1 ("before the first event"): the lease's own number is
    /// the SDK's default 0 there, which would claim event 0 was processed.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        let offset = self.offset.as_deref().filter(|o| !o.is_empty())?;
        let sequence_number = if offset == super::set::START_OF_STREAM {
            -1
        } else {
            self.sequence_number
        };
        Some(Checkpoint {
            partition_id: self.partition_id.clone(),
            offset: Some(offset.to_owned()),
            sequence_number: Some(sequence_number),
            committed_in: None,
        })
    }
}

/// Parses one lease blob or file; `name` is its blob or file name (the partition id when the
/// JSON has none).
pub fn parse_lease(name: &str, source: &str, bytes: &[u8]) -> Result<LegacyLease, String> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("{source}: not a JSON lease: {e}"))?;
    let Value::Object(fields) = value else {
        return Err(format!("{source}: not a JSON lease: expected an object"));
    };
    let field = |key: &str| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    if field("Offset").is_none() && field("SequenceNumber").is_none() {
        return Err(format!(
            "{source}: not an EventProcessorHost lease: it has neither Offset nor SequenceNumber"
        ));
    }
    let text = |key: &str| -> Result<Option<String>, String> {
        match field(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // Offsets are strings in every EventProcessorHost, but a hand-made file may hold
            // a number: it means the same.
            Some(Value::Number(n)) if key == "Offset" => Ok(Some(n.to_string())),
            Some(other) => Err(format!("{source}: {key} {other} is not a string")),
        }
    };
    let integer = |key: &str| -> Result<Option<i64>, String> {
        match field(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| format!("{source}: {key} {n} is not an integer")),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| format!("{source}: {key} {s:?} is not an integer")),
            Some(other) => Err(format!("{source}: {key} {other} is not an integer")),
        }
    };
    let named = name.strip_suffix(".json").unwrap_or(name);
    let partition_id = text("PartitionId")?
        .filter(|id| !id.is_empty())
        .unwrap_or_else(|| named.to_owned());
    if partition_id.is_empty() {
        return Err(format!(
            "{source}: no PartitionId and no name to take it from"
        ));
    }
    Ok(LegacyLease {
        partition_id,
        offset: text("Offset")?,
        sequence_number: integer("SequenceNumber")?.unwrap_or(0),
        owner: text("Owner")?.filter(|o| !o.is_empty()),
        epoch: integer("Epoch")?,
        source: source.to_owned(),
    })
}

/// Every lease file directly in `dir` (hidden files and directories are skipped), by name.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<LegacyLease>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("reading lease directory {}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry =
            entry.map_err(|e| anyhow::anyhow!("reading lease directory {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        files.push((name, entry.path()));
    }
    files.sort();
    let mut leases = Vec::new();
    for (name, path) in files {
        let bytes =
            std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        leases.push(
            parse_lease(&name, &path.display().to_string(), &bytes).map_err(anyhow::Error::msg)?,
        );
    }
    check_unique(leases)
}

/// Every lease blob directly under `prefix` in `container` (deeper names are not leases).
pub async fn read_blobs(
    container: &BlobContainer,
    prefix: &str,
) -> anyhow::Result<Vec<LegacyLease>> {
    let items = container.list_with_metadata(prefix).await.map_err(|e| {
        anyhow::anyhow!(
            "listing lease blobs {prefix:?} in container {:?}: {e}",
            container.name()
        )
    })?;
    let mut leases = Vec::new();
    for item in items {
        let Some(name) = item.name.strip_prefix(prefix) else {
            continue;
        };
        if name.is_empty() || name.contains('/') {
            continue;
        }
        let source = format!("blob {}/{}", container.name(), item.name);
        let bytes = container
            .download(&item.name)
            .await
            .map_err(|e| anyhow::anyhow!("reading {source}: {e}"))?;
        leases.push(parse_lease(name, &source, &bytes).map_err(anyhow::Error::msg)?);
    }
    check_unique(leases)
}

/// Refuses two leases for one partition: which one holds the place is not ours to guess.
fn check_unique(mut leases: Vec<LegacyLease>) -> anyhow::Result<Vec<LegacyLease>> {
    leases.sort_by(|a, b| {
        crate::ops::checkpoints::partition_order(&a.partition_id)
            .cmp(&crate::ops::checkpoints::partition_order(&b.partition_id))
    });
    for pair in leases.windows(2) {
        if pair[0].partition_id == pair[1].partition_id {
            anyhow::bail!(
                "two leases for partition {}: {} and {}; nothing written",
                pair[0].partition_id,
                pair[0].source,
                pair[1].source
            );
        }
    }
    Ok(leases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotnet_lease_as_newtonsoft_writes_it_carries_its_checkpoint_over() {
        let json = br#"{"Offset":"8200","SequenceNumber":41,"PartitionId":"0","Owner":"host-1","Token":"4c4e0b8a-4b5e-4f5e-9a39-0d5f8a1f3c11","Epoch":3}"#;
        let lease = parse_lease("0", "blob c/$Default/0", json).unwrap();
        assert_eq!(lease.owner.as_deref(), Some("host-1"));
        assert_eq!(lease.epoch, Some(3));
        let checkpoint = lease.checkpoint().unwrap();
        assert_eq!(
            (
                checkpoint.partition_id.as_str(),
                checkpoint.offset.as_deref(),
                checkpoint.sequence_number
            ),
            ("0", Some("8200"), Some(41))
        );
    }

    #[test]
    fn camel_case_keys_a_bom_and_the_name_as_partition_id_are_accepted() {
        let json =
            b"\xEF\xBB\xBF{\"offset\":\"96\",\"sequenceNumber\":\"2\",\"owner\":\"\",\"epoch\":1}";
        let lease = parse_lease("7.json", "f", json).unwrap();
        assert_eq!(lease.partition_id, "7");
        assert_eq!(lease.owner, None);
        assert_eq!(lease.checkpoint().unwrap().sequence_number, Some(2));
    }

    #[test]
    fn never_checkpointed_and_start_of_stream_leases() {
        let never = parse_lease(
            "1",
            "f",
            br#"{"Offset":null,"SequenceNumber":0,"PartitionId":"1"}"#,
        )
        .unwrap();
        assert_eq!(never.checkpoint(), None);
        let empty = parse_lease("1", "f", br#"{"Offset":"","SequenceNumber":0}"#).unwrap();
        assert_eq!(empty.checkpoint(), None);
        let start = parse_lease("1", "f", br#"{"Offset":"-1","SequenceNumber":0}"#).unwrap();
        let checkpoint = start.checkpoint().unwrap();
        assert_eq!(
            (checkpoint.offset.as_deref(), checkpoint.sequence_number),
            (Some("-1"), Some(-1))
        );
    }

    #[test]
    fn files_that_are_not_leases_are_named() {
        for (bytes, expected) in [
            (&b"not json"[..], "not a JSON lease"),
            (b"[1]", "expected an object"),
            (
                br#"{"PartitionId":"0"}"#,
                "neither Offset nor SequenceNumber",
            ),
            (
                br#"{"Offset":"5","SequenceNumber":"x"}"#,
                "SequenceNumber \"x\" is not an integer",
            ),
            (br#"{"Offset":true}"#, "Offset true is not a string"),
        ] {
            let error = parse_lease("0", "lease-file", bytes).unwrap_err();
            assert!(error.contains(expected), "{error}");
            assert!(error.starts_with("lease-file: "), "{error}");
        }
    }

    #[test]
    fn two_leases_for_one_partition_are_refused() {
        let lease = |source: &str| {
            parse_lease("0", source, br#"{"Offset":"1","SequenceNumber":1}"#).unwrap()
        };
        let error = check_unique(vec![lease("a"), lease("b")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("two leases for partition 0: a and b"),
            "{error}"
        );
    }
}
