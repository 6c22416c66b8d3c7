//! The file checkpoint store's ownership and checkpoint records, read the way hubcap names them.

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::{CONSUMER_GROUP, HUB};

/// An ownership record of the file store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OwnershipRecord {
    pub ownerid: String,
    pub version: u64,
    pub last_modified_unix_ms: u64,
    /// The window being committed, as hubcap records it.
    #[serde(default)]
    pub hubcapcommit: Option<CommitRecord>,
}

/// hubcap's commit record in an ownership.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CommitRecord {
    pub first_sequence_number: i64,
    pub last_sequence_number: i64,
    pub name: String,
}

/// A checkpoint record of the file store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckpointRecord {
    pub offset: Option<String>,
    pub sequencenumber: Option<i64>,
    /// The archive file the checkpointed event is in.
    #[serde(default)]
    pub hubcapcommitted: Option<String>,
}

/// Reads the file store's records of the test hub, as hubcap names them:
/// `<root>/<host:port>/<hub>/<consumer group>/{ownership,checkpoint}/<partition>`, lower-cased.
#[derive(Debug, Clone)]
pub struct StoreView {
    dir: PathBuf,
}

impl StoreView {
    /// `endpoint` is the address in the connection string hubcap was given.
    pub fn new(root: &Path, endpoint: SocketAddr) -> Self {
        Self {
            dir: root
                .join(endpoint.to_string().to_lowercase())
                .join(HUB.to_lowercase())
                .join(CONSUMER_GROUP.to_lowercase()),
        }
    }

    pub fn checkpoint_path(&self, partition_id: &str) -> PathBuf {
        self.dir.join("checkpoint").join(partition_id)
    }

    pub fn ownership_path(&self, partition_id: &str) -> PathBuf {
        self.dir.join("ownership").join(partition_id)
    }

    pub fn checkpoint(&self, partition_id: &str) -> Option<CheckpointRecord> {
        read_record(&self.checkpoint_path(partition_id))
    }

    pub fn ownership(&self, partition_id: &str) -> Option<OwnershipRecord> {
        read_record(&self.ownership_path(partition_id))
    }

    /// The checkpointed sequence number of each partition; -1 where there is none.
    pub fn checkpointed(&self, partition_ids: &[String]) -> BTreeMap<String, i64> {
        partition_ids
            .iter()
            .map(|id| {
                let n = self
                    .checkpoint(id)
                    .and_then(|c| c.sequencenumber)
                    .unwrap_or(-1);
                (id.clone(), n)
            })
            .collect()
    }
}

/// A record's JSON, or `None` if it does not exist. Records are replaced by rename, so a read
/// sees a whole record or none; one that does not parse is a bug.
fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    match std::fs::read(path) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "record {} is not valid: {e}: {:?}",
                path.display(),
                String::from_utf8_lossy(&bytes)
            )
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

/// A file's content and modification time, to notice any rewrite.
pub fn file_state(path: &Path) -> Option<(Vec<u8>, SystemTime)> {
    let bytes = std::fs::read(path).ok()?;
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    Some((bytes, modified))
}

/// Every record file under a file store's directory, with its content (the lock files
/// aside): equal before and after shows that nothing was written.
pub fn store_files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if !entry.file_name().to_string_lossy().starts_with(".lock") {
                files.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    files
}
