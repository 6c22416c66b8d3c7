//! Reading an `avro_file` archive back: every committed Capture file under the sink's root
//! (nothing under `.hubcap-staging/`, which holds windows not yet committed), decoded into the
//! same [`Event`]s the stdout sink prints, so one exactly-once check serves both sinks.

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use apache_avro::types::Value as Avro;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::Event;

/// The committed files of an archive, optionally leaving out those committed before a point
/// (a second run's view of an archive the first run also wrote to). Committed files are never
/// rewritten, so each is decoded once and remembered.
#[derive(Debug)]
pub struct Archive {
    root: PathBuf,
    /// Files committed before this view was taken: not this view's events.
    earlier: BTreeSet<PathBuf>,
    /// The events of each file decoded so far, by path.
    decoded: Mutex<BTreeMap<PathBuf, Vec<Event>>>,
}

impl Archive {
    /// Every file committed under `root`, now or later.
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            earlier: BTreeSet::new(),
            decoded: Mutex::new(BTreeMap::new()),
        }
    }

    /// Only the files committed under `root` from now on.
    pub fn from_now(root: &Path) -> Self {
        let mut archive = Self::new(root);
        archive.earlier = committed_files(root).into_iter().collect();
        archive
    }

    /// The committed files of this view, sorted by path.
    pub fn files(&self) -> Vec<PathBuf> {
        committed_files(&self.root)
            .into_iter()
            .filter(|path| !self.earlier.contains(path))
            .collect()
    }

    /// Every event in this view's files, file by file in the order of (partition, first
    /// sequence number): within a partition, a run that loses or repeats nothing reads as
    /// one ascending sequence.
    pub fn events(&self) -> Vec<Event> {
        let mut decoded = self.decoded.lock().unwrap_or_else(|p| p.into_inner());
        let mut files: Vec<&Vec<Event>> = Vec::new();
        let paths = self.files();
        for path in &paths {
            if !decoded.contains_key(path) {
                let events = read_file(&self.root, path);
                decoded.insert(path.clone(), events);
            }
        }
        for path in &paths {
            files.push(&decoded[path]);
        }
        files.sort_by_key(|events| {
            events
                .first()
                .map(|e| (e.partition_id.clone(), e.sequence_number))
        });
        files.into_iter().flatten().cloned().collect()
    }

    /// How many events this view holds.
    pub fn event_count(&self) -> usize {
        self.events().len()
    }
}

/// The `.avro` files under `root`, skipping hidden directories (the staging area).
pub fn committed_files(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if path.is_dir() {
                if !hidden {
                    pending.push(path);
                }
            } else if !hidden && path.extension().is_some_and(|e| e == "avro") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Decodes one committed file; its partition is the third component of its path below `root`
/// (see [`ARCHIVE_PATH_FORMAT`](super::ARCHIVE_PATH_FORMAT)). A file that does not decode
/// fails the test: committed files are complete.
fn read_file(root: &Path, path: &Path) -> Vec<Event> {
    let relative = path.strip_prefix(root).expect("a file under the root");
    let partition_id = relative
        .components()
        .nth(2)
        .unwrap_or_else(|| panic!("{}: no partition component", relative.display()))
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let reader = apache_avro::Reader::new(file)
        .unwrap_or_else(|e| panic!("{} is not an Avro file: {e}", path.display()));
    reader
        .map(|record| {
            let record = record
                .unwrap_or_else(|e| panic!("{}: a record does not decode: {e}", path.display()));
            event(&partition_id, record)
                .unwrap_or_else(|why| panic!("{}: not a Capture record: {why}", path.display()))
        })
        .collect()
}

/// A Capture `EventData` record as an [`Event`], bodies and properties as the stdout sink
/// prints them (text, else base64).
fn event(partition_id: &str, record: Avro) -> Result<Event, String> {
    let Avro::Record(fields) = record else {
        return Err("not a record".into());
    };
    let fields: BTreeMap<String, Avro> = fields.into_iter().collect();
    let field = |name: &str| fields.get(name).ok_or(format!("no field {name}"));
    let sequence_number = match field("SequenceNumber")? {
        Avro::Long(n) => *n,
        other => return Err(format!("SequenceNumber {other:?}")),
    };
    let text = |name: &str| match field(name)? {
        Avro::String(s) => Ok(s.clone()),
        other => Err(format!("{name} {other:?}")),
    };
    let system_properties = map(field("SystemProperties")?)?;
    let (body, body_encoding) = match unwrap_union(field("Body")?) {
        Avro::Null => (Value::Null, None),
        Avro::Bytes(bytes) => match String::from_utf8(bytes.clone()) {
            Ok(text) => (Value::String(text), None),
            Err(_) => (Value::String(base64_text(bytes)), Some("base64".to_owned())),
        },
        other => return Err(format!("Body {other:?}")),
    };
    Ok(Event {
        partition_id: partition_id.to_owned(),
        sequence_number,
        offset: text("Offset")?,
        enqueued_time: text("EnqueuedTimeUtc")?,
        partition_key: match system_properties.get("x-opt-partition-key") {
            Some(Value::String(key)) => Some(key.clone()),
            _ => None,
        },
        properties: map(field("Properties")?)?,
        body,
        body_encoding,
    })
}

fn unwrap_union(value: &Avro) -> &Avro {
    match value {
        Avro::Union(_, inner) => inner,
        other => other,
    }
}

/// A Capture properties map (values `[long, double, string, bytes]`) as JSON.
fn map(value: &Avro) -> Result<Map<String, Value>, String> {
    let Avro::Map(entries) = value else {
        return Err(format!("not a map: {value:?}"));
    };
    entries
        .iter()
        .map(|(key, value)| {
            let json = match unwrap_union(value) {
                Avro::Long(n) => Value::from(*n),
                Avro::Double(x) => Value::from(*x),
                Avro::String(s) => Value::String(s.clone()),
                Avro::Bytes(b) => serde_json::json!({ "base64": base64_text(b) }),
                other => return Err(format!("property {key}: {other:?}")),
            };
            Ok((key.clone(), json))
        })
        .collect()
}

fn base64_text(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Files left in the staging area under `root`: windows opened and not (yet) committed.
pub fn staging_files(root: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(root.join(".hubcap-staging")) {
        Ok(entries) => entries.flatten().map(|entry| entry.path()).collect(),
        Err(_) => Vec::new(),
    }
}
