//! The `avro_blob` sink: one Capture Avro block blob per partition window.
//!
//! The Avro bytes of the open window are staged as blocks of `block_size` while the window
//! grows, so memory stays bounded by about one block plus one Avro block however large the
//! window; closing the window commits the block list (or, for a window smaller than one block,
//! uploads it in one request). Both writes carry `If-None-Match: *`: a committed blob is never
//! replaced. Uncommitted blocks of a crashed window are invisible and expire on their own.
//!
//! The blob name is rendered when the window opens (its start time, as Capture), because
//! blocks are staged to a name; `{LastSequenceNumber}` is therefore not available here. The
//! blob's metadata records the first and last sequence numbers and the event count.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::Codec;
use crate::eventhubs::ReceivedEvent;
use crate::sink::avro::CaptureWriter;
use crate::sink::path_format::{PathContext, PathFormat};
use crate::storage::{BlobContainer, Condition, StorageError};

/// Settings shared by every partition of an `avro_blob` sink.
#[derive(Debug, Clone)]
pub struct BlobSinkSettings {
    pub container: BlobContainer,
    pub path_format: Arc<PathFormat>,
    pub codec: Codec,
    /// Staged block size.
    pub block_size: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobSinkError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("avro encoding: {0}")]
    Avro(#[from] crate::sink::avro::AvroError),
    /// The window's blob cannot be completed under its name; its events must be read again.
    #[error("window lost: {reason}")]
    WindowLost { reason: String },
}

/// One open window's blob.
pub struct BlobWindow {
    name: String,
    writer: Option<Box<CaptureWriter<Vec<u8>>>>,
    /// Avro bytes finished but not yet staged (the tail after the last staged block).
    pending: Vec<u8>,
    block_ids: Vec<Vec<u8>>,
}

impl std::fmt::Debug for BlobWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWindow")
            .field("name", &self.name)
            .field("staged_blocks", &self.block_ids.len())
            .finish_non_exhaustive()
    }
}

impl BlobSinkSettings {
    /// A window whose blob will be named from `context` (rendered now, at its start).
    pub fn open_window(&self, context: &PathContext<'_>) -> Result<BlobWindow, BlobSinkError> {
        Ok(BlobWindow {
            name: format!("{}.avro", self.path_format.render(context)),
            writer: Some(Box::new(CaptureWriter::new(Vec::new(), &self.codec)?)),
            pending: Vec::new(),
            block_ids: Vec::new(),
        })
    }

    /// Encodes `events` and stages every full block.
    pub async fn append(
        &self,
        window: &mut BlobWindow,
        events: &[ReceivedEvent],
    ) -> Result<(), BlobSinkError> {
        let writer = window.writer.as_mut().ok_or_else(sealed)?;
        for event in events {
            writer.append(event)?;
        }
        window.pending.append(writer.inner_mut());
        while window.pending.len() >= self.block_size {
            let rest = window.pending.split_off(self.block_size);
            let block = std::mem::replace(&mut window.pending, rest);
            self.stage(window, block).await?;
        }
        Ok(())
    }

    async fn stage(&self, window: &mut BlobWindow, block: Vec<u8>) -> Result<(), BlobSinkError> {
        // Block ids of one blob must all have the same length.
        let id = format!("{:010}", window.block_ids.len()).into_bytes();
        self.container
            .stage_block(&window.name, &id, Bytes::from(block))
            .await?;
        window.block_ids.push(id);
        Ok(())
    }

    /// Finishes the Avro file and commits the blob; returns its name. Retryable on
    /// `Storage` errors: staged blocks stay staged.
    pub async fn commit(
        &self,
        window: &mut BlobWindow,
        metadata: HashMap<String, String>,
    ) -> Result<String, BlobSinkError> {
        if let Some(writer) = window.writer.take() {
            let mut rest = writer.finish().map_err(|e| BlobSinkError::WindowLost {
                reason: e.to_string(),
            })?;
            window.pending.append(&mut rest);
        }
        let written = if window.block_ids.is_empty() {
            let content = Bytes::from(std::mem::take(&mut window.pending));
            let result = self
                .container
                .upload(
                    &window.name,
                    content.clone(),
                    &metadata,
                    Condition::IfNoneMatchAny,
                )
                .await;
            if result.is_err() {
                // Keep the bytes for a retry.
                window.pending = content.to_vec();
            }
            result
        } else {
            if !window.pending.is_empty() {
                let tail = std::mem::take(&mut window.pending);
                self.stage(window, tail).await?;
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
                // A retried commit whose first attempt landed looks exactly like this: it is
                // ours if the blob carries this window's metadata.
                let existing = self.container.get_properties(&window.name).await?;
                if existing.is_some_and(|p| p.metadata == metadata) {
                    return Ok(window.name.clone());
                }
                Err(BlobSinkError::WindowLost {
                    reason: format!("blob {} already exists with other events", window.name),
                })
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl BlobWindow {
    /// Avro bytes of the window so far, staged or not.
    pub fn bytes(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, |w| w.bytes_written() + w.buffered_bytes())
    }
}

/// The metadata a committed window's blob carries.
pub fn window_metadata(first: i64, last: i64, events: u64) -> HashMap<String, String> {
    HashMap::from([
        ("firstsequencenumber".to_owned(), first.to_string()),
        ("lastsequencenumber".to_owned(), last.to_string()),
        ("eventcount".to_owned(), events.to_string()),
    ])
}

fn sealed() -> BlobSinkError {
    BlobSinkError::WindowLost {
        reason: "appending to a window that is already sealed".into(),
    }
}
