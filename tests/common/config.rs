//! A hubcap config built section by section with fast test defaults, the sink under test, and
//! the temp directory a test's configs, checkpoints and archive live in.

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::{connection_string, StoreView, KEY};

/// The sink a scenario runs through: the same scenario body runs once per sink (see
/// [`for_each_sink`](super::for_each_sink)), and the events it delivered are read back from
/// stdout or from the committed Avro files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// JSON lines on hubcap's stdout.
    Stdout,
    /// Capture Avro files under [`Workdir::archive`].
    AvroFile,
}

/// The path format the `avro_file` tests write: Capture's default, spelled out, because the
/// archive reader takes the partition id from the third path component.
pub const ARCHIVE_PATH_FORMAT: &str =
    "{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}";

/// A hubcap config file, section by section, with the fast test defaults.
#[derive(Debug, Clone)]
pub struct HubcapConfig {
    sections: Vec<(String, Vec<(String, String)>)>,
    /// Where an `avro_file` sink writes: the test's [`Workdir::archive`].
    archive_root: PathBuf,
    /// Set once [`HubcapConfig::sink`] chose `avro_file`: where the delivered events are read.
    archive: Option<PathBuf>,
}

impl HubcapConfig {
    /// Stdout sink, file store under the workdir's `checkpoints`, 1 s windows and cycles, JSON
    /// logs, no HTTP endpoint.
    pub fn new(connection_string: &str, work: &Workdir) -> Self {
        let config = Self {
            sections: Vec::new(),
            archive_root: work.archive(),
            archive: None,
        };
        let checkpoints = work.checkpoints();
        config
            .set("eventhub", "connection_string", connection_string)
            .set("eventhub", "start_position", "earliest")
            .set("eventhub", "connect_timeout", "10s")
            .set("eventhub", "retry_min_backoff", "50ms")
            .set("eventhub", "retry_max_backoff", "1s")
            .set("checkpoint_store", "type", "file")
            .set(
                "checkpoint_store",
                "path",
                checkpoints.to_str().expect("a UTF-8 temp path"),
            )
            .set("load_balancing", "strategy", "greedy")
            .set("load_balancing", "update_interval", "1s")
            .set("load_balancing", "ownership_expiration", "3s")
            .set("sink", "type", "stdout")
            .set("sink", "max_window", "1s")
            .set("http", "listen", "off")
            .set("log", "format", "json")
            .set("log", "level", "info")
            .set("shutdown", "drain_timeout", "10s")
    }

    /// Switches to `sink`; the window limits stay as they are.
    pub fn sink(mut self, sink: Sink) -> Self {
        match sink {
            Sink::Stdout => {
                self.archive = None;
                self.set("sink", "type", "stdout")
                    .remove("sink", "path")
                    .remove("sink", "path_format")
            }
            Sink::AvroFile => {
                let root = self.archive_root.clone();
                self.archive = Some(root.clone());
                self.set("sink", "type", "avro_file")
                    .set("sink", "path", root.to_str().expect("a UTF-8 temp path"))
                    .set("sink", "path_format", ARCHIVE_PATH_FORMAT)
            }
        }
    }

    /// The directory of committed Avro files, if the sink is `avro_file`.
    pub fn archive(&self) -> Option<&Path> {
        self.archive.as_deref()
    }

    /// Serves `/metrics` on a loopback port the system picks (see `Hubcap::metrics_addr`).
    pub fn serve_http(self) -> Self {
        self.set("http", "listen", "127.0.0.1:0")
    }

    /// Sets a string value (quoted and escaped as TOML).
    pub fn set(self, section: &str, key: &str, value: &str) -> Self {
        self.set_raw(section, key, &toml::Value::String(value.into()).to_string())
    }

    /// Sets a value written as is (numbers, booleans).
    pub fn set_raw(mut self, section: &str, key: &str, raw: &str) -> Self {
        let index = match self.sections.iter().position(|(name, _)| name == section) {
            Some(index) => index,
            None => {
                self.sections.push((section.to_owned(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let entries = &mut self.sections[index].1;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = raw.to_owned(),
            None => entries.push((key.to_owned(), raw.to_owned())),
        }
        self
    }

    /// Switches the checkpoint store to Blob Storage: `container` of the account that
    /// `connection_string` names (an Azurite's, in the tests).
    pub fn blob_store(self, connection_string: &str, container: &str) -> Self {
        self.remove("checkpoint_store", "path")
            .set("checkpoint_store", "type", "azure_blob")
            .set("checkpoint_store", "connection_string", connection_string)
            .set("checkpoint_store", "container", container)
    }

    /// Removes a key (e.g. the file store's `path` when switching to the blob store).
    pub fn remove(mut self, section: &str, key: &str) -> Self {
        if let Some((_, entries)) = self.sections.iter_mut().find(|(name, _)| name == section) {
            entries.retain(|(k, _)| k != key);
        }
        self
    }

    pub fn to_toml(&self) -> String {
        let mut text = String::new();
        for (section, entries) in &self.sections {
            text.push_str(&format!("[{section}]\n"));
            for (key, value) in entries {
                text.push_str(&format!("{key} = {value}\n"));
            }
            text.push('\n');
        }
        text
    }
}

/// A test's temp directory: configs, the checkpoint store and the archive live here.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
    }

    /// The `avro_file` sink's root directory.
    pub fn archive(&self) -> PathBuf {
        self.dir.path().join("archive")
    }

    /// The test defaults for hubcap reaching the emulator (or a proxy) at `endpoint` with the
    /// right key.
    pub fn config(&self, endpoint: SocketAddr) -> HubcapConfig {
        self.config_with_key(endpoint, KEY)
    }

    /// The test defaults, signing with `key` (a wrong one, say).
    pub fn config_with_key(&self, endpoint: SocketAddr, key: &str) -> HubcapConfig {
        HubcapConfig::new(&connection_string(endpoint, key), self)
    }

    /// The checkpoint store's records for hubcap reaching the hub at `endpoint`.
    pub fn store(&self, endpoint: SocketAddr) -> StoreView {
        StoreView::new(&self.checkpoints(), endpoint)
    }

    /// Writes `config` as `name` and returns its path.
    pub fn write_config(&self, name: &str, config: &HubcapConfig) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, config.to_toml()).expect("write the config");
        path
    }
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}
