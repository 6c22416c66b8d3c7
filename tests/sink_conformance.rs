//! The sink conformance suite: one set of behavioural scenarios that every sink runs (`stdout`
//! into a buffer, `file` into a temporary directory, `blob` into a real Azurite, each file
//! format to both), so that a new sink or format inherits them by adding one [`Subject`]
//! variant or one line of `conformance!`.
//!
//! Each scenario drives a [`PartitionSink`] the way the partition task does (append, tick,
//! flush, abandon) and then reads back what the destination holds: only committed data counts.

mod azurite;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use azurite::Azurite;
use hubcap::checkpoint::CommitRecord;
use hubcap::eventhubs::{EventBody, ReceivedEvent};
use hubcap::secret::Secret;
use hubcap::sink::blob::BlobSinkSettings;
use hubcap::sink::file::FileSinkSettings;
use hubcap::sink::format::{strip_archive_extension, FileFormat};
use hubcap::sink::jsonl::BodyText;
use hubcap::sink::parquet::ParquetSettings;
use hubcap::sink::path_format::PathFormat;
use hubcap::sink::stdout::{LineTarget, MemoryLines};
use hubcap::sink::{Codec, PartitionSink, Sink, SinkError, WindowNames, WindowSettings};
use hubcap::storage::BlobContainer;
use hubcap::storage::StorageAccount;

const PARTITION: &str = "3";
const PATH_FORMAT: &str = "{EventHub}/p{PartitionId}/{Year}{Month}{Day}{Hour}{Minute}{Second}";
/// Windows that neither age nor size closes during a scenario.
const NEVER: WindowSettings = WindowSettings {
    max_age: Duration::from_secs(3600),
    max_bytes: u64::MAX,
    skip_empty: true,
};

/// A sink under test and the means to read its destination back.
enum Subject {
    Stdout(Arc<MemoryLines>),
    File(tempfile::TempDir, FileFormat),
    Blob {
        azurite: Azurite,
        container: BlobContainer,
        format: FileFormat,
    },
}

/// The formats the file and blob subjects write.
fn avro() -> FileFormat {
    FileFormat::CAPTURE
}

fn parquet() -> FileFormat {
    FileFormat::Parquet(ParquetSettings {
        codec: Codec::Zstd { level: 3 },
        // Small, so the scenarios' windows span several row groups.
        row_group_bytes: 64 * 1024,
        body_utf8: true,
    })
}

fn jsonl_gzip() -> FileFormat {
    FileFormat::Jsonl {
        codec: Codec::Gzip { level: 6 },
        body: BodyText::Utf8,
    }
}

fn jsonl_zstd() -> FileFormat {
    FileFormat::Jsonl {
        codec: Codec::Zstd { level: 3 },
        body: BodyText::Base64,
    }
}

impl Subject {
    /// The extension of the names this subject commits under (what a record of its names).
    fn extension(&self) -> &'static str {
        match self {
            Subject::Stdout(_) => "",
            Subject::File(_, format) | Subject::Blob { format, .. } => format.extension(),
        }
    }

    fn stdout() -> Self {
        Subject::Stdout(Arc::default())
    }

    fn file(format: FileFormat) -> Self {
        Subject::File(tempfile::tempdir().unwrap(), format)
    }

    async fn blob(format: FileFormat) -> Self {
        let azurite = Azurite::start();
        let storage = StorageAccount::ConnectionString(Secret::new(azurite.connection_string()));
        let container = BlobContainer::connect(&storage, "archive", &Default::default()).unwrap();
        container.create_container_if_missing().await.unwrap();
        Subject::Blob {
            azurite,
            container,
            format,
        }
    }

    fn sink(&self) -> Sink {
        let path_format = Arc::new(PathFormat::parse(PATH_FORMAT).unwrap());
        match self {
            Subject::Stdout(memory) => Sink::Stdout(LineTarget::Memory(Arc::clone(memory))),
            Subject::File(dir, format) => Sink::File(Arc::new(FileSinkSettings {
                root: dir.path().to_owned(),
                path_format,
                format: format.clone(),
                file_mode: 0o600,
            })),
            Subject::Blob {
                container, format, ..
            } => Sink::Blob(Arc::new(BlobSinkSettings {
                container: container.clone(),
                path_format,
                format: format.clone(),
                block_size: 4 * 1024 * 1024,
            })),
        }
    }

    fn open(&self, settings: WindowSettings) -> PartitionSink {
        let names = Arc::new(WindowNames {
            namespace: "ns".into(),
            event_hub: "hub".into(),
            consumer_group: "$Default".into(),
        });
        self.sink().open_partition(PARTITION, settings, names, None)
    }

    /// Sequence numbers of every committed window, window by window in the order of their
    /// first events (the stdout sink has one stream: it is one entry).
    async fn committed(&self) -> Vec<Vec<i64>> {
        match self {
            Subject::Stdout(memory) => {
                let lines = memory.committed.lock().unwrap();
                let numbers: Vec<i64> = lines
                    .split(|b| *b == b'\n')
                    .filter(|line| !line.is_empty())
                    .map(|line| {
                        let json: serde_json::Value = serde_json::from_slice(line).unwrap();
                        assert_eq!(json["partition_id"], PARTITION);
                        json["sequence_number"].as_i64().unwrap()
                    })
                    .collect();
                if numbers.is_empty() {
                    Vec::new()
                } else {
                    vec![numbers]
                }
            }
            Subject::File(dir, format) => {
                let mut windows: Vec<Vec<i64>> = archive_files(dir.path())
                    .iter()
                    .map(|path| {
                        let name = path.to_string_lossy();
                        assert!(name.ends_with(format.extension()), "{name}");
                        sequence_numbers(&name, &std::fs::read(path).unwrap())
                    })
                    .collect();
                windows.sort();
                windows
            }
            Subject::Blob {
                container, format, ..
            } => {
                let mut windows = Vec::new();
                for blob in container.list_with_metadata("").await.unwrap() {
                    assert!(blob.name.ends_with(format.extension()), "{}", blob.name);
                    let bytes = container.download(&blob.name).await.unwrap();
                    let numbers = sequence_numbers(&blob.name, &bytes);
                    if let Some(first) = numbers.first() {
                        assert_eq!(blob.metadata["firstsequencenumber"], first.to_string());
                        assert_eq!(blob.metadata["eventcount"], numbers.len().to_string());
                    }
                    assert_eq!(blob.metadata["format"], format.name());
                    windows.push(numbers);
                }
                windows.sort();
                windows
            }
        }
    }

    /// Committed files or blobs, empty ones included (stdout has none).
    async fn objects(&self) -> usize {
        match self {
            Subject::Stdout(_) => 0,
            Subject::File(dir, _) => archive_files(dir.path()).len(),
            Subject::Blob { container, .. } => {
                container.list_with_metadata("").await.unwrap().len()
            }
        }
    }

    /// The committed object `name`'s bytes, and its blob metadata (none for a file).
    async fn object(&self, name: &str) -> (Vec<u8>, Option<HashMap<String, String>>) {
        match self {
            Subject::Stdout(_) => panic!("stdout has no objects"),
            Subject::File(dir, _) => (std::fs::read(dir.path().join(name)).unwrap(), None),
            Subject::Blob { container, .. } => {
                let listed = container.list_with_metadata("").await.unwrap();
                let blob = listed
                    .into_iter()
                    .find(|b| b.name == name)
                    .expect("committed");
                let bytes = container.download(name).await.unwrap();
                (bytes.to_vec(), Some(blob.metadata))
            }
        }
    }

    /// Staging files the writer holds (file sink only).
    fn staging(&self) -> usize {
        match self {
            Subject::File(dir, _) => std::fs::read_dir(dir.path().join(".hubcap-staging"))
                .map_or(0, |entries| entries.count()),
            _ => 0,
        }
    }

    /// Makes the next commit fail the way the destination really fails.
    fn break_destination(&mut self) {
        match self {
            Subject::Stdout(memory) => memory.failures_left.store(1, Ordering::SeqCst),
            // A file where the window's directory must go: the link fails (ENOTDIR).
            Subject::File(dir, _) => std::fs::write(dir.path().join("hub"), b"in the way").unwrap(),
            Subject::Blob { azurite, .. } => azurite.stop(),
        }
    }

    fn repair_destination(&mut self) {
        match self {
            Subject::Stdout(memory) => memory.failures_left.store(0, Ordering::SeqCst),
            Subject::File(dir, _) => std::fs::remove_file(dir.path().join("hub")).unwrap(),
            Subject::Blob { azurite, .. } => azurite.restart(),
        }
    }
}

fn archive_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_name() == ".hubcap-staging" {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if strip_archive_extension(&path.to_string_lossy()).is_some() {
                found.push(path);
            }
        }
    }
    found
}

/// The sequence numbers of a committed object: Avro read with apache-avro (independently of
/// hubcap), the other formats with hubcap's archive reader (the interop tests read them with
/// pyarrow, DuckDB and Python's json).
fn sequence_numbers(name: &str, bytes: &[u8]) -> Vec<i64> {
    if !name.ends_with(".avro") {
        let mut numbers = Vec::new();
        hubcap::archive::read(Path::new(name), bytes, |event| {
            numbers.push(event.sequence_number);
            true
        })
        .expect("a committed object is a whole archive file");
        return numbers;
    }
    let avro = bytes;
    let reader = apache_avro::Reader::new(avro).expect("a committed object is a whole Avro file");
    reader
        .map(|record| {
            let apache_avro::types::Value::Record(fields) = record.unwrap() else {
                panic!("not a record");
            };
            match fields.iter().find(|(name, _)| name == "SequenceNumber") {
                Some((_, apache_avro::types::Value::Long(n))) => *n,
                other => panic!("SequenceNumber: {other:?}"),
            }
        })
        .collect()
}

fn events(range: std::ops::Range<i64>) -> Vec<ReceivedEvent> {
    range
        .map(|n| ReceivedEvent {
            sequence_number: n,
            offset: (n * 100).to_string(),
            enqueued_time_ms: 1_700_000_000_000 + n,
            partition_key: None,
            properties: Vec::new(),
            system_properties: Vec::new(),
            body: EventBody::Data(vec![format!("event {n}").into_bytes()]),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The scenarios

async fn appended_batches_commit_as_one_window_with_their_range(subject: Subject) {
    let mut sink = subject.open(NEVER);
    for batch in [0..10, 10..20, 20..30] {
        assert_eq!(sink.append(&events(batch)).await.unwrap(), None);
    }
    assert_eq!(
        subject.committed().await,
        Vec::<Vec<i64>>::new(),
        "nothing before the commit"
    );
    let window = sink.flush().await.unwrap().expect("a window was open");
    assert_eq!(window.first_sequence_number, Some(0));
    assert_eq!(window.last_sequence_number, Some(29));
    assert_eq!(window.last_offset.as_deref(), Some("2900"));
    assert_eq!(window.events, 30);
    assert!(window.bytes > 0);
    assert_eq!(subject.committed().await, vec![(0..30).collect::<Vec<_>>()]);
    assert_eq!(sink.flush().await.unwrap(), None, "nothing left to commit");
    assert_eq!(subject.staging(), 0);
}

async fn a_window_that_reaches_its_size_commits_on_that_append(subject: Subject) {
    let mut sink = subject.open(WindowSettings {
        max_bytes: 1,
        ..NEVER
    });
    let first = sink.append(&events(0..5)).await.unwrap().expect("full");
    assert_eq!(
        (first.first_sequence_number, first.last_sequence_number),
        (Some(0), Some(4))
    );
    let second = sink.append(&events(5..7)).await.unwrap().expect("full");
    assert_eq!((second.first_sequence_number, second.events), (Some(5), 2));
    let committed = subject.committed().await.concat();
    assert_eq!(committed, (0..7).collect::<Vec<_>>());
}

async fn a_window_that_reaches_its_age_commits_on_the_next_tick(subject: Subject) {
    let mut sink = subject.open(WindowSettings {
        max_age: Duration::from_millis(300),
        ..NEVER
    });
    let idle = tokio::time::timeout(Duration::from_millis(400), sink.rollover_due()).await;
    assert!(idle.is_err(), "no window, no deadline");
    sink.append(&events(0..3)).await.unwrap();
    assert_eq!(sink.tick().await.unwrap(), None, "young windows stay open");
    tokio::time::timeout(Duration::from_secs(5), sink.rollover_due())
        .await
        .expect("the window's deadline arrives");
    let window = sink.tick().await.unwrap().expect("an old window commits");
    assert_eq!(window.events, 3);
    assert_eq!(subject.committed().await, vec![vec![0, 1, 2]]);
}

async fn an_abandoned_window_leaves_nothing_behind(subject: Subject) {
    let mut sink = subject.open(NEVER);
    sink.append(&events(0..8)).await.unwrap();
    assert_eq!(sink.abandon(), 8);
    assert_eq!(sink.flush().await.unwrap(), None);
    assert_eq!(subject.committed().await, Vec::<Vec<i64>>::new());
    assert_eq!(subject.objects().await, 0);
    assert_eq!(subject.staging(), 0);
    // The partition carries on with a new window.
    sink.append(&events(8..10)).await.unwrap();
    sink.flush().await.unwrap();
    assert_eq!(subject.committed().await, vec![vec![8, 9]]);
}

async fn a_failed_commit_keeps_the_window_and_a_retry_commits_it_once(mut subject: Subject) {
    let mut sink = subject.open(NEVER);
    sink.append(&events(0..6)).await.unwrap();
    subject.break_destination();
    let error = sink.flush().await.expect_err("the destination is broken");
    assert!(
        matches!(error, SinkError::Failed(_)),
        "a failed commit keeps its window: {error}"
    );
    assert_eq!(error.recovery(), hubcap::recovery::Recovery::Retry);
    subject.repair_destination();
    let window = sink.flush().await.unwrap().expect("the retry commits");
    assert_eq!((window.first_sequence_number, window.events), (Some(0), 6));
    assert_eq!(subject.committed().await, vec![(0..6).collect::<Vec<_>>()]);
    assert_eq!(subject.staging(), 0);
}

async fn a_crash_before_the_commit_leaves_nothing_and_the_next_writer_starts_clean(
    subject: Subject,
) {
    let mut sink = subject.open(NEVER);
    sink.append(&events(0..4)).await.unwrap();
    drop(sink); // the process died: no commit, no abandon
    assert_eq!(subject.committed().await, Vec::<Vec<i64>>::new());
    assert_eq!(subject.objects().await, 0);
    let mut next = subject.open(NEVER);
    assert_eq!(
        subject.staging(),
        0,
        "the next writer removed the dead window's staging"
    );
    next.append(&events(0..4)).await.unwrap();
    next.flush().await.unwrap().expect("committed");
    assert_eq!(subject.committed().await, vec![vec![0, 1, 2, 3]]);
}

async fn windows_in_the_same_second_never_overwrite_each_other(subject: Subject) {
    let mut sink = subject.open(NEVER);
    for batch in [0..2, 2..4, 4..6] {
        sink.append(&events(batch)).await.unwrap();
        sink.flush().await.unwrap().expect("committed");
    }
    assert_eq!(
        subject.committed().await.concat(),
        (0..6).collect::<Vec<_>>()
    );
}

async fn empty_windows_are_written_only_when_configured(subject: Subject) {
    let mut skipping = subject.open(NEVER);
    assert_eq!(skipping.flush().await.unwrap(), None);
    assert_eq!(subject.objects().await, 0);
    let mut writing = subject.open(WindowSettings {
        skip_empty: false,
        ..NEVER
    });
    let window = writing
        .flush()
        .await
        .unwrap()
        .expect("an empty window is committed");
    assert_eq!((window.events, window.last_sequence_number), (0, None));
    let expected_objects = usize::from(!matches!(subject, Subject::Stdout(_)));
    assert_eq!(subject.objects().await, expected_objects);
    assert_eq!(subject.committed().await.concat(), Vec::<i64>::new());
}

// ---------------------------------------------------------------------------------------------
// Every scenario for every sink

macro_rules! conformance {
    ($sink:ident, $subject:expr) => {
        mod $sink {
            use super::*;

            #[tokio::test]
            async fn appended_batches_commit_as_one_window_with_their_range() {
                super::appended_batches_commit_as_one_window_with_their_range($subject).await;
            }
            #[tokio::test]
            async fn a_window_that_reaches_its_size_commits_on_that_append() {
                super::a_window_that_reaches_its_size_commits_on_that_append($subject).await;
            }
            #[tokio::test]
            async fn a_window_that_reaches_its_age_commits_on_the_next_tick() {
                super::a_window_that_reaches_its_age_commits_on_the_next_tick($subject).await;
            }
            #[tokio::test]
            async fn an_abandoned_window_leaves_nothing_behind() {
                super::an_abandoned_window_leaves_nothing_behind($subject).await;
            }
            #[tokio::test]
            async fn a_failed_commit_keeps_the_window_and_a_retry_commits_it_once() {
                super::a_failed_commit_keeps_the_window_and_a_retry_commits_it_once($subject).await;
            }
            #[tokio::test]
            async fn a_crash_before_the_commit_leaves_nothing_and_the_next_writer_starts_clean() {
                super::a_crash_before_the_commit_leaves_nothing_and_the_next_writer_starts_clean(
                    $subject,
                )
                .await;
            }
            #[tokio::test]
            async fn windows_in_the_same_second_never_overwrite_each_other() {
                super::windows_in_the_same_second_never_overwrite_each_other($subject).await;
            }
            #[tokio::test]
            async fn empty_windows_are_written_only_when_configured() {
                super::empty_windows_are_written_only_when_configured($subject).await;
            }
        }
    };
}

conformance!(stdout, Subject::stdout());
conformance!(avro_file, Subject::file(avro()));
conformance!(avro_blob, Subject::blob(avro()).await);
conformance!(parquet_file, Subject::file(parquet()));
conformance!(parquet_blob, Subject::blob(parquet()).await);
conformance!(jsonl_gzip_file, Subject::file(jsonl_gzip()));
conformance!(jsonl_zstd_blob, Subject::blob(jsonl_zstd()).await);

// ---------------------------------------------------------------------------------------------
// Beyond the shared scenarios

/// A staging file removed under an open window (by hand, or by a clean-up that mistook it for a
/// dead run's) cannot be committed by any retry: the window is dropped for a re-read instead of
/// failing forever.
#[tokio::test]
async fn avro_file_drops_a_window_whose_staging_file_vanished() {
    let subject = Subject::file(avro());
    let mut sink = subject.open(NEVER);
    sink.append(&events(0..5)).await.unwrap();
    let Subject::File(dir, _) = &subject else {
        unreachable!()
    };
    for entry in std::fs::read_dir(dir.path().join(".hubcap-staging")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    match sink.flush().await {
        Err(SinkError::WindowDropped { reread_from, .. }) => assert_eq!(reread_from, 0),
        other => panic!("expected the window dropped, got {other:?}"),
    }
    assert_eq!(sink.flush().await.unwrap(), None, "nothing left to retry");
    sink.append(&events(0..5)).await.unwrap();
    sink.flush()
        .await
        .unwrap()
        .expect("the re-read window commits");
    assert_eq!(subject.committed().await, vec![(0..5).collect::<Vec<_>>()]);
}

/// A staging file whose writer is alive is not a dead run's: a second writer starting on the
/// partition (a new owner sharing the directory) leaves it, and the first can still commit.
#[tokio::test]
async fn avro_file_keeps_a_live_writers_staging_when_another_writer_starts() {
    let subject = Subject::file(avro());
    let mut first = subject.open(NEVER);
    first.append(&events(0..5)).await.unwrap();
    let _second = subject.open(NEVER);
    assert_eq!(
        subject.staging(),
        1,
        "the live window's staging file is kept"
    );
    first.flush().await.unwrap().expect("committed");
    assert_eq!(subject.committed().await, vec![(0..5).collect::<Vec<_>>()]);
}

fn record_of(window: &hubcap::sink::CommittedWindow) -> CommitRecord {
    CommitRecord {
        first_sequence_number: window.first_sequence_number.unwrap(),
        last_sequence_number: window.last_sequence_number.unwrap(),
        name: window.name.clone().expect("a named window"),
    }
}

/// A window reproduced from its commit record after another writer already committed it (the
/// new owner of a partition whose previous owner died between commit and checkpoint): it ends
/// at the record's last event, finds its name holding the same events and counts as committed,
/// without a second copy; the events after it are left for a re-read.
async fn a_reproduced_window_ends_at_its_record_and_makes_no_second_copy(subject: Subject) {
    let mut first = subject.open(NEVER);
    first.append(&events(0..10)).await.unwrap();
    let committed = first.flush().await.unwrap().expect("committed");
    let record = record_of(&committed);

    let mut next = subject.open(NEVER);
    next.resume(record.clone());
    let again = next
        .append(&events(0..15))
        .await
        .unwrap()
        .expect("the reproduced window closes at its record's last event");
    assert_eq!(record_of(&again), record);
    assert_eq!(
        next.take_reread(),
        Some(10),
        "events after the window are read again"
    );
    assert_eq!(subject.committed().await, vec![(0..10).collect::<Vec<_>>()]);
}

/// A reproduced window short of its record's last event is never committed (a shorter file
/// under the name would hide the rest of the window from the other writer).
async fn an_incomplete_reproduction_is_not_committed(subject: Subject) {
    let mut sink = subject.open(NEVER);
    sink.resume(CommitRecord {
        first_sequence_number: 0,
        last_sequence_number: 9,
        name: format!("hub/p3/recorded{}", subject.extension()),
    });
    assert_eq!(sink.append(&events(0..5)).await.unwrap(), None);
    assert_eq!(sink.tick().await.unwrap(), None, "no age or size closes it");
    assert_eq!(sink.flush().await.unwrap(), None, "dropped, not committed");
    assert_eq!(subject.objects().await, 0);
    // Read again, it is reproduced again, and commits once complete.
    sink.append(&events(0..10))
        .await
        .unwrap()
        .expect("complete now");
    assert_eq!(subject.committed().await, vec![(0..10).collect::<Vec<_>>()]);
}

/// A recorded name that holds other events (another writer sharing the archive) is never
/// counted as this window's: the window is committed under another name.
async fn a_recorded_name_holding_other_events_is_not_this_window(subject: Subject) {
    let name = &format!("hub/p3/shared{}", subject.extension());
    let mut other = subject.open(NEVER);
    other.resume(CommitRecord {
        first_sequence_number: 50,
        last_sequence_number: 54,
        name: name.into(),
    });
    other
        .append(&events(50..55))
        .await
        .unwrap()
        .expect("committed");

    let mut sink = subject.open(NEVER);
    sink.resume(CommitRecord {
        first_sequence_number: 0,
        last_sequence_number: 4,
        name: name.into(),
    });
    let committed = match sink.append(&events(0..5)).await {
        Ok(Some(window)) => window,
        // A blob's blocks were staged under the taken name: it is read again under a new one.
        Err(SinkError::WindowDropped { reread_from: 0, .. }) => {
            sink.append(&events(0..5)).await.unwrap();
            sink.flush()
                .await
                .unwrap()
                .expect("committed under a new name")
        }
        other => panic!("expected a commit or a re-read, got {other:?}"),
    };
    assert_ne!(committed.name.as_deref(), Some(name.as_str()));
    assert_eq!(
        subject.committed().await,
        vec![(0..5).collect::<Vec<_>>(), (50..55).collect::<Vec<_>>()]
    );
}

/// A window reproduced from a record another format wrote (the config changed between a crash
/// and the restart) keeps the recorded name, and is written in the format that name says.
async fn a_record_of_another_format_is_reproduced_in_its_format(subject: Subject) {
    let name = "hub/p3/recorded.avro";
    let mut sink = subject.open(NEVER);
    sink.resume(CommitRecord {
        first_sequence_number: 0,
        last_sequence_number: 9,
        name: name.into(),
    });
    let committed = sink
        .append(&events(0..12))
        .await
        .unwrap()
        .expect("complete at the record's last event");
    assert_eq!(committed.name.as_deref(), Some(name));
    let (bytes, metadata) = subject.object(name).await;
    // Read with apache-avro: an Avro file, as its name says.
    assert_eq!(sequence_numbers(name, &bytes), (0..10).collect::<Vec<_>>());
    if let Some(metadata) = metadata {
        assert_eq!(metadata["format"], "avro");
    }
    // The events after the record are read again; their window is the configured format's.
    assert_eq!(sink.take_reread(), Some(10));
    sink.append(&events(10..12)).await.unwrap();
    let next = sink.flush().await.unwrap().expect("the rest committed");
    let next_name = next.name.unwrap();
    assert!(next_name.ends_with(subject.extension()), "{next_name}");
}

macro_rules! named_sinks {
    ($sink:ident, $subject:expr) => {
        mod $sink {
            use super::*;

            #[tokio::test]
            async fn a_reproduced_window_ends_at_its_record_and_makes_no_second_copy() {
                super::a_reproduced_window_ends_at_its_record_and_makes_no_second_copy($subject)
                    .await
            }

            #[tokio::test]
            async fn an_incomplete_reproduction_is_not_committed() {
                super::an_incomplete_reproduction_is_not_committed($subject).await
            }

            #[tokio::test]
            async fn a_recorded_name_holding_other_events_is_not_this_window() {
                super::a_recorded_name_holding_other_events_is_not_this_window($subject).await
            }
        }
    };
}

mod format_of_a_record {
    use super::*;

    #[tokio::test]
    async fn parquet_file() {
        a_record_of_another_format_is_reproduced_in_its_format(Subject::file(parquet())).await
    }

    #[tokio::test]
    async fn jsonl_zstd_blob() {
        a_record_of_another_format_is_reproduced_in_its_format(Subject::blob(jsonl_zstd()).await)
            .await
    }
}

mod exactly_once {
    use super::*;
    named_sinks!(avro_file, Subject::file(avro()));
    named_sinks!(avro_blob, Subject::blob(avro()).await);
    named_sinks!(parquet_file, Subject::file(parquet()));
    named_sinks!(jsonl_zstd_blob, Subject::blob(jsonl_zstd()).await);
}

/// Backfill's windows follow the events' enqueued time: named by the first event's (the events
/// here are from November 2023), never closed by the clock, and due at the first event's time
/// plus the window's age (the caller commits then); an empty window is never opened.
#[tokio::test]
async fn avro_file_windows_by_event_time_are_named_and_closed_by_enqueued_time() {
    let subject = Subject::file(avro());
    let mut sink = subject.open(WindowSettings {
        max_age: Duration::from_millis(300),
        skip_empty: false,
        ..NEVER
    });
    sink.windows_by_event_time();
    assert_eq!(sink.event_time_deadline(), None, "no window yet");
    assert_eq!(sink.flush().await.unwrap(), None, "no empty window either");
    let batch = events(0..5);
    assert_eq!(sink.append(&batch).await.unwrap(), None);
    assert_eq!(
        sink.event_time_deadline(),
        Some(batch[0].enqueued_time_ms + 300)
    );
    let clock = tokio::time::timeout(Duration::from_millis(500), sink.rollover_due()).await;
    assert!(clock.is_err(), "the clock never makes such a window due");
    assert_eq!(sink.tick().await.unwrap(), None, "nor does a tick");
    let window = sink.flush().await.unwrap().expect("committed on request");
    assert_eq!(window.events, 5);
    let files = archive_files(subject_root(&subject));
    assert_eq!(files.len(), 1, "{files:?}");
    // 1_700_000_000_000 ms is 2023-11-14T22:13:20Z.
    let name = files[0].to_string_lossy().into_owned();
    assert!(name.ends_with("hub/p3/20231114221320.avro"), "{name}");
}

fn subject_root(subject: &Subject) -> &Path {
    match subject {
        Subject::File(dir, _) => dir.path(),
        _ => panic!("a file subject"),
    }
}
