//! The `blob` sink: one block blob per partition window, in the configured format (Avro,
//! Parquet or JSON Lines, see [`super::format`]).
//!
//! The encoded bytes of the open window are staged as blocks of `block_size` as soon as that
//! much is encoded, so memory stays bounded by about one staged block plus one encoder block (an
//! Avro block, a Parquet row group) however large the window; closing the window commits the block list (or, for a window smaller than one block,
//! uploads it in one request). Both writes carry `If-None-Match: *`: a committed blob is never
//! replaced. Bytes not yet staged stay in memory until a stage succeeds, so a commit that fails
//! half-way can be retried without losing any. Uncommitted blocks of a crashed window are
//! invisible and expire on their own.
//!
//! The blob name is rendered when the window opens (its start time, as Capture), because
//! blocks are staged to a name; `{LastSequenceNumber}` is therefore not available here. A second
//! window of the partition starting in the same second gets a `-1`, `-2`, ... suffix, as with
//! the `file` sink. The blob's metadata records the first and last sequence numbers, the count,
//! the format and its schema version.
//!
//! Exactly once: a window reproduced from a commit record opens under the record's name. Two
//! writers may then stage blocks to one blob name at once (a zombie and the new owner), so block
//! ids carry a random per-window prefix and neither can commit the other's blocks; the first
//! block list committed wins (`If-None-Match: *`), and the other writer finds the blob ending at
//! its window's last event and counts its window as committed. A blob holding other events is
//! [`BlobSinkError::NameTaken`].

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::eventhubs::ReceivedEvent;
use crate::sink::format::{FileFormat, FormatError, FormatWriter};
use crate::sink::path_format::{PathContext, PathFormat};
use crate::storage::{BlobContainer, Condition, StorageError};

/// Settings shared by every partition of a `blob` sink.
#[derive(Debug, Clone)]
pub struct BlobSinkSettings {
    pub container: BlobContainer,
    pub path_format: Arc<PathFormat>,
    pub format: FileFormat,
    /// Staged block size.
    pub block_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobSinkError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("encoding: {0}")]
    Encode(#[from] FormatError),
    /// The window's blob cannot be completed under its name; its events must be read again.
    #[error("window lost: {reason}")]
    WindowLost { reason: String },
    /// The name holds a blob with other events.
    #[error("blob {name} already exists with other events")]
    NameTaken { name: String },
}

/// One open window's blob.
pub struct BlobWindow {
    name: String,
    /// The format it is written in: the sink's, or a recorded name's ([`FileFormat::for_name`]).
    format: FileFormat,
    /// Prefix of this window's block ids, so no other writer's blocks are ever committed.
    block_prefix: u64,
    writer: Option<Box<FormatWriter<Vec<u8>>>>,
    /// Bytes encoded but not yet staged.
    pending: BytesMut,
    block_ids: Vec<Vec<u8>>,
    /// Encoded bytes of the whole window, staged or not.
    bytes: u64,
}

impl std::fmt::Debug for BlobWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWindow")
            .field("name", &self.name)
            .field("staged_blocks", &self.block_ids.len())
            .finish_non_exhaustive()
    }
}

/// The names a partition's windows got, so a window starting in the same second as the
/// previous one gets a distinct name.
#[derive(Debug, Default)]
pub struct BlobNames {
    last_base: Option<String>,
    repeats: u32,
}

impl BlobNames {
    fn next(&mut self, base: String, extension: &str) -> String {
        if self.last_base.as_deref() == Some(base.as_str()) {
            self.repeats += 1;
            format!("{base}-{}{extension}", self.repeats)
        } else {
            self.repeats = 0;
            let name = format!("{base}{extension}");
            self.last_base = Some(base);
            name
        }
    }
}

impl BlobSinkSettings {
    /// A window whose blob will be named from `context` (rendered now, at its start), or
    /// `name` when it reproduces a recorded window.
    pub fn open_window(
        &self,
        context: &PathContext<'_>,
        names: &mut BlobNames,
        name: Option<&str>,
    ) -> Result<BlobWindow, BlobSinkError> {
        let (name, format) = match name {
            Some(name) => (name.to_owned(), self.format.for_name(name)),
            None => (
                names.next(self.path_format.render(context), self.format.extension()),
                self.format.clone(),
            ),
        };
        let writer = FormatWriter::new(Vec::new(), &format, context.partition_id)?;
        let mut window = BlobWindow {
            name,
            format,
            block_prefix: rand::random(),
            writer: Some(Box::new(writer)),
            pending: BytesMut::new(),
            block_ids: Vec::new(),
            bytes: 0,
        };
        window.take_encoded();
        Ok(window)
    }

    /// Encodes `events`, staging each block as soon as it is complete.
    pub async fn append(
        &self,
        window: &mut BlobWindow,
        events: &[ReceivedEvent],
    ) -> Result<(), BlobSinkError> {
        let writer = window.writer.as_mut().ok_or_else(sealed)?;
        writer.append_all(events)?;
        window.take_encoded();
        while window.pending.len() >= self.block_size {
            self.stage_pending(window, self.block_size).await?;
        }
        Ok(())
    }

    /// Stages the first `len` pending bytes; on failure they stay pending.
    async fn stage_pending(
        &self,
        window: &mut BlobWindow,
        len: usize,
    ) -> Result<(), BlobSinkError> {
        // Block ids of one blob must all have the same length, whoever stages them.
        let id = format!("{:016x}{:010}", window.block_prefix, window.block_ids.len()).into_bytes();
        let block: Bytes = window.pending.split_to(len).freeze();
        match self
            .container
            .stage_block(&window.name, &id, block.clone())
            .await
        {
            Ok(()) => {
                window.block_ids.push(id);
                Ok(())
            }
            Err(error) => {
                // Put the block back in front of what is still pending (a cheap reunite when
                // nothing was appended since, a copy otherwise).
                let mut restored = BytesMut::from(block.as_ref());
                restored.extend_from_slice(&window.pending);
                window.pending = restored;
                Err(error.into())
            }
        }
    }

    /// Finishes the file and commits the blob; returns its name. Retryable on `Storage`
    /// errors: staged blocks stay staged and unstaged bytes stay pending.
    pub async fn commit(
        &self,
        window: &mut BlobWindow,
        metadata: HashMap<String, String>,
    ) -> Result<String, BlobSinkError> {
        if let Some(writer) = window.writer.take() {
            let rest = writer.finish().map_err(|e| BlobSinkError::WindowLost {
                reason: e.to_string(),
            })?;
            window.bytes += rest.len() as u64;
            window.pending.extend_from_slice(&rest);
        }
        let written = if window.block_ids.is_empty() {
            let content = window.pending.clone().freeze();
            self.container
                .upload(&window.name, content, &metadata, Condition::IfNoneMatchAny)
                .await
        } else {
            if !window.pending.is_empty() {
                let len = window.pending.len();
                self.stage_pending(window, len).await?;
            }
            self.container
                .commit_block_list(
                    &window.name,
                    &window.block_ids,
                    &metadata,
                    Condition::IfNoneMatchAny,
                )
                .await
        };
        match written {
            Ok(_) => Ok(window.name.clone()),
            Err(StorageError::AlreadyExists { .. } | StorageError::ConditionNotMet { .. }) => {
                // A retried commit whose first attempt landed, or another writer that committed
                // the same recorded window first: the blob ends at this window's last event.
                let existing = self.container.get_properties(&window.name).await?;
                if existing.is_some_and(|p| holds_window(&p.metadata, &metadata)) {
                    return Ok(window.name.clone());
                }
                Err(BlobSinkError::NameTaken {
                    name: window.name.clone(),
                })
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// Whether a blob with `existing` metadata holds the window described by `ours`: the same last
/// event, and a first one no later (a copy reproduced after the oldest events expired starts
/// later and is the same window).
fn holds_window(existing: &HashMap<String, String>, ours: &HashMap<String, String>) -> bool {
    let number = |metadata: &HashMap<String, String>, key: &str| {
        metadata.get(key).and_then(|v| v.parse::<i64>().ok())
    };
    match (
        number(existing, FIRST),
        number(existing, LAST),
        number(ours, FIRST),
        number(ours, LAST),
    ) {
        (Some(existing_first), Some(existing_last), Some(first), Some(last)) => {
            existing_last == last && existing_first <= first
        }
        _ => false,
    }
}

const FIRST: &str = "firstsequencenumber";
const LAST: &str = "lastsequencenumber";

impl BlobWindow {
    /// The blob's name, relative to the container.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The format its bytes are in.
    pub fn format(&self) -> &FileFormat {
        &self.format
    }

    /// Moves what the writer has encoded into `pending`.
    fn take_encoded(&mut self) {
        if let Some(writer) = self.writer.as_mut() {
            let encoded = writer.inner_mut();
            if !encoded.is_empty() {
                self.bytes += encoded.len() as u64;
                self.pending.extend_from_slice(encoded);
                encoded.clear();
            }
        }
    }

    /// Bytes of the window so far (staged, pending, and still in the encoder's block).
    pub fn bytes(&self) -> u64 {
        self.bytes + self.writer.as_ref().map_or(0, |w| w.buffered_bytes())
    }
}

/// The metadata a committed window's blob carries.
pub fn window_metadata(
    first: i64,
    last: i64,
    events: u64,
    format: &FileFormat,
) -> HashMap<String, String> {
    HashMap::from([
        (FIRST.to_owned(), first.to_string()),
        (LAST.to_owned(), last.to_string()),
        ("eventcount".to_owned(), events.to_string()),
        ("format".to_owned(), format.name().to_owned()),
        (
            "schemaversion".to_owned(),
            format.schema_version().to_owned(),
        ),
    ])
}

fn sealed() -> BlobSinkError {
    BlobSinkError::WindowLost {
        reason: "appending to a window that is already sealed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_starting_in_the_same_second_get_distinct_names() {
        let mut names = BlobNames::default();
        assert_eq!(names.next("p/0/00".into(), ".avro"), "p/0/00.avro");
        assert_eq!(names.next("p/0/00".into(), ".avro"), "p/0/00-1.avro");
        assert_eq!(names.next("p/0/00".into(), ".avro"), "p/0/00-2.avro");
        assert_eq!(names.next("p/0/01".into(), ".avro"), "p/0/01.avro");
        assert_eq!(names.next("p/0/01".into(), ".avro"), "p/0/01-1.avro");
    }
}
