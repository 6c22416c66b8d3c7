//! Shared code for the pipeline tests: the in-process emulator, a hubcap config in a temp
//! directory, the real `hubcap` binary with its stdout (one JSON line per event) and stderr
//! (JSON logs) collected by reader threads, the file checkpoint store's records, publishers,
//! an AMQP-aware loopback proxy that counts frames, and waits that poll with deadlines.
//!
//! Nothing here sleeps and hopes: every wait is a condition polled until a deadline, and a
//! failed wait names what it was waiting for. A `Hubcap` dropped while the test is panicking
//! prints the tail of its log, so a failure shows what the daemon was doing.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use hubcap::eventhubs::{ClientSettings, Credential, EventHubClient, OutgoingEvent, SendTarget};
use hubcap::secret::Secret;
use hubcap_emulator::config::{HubConfig, SasKeyConfig};
use hubcap_emulator::store::Partition;
use hubcap_emulator::{Emulator, EmulatorConfig};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const HUB: &str = "hub1";
pub const KEY_NAME: &str = "RootManageSharedAccessKey";
/// The emulator's SAS key; distinctive so a test can search logs for it.
pub const KEY: &str = "PipelineTestKey+4f1dc0a9e7";
pub const CONSUMER_GROUP: &str = "$Default";
/// How often waits re-check their condition.
pub const POLL: Duration = Duration::from_millis(20);
/// Upper bound for one network step of a library client (connect, attach, send).
pub const STEP: Duration = Duration::from_secs(10);
/// The `[shutdown] drain_timeout` every test config uses.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `check` until it holds, failing the test after `limit`; returns how long it took.
pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Awaits `future`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The emulator

/// One hub, [`HUB`], with `partitions` partitions and the key [`KEY`], on a free port.
pub fn emulator_config(partitions: usize) -> EmulatorConfig {
    EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        hubs: vec![HubConfig {
            name: HUB.into(),
            partitions,
        }],
        sas_keys: vec![SasKeyConfig {
            name: KEY_NAME.into(),
            key: KEY.into(),
        }],
        ..Default::default()
    }
}

pub async fn start_emulator(partitions: usize) -> Emulator {
    start_emulator_with(emulator_config(partitions)).await
}

pub async fn start_emulator_with(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.expect("the emulator starts")
}

/// A connection string for the emulator (or a proxy in front of it) at `addr`, signed with `key`.
pub fn connection_string(addr: SocketAddr, key: &str) -> String {
    format!(
        "Endpoint=sb://{addr}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key};\
         UseDevelopmentEmulator=true;EntityPath={HUB}"
    )
}

pub fn partitions(emulator: &Emulator) -> Vec<Arc<Partition>> {
    emulator
        .namespace()
        .hub(HUB)
        .expect("the test hub exists")
        .partitions
        .clone()
}

pub fn partition_ids(emulator: &Emulator) -> Vec<String> {
    partitions(emulator).iter().map(|p| p.id.clone()).collect()
}

/// Appends `count` synthetic events of `size` body bytes to every partition.
pub fn preload_each(emulator: &Emulator, count: u64, size: usize) {
    for partition in partitions(emulator) {
        partition.preload(count, size).expect("preload");
    }
}

/// The last enqueued sequence number of every partition (-1 when empty).
pub fn last_sequence_numbers(emulator: &Emulator) -> BTreeMap<String, i64> {
    partitions(emulator)
        .iter()
        .map(|p| (p.id.clone(), p.properties().last_enqueued_sequence_number))
        .collect()
}

/// Every event the hub holds now, as (partition, sequence number).
pub fn all_event_ids(emulator: &Emulator) -> BTreeSet<EventId> {
    partitions(emulator)
        .iter()
        .flat_map(|p| {
            let props = p.properties();
            (props.begin_sequence_number..=props.last_enqueued_sequence_number)
                .map(|n| EventId::new(&p.id, n))
        })
        .collect()
}

/// Library client settings for the emulator at `addr`.
pub fn client_settings(addr: SocketAddr, credential: Credential) -> ClientSettings {
    ClientSettings {
        host: addr.ip().to_string(),
        port: addr.port(),
        tls: false,
        ca_file: None,
        event_hub: HUB.into(),
        consumer_group: CONSUMER_GROUP.into(),
        credential,
        connect_timeout: STEP,
    }
}

pub fn sas_credential() -> Credential {
    Credential::SharedAccessKey {
        key_name: KEY_NAME.into(),
        key: Secret::new(KEY),
        token_lifetime: Duration::from_secs(3600),
    }
}

/// Publishes `events` to one partition through hubcap's own sender.
pub async fn publish(emulator: &Emulator, partition_id: &str, events: &[OutgoingEvent]) {
    let client = EventHubClient::new(client_settings(emulator.amqp_addr(), sas_credential()))
        .expect("client settings are valid");
    let mut sender = within(
        "open a sender",
        STEP,
        client.open_sender(&SendTarget::Partition(partition_id.into())),
    )
    .await
    .expect("the sender attaches");
    within("publish", STEP, sender.send(events))
        .await
        .expect("the emulator accepts the events");
    sender.close().await;
    client.close().await;
}

/// A task appending synthetic events at a steady rate, round-robin over the partitions,
/// straight into the emulator's log: the publisher must not itself suffer the faults a test
/// injects into connections.
pub struct Stream {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<u64>,
}

/// Streams `per_second` events of `size` body bytes until [`Stream::stop`].
pub fn stream(emulator: &Emulator, per_second: u64, size: usize) -> Stream {
    const TICK: Duration = Duration::from_millis(50);
    let partitions = partitions(emulator);
    let per_tick = (per_second / 20).max(1);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(TICK);
        let mut next = 0usize;
        let mut total = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopped.cancelled() => return total,
            }
            let mut counts = vec![0u64; partitions.len()];
            for _ in 0..per_tick {
                counts[next % partitions.len()] += 1;
                next += 1;
            }
            for (partition, count) in partitions.iter().zip(counts) {
                if count > 0 {
                    partition.preload(count, size).expect("append");
                }
            }
            total += per_tick;
        }
    });
    Stream { stop, task }
}

impl Stream {
    /// Stops publishing; returns how many events were appended.
    pub async fn stop(self) -> u64 {
        self.stop.cancel();
        self.task.await.expect("the publishing task ends")
    }
}

// ---------------------------------------------------------------------------------------------
// Events as hubcap prints them

/// One event's identity: partition and sequence number.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub partition_id: String,
    pub sequence_number: i64,
}

impl EventId {
    pub fn new(partition_id: &str, sequence_number: i64) -> Self {
        Self {
            partition_id: partition_id.to_owned(),
            sequence_number,
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.partition_id, self.sequence_number)
    }
}

/// One stdout line of the stdout sink (see src/sink/stdout.rs).
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    pub partition_id: String,
    pub sequence_number: i64,
    pub offset: String,
    pub enqueued_time: String,
    pub partition_key: Option<String>,
    #[serde(default)]
    pub properties: Map<String, Value>,
    #[serde(default)]
    pub body: Value,
    pub body_encoding: Option<String>,
}

impl Event {
    pub fn id(&self) -> EventId {
        EventId::new(&self.partition_id, self.sequence_number)
    }
}

/// How often each event was printed.
pub fn count_by_id<'a>(events: impl IntoIterator<Item = &'a Event>) -> BTreeMap<EventId, usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        *counts.entry(event.id()).or_insert(0) += 1;
    }
    counts
}

/// Whether every expected event was printed at least once.
pub fn covers(events: &[Event], expected: &BTreeSet<EventId>) -> bool {
    let seen: BTreeSet<EventId> = events.iter().map(Event::id).collect();
    expected.is_subset(&seen)
}

/// The first few items, for failure messages.
pub fn sample<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let mut items = items.into_iter();
    let shown: Vec<String> = items.by_ref().take(12).map(|i| i.to_string()).collect();
    let more = items.count();
    if more > 0 {
        format!("{} (and {more} more)", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Asserts that `events` hold every expected event exactly once and nothing else.
pub fn assert_exactly_once(what: &str, events: &[Event], expected: &BTreeSet<EventId>) {
    let counts = count_by_id(events);
    let missing: Vec<&EventId> = expected
        .iter()
        .filter(|id| !counts.contains_key(id))
        .collect();
    let duplicated: Vec<String> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, n)| format!("{id} x{n}"))
        .collect();
    let unexpected: Vec<&EventId> = counts.keys().filter(|id| !expected.contains(id)).collect();
    assert!(
        missing.is_empty() && duplicated.is_empty() && unexpected.is_empty(),
        "{what}: {} events printed for {} expected\n  missing: {}\n  duplicated: {}\n  unexpected: {}",
        events.len(),
        expected.len(),
        sample(&missing),
        sample(&duplicated),
        sample(&unexpected),
    );
}

// ---------------------------------------------------------------------------------------------
// Config and store

/// A hubcap config file, section by section, with the fast test defaults.
#[derive(Debug, Clone)]
pub struct HubcapConfig {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl HubcapConfig {
    /// Stdout sink, file store under `checkpoints`, 1 s windows and cycles, JSON logs.
    pub fn new(connection_string: &str, checkpoints: &Path) -> Self {
        let config = Self {
            sections: Vec::new(),
        };
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

/// A test's temp directory: configs and the checkpoint store live here.
pub struct Workdir {
    dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn checkpoints(&self) -> PathBuf {
        self.dir.path().join("checkpoints")
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

/// An ownership record of the file store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct OwnershipRecord {
    pub ownerid: String,
    pub version: u64,
    pub last_modified_unix_ms: u64,
}

/// A checkpoint record of the file store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckpointRecord {
    pub offset: Option<String>,
    pub sequencenumber: Option<i64>,
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

// ---------------------------------------------------------------------------------------------
// The hubcap process

/// A log line hubcap wrote to stderr in `[log] format = "json"`.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub level: String,
    pub target: String,
    pub message: String,
    pub fields: Map<String, Value>,
}

impl LogLine {
    fn parse(line: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(line).ok()?;
        let mut fields = value.get("fields")?.as_object()?.clone();
        let message = match fields.remove("message") {
            Some(Value::String(message)) => message,
            _ => String::new(),
        };
        Some(Self {
            level: value.get("level")?.as_str()?.to_owned(),
            target: value
                .get("target")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            message,
            fields,
        })
    }

    /// A field as text (strings without their quotes).
    pub fn field(&self, name: &str) -> Option<String> {
        self.fields.get(name).map(|value| match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
    }
}

/// What the reader threads collected.
#[derive(Debug, Default)]
struct Output {
    events: Mutex<Vec<Event>>,
    /// Stdout lines that are not an event: a broken sink contract.
    bad_lines: Mutex<Vec<String>>,
    stderr: Mutex<Vec<String>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running `hubcap run --config FILE` with its output collected.
pub struct Hubcap {
    name: String,
    child: Child,
    output: Arc<Output>,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Hubcap {
    /// Starts the real binary; `name` labels it in failure output.
    pub fn spawn(name: &str, config: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hubcap"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("HUBCAP_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hubcap starts");
        let output = Arc::new(Output::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let out = Arc::clone(&output);
        let stdout_reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Event>(&line) {
                    Ok(event) => lock(&out.events).push(event),
                    Err(_) => lock(&out.bad_lines).push(line),
                }
            }
        });
        let out = Arc::clone(&output);
        let stderr_reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lock(&out.stderr).push(line);
            }
        });
        Self {
            name: name.to_owned(),
            child,
            output,
            readers: vec![stdout_reader, stderr_reader],
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every event printed so far, in order. Fails the test if stdout had a line that is not
    /// an event.
    pub fn events(&self) -> Vec<Event> {
        let bad = lock(&self.output.bad_lines);
        assert!(
            bad.is_empty(),
            "{}: stdout lines that are not events: {}",
            self.name,
            sample(bad.iter())
        );
        lock(&self.output.events).clone()
    }

    pub fn event_count(&self) -> usize {
        lock(&self.output.events).len()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> String {
        lock(&self.output.stderr).join("\n")
    }

    /// The stderr lines that are JSON log records.
    pub fn logs(&self) -> Vec<LogLine> {
        lock(&self.output.stderr)
            .iter()
            .filter_map(|line| LogLine::parse(line))
            .collect()
    }

    pub fn count_logs(&self, mut matches: impl FnMut(&LogLine) -> bool) -> usize {
        self.logs().iter().filter(|line| matches(line)).count()
    }

    pub fn has_log(&self, matches: impl FnMut(&LogLine) -> bool) -> bool {
        self.count_logs(matches) > 0
    }

    /// Waits for a log line; fails the test after `limit`.
    pub async fn wait_for_log(
        &self,
        what: &str,
        limit: Duration,
        mut matches: impl FnMut(&LogLine) -> bool,
    ) {
        eventually(&format!("{}: {what}", self.name), limit, || {
            self.has_log(&mut matches)
        })
        .await;
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// SIGTERM: drain and exit.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        self.signal("KILL");
        let status = self.child.wait().expect("reap hubcap");
        self.exit = Some(status);
    }

    pub fn is_running(&mut self) -> bool {
        self.exit.is_none() && self.child.try_wait().expect("try_wait").is_none()
    }

    /// SIGTERM, then a drain that must end with exit status 0 within [`DRAIN_TIMEOUT`]; returns
    /// every event printed.
    pub async fn stop_cleanly(&mut self) -> Vec<Event> {
        self.terminate();
        let status = self.wait_exit(DRAIN_TIMEOUT).await;
        assert!(status.success(), "{} exited with {status}", self.name);
        self.events()
    }

    /// Waits for the process to exit and for its output to be read to the end.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.exit {
                break status;
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.exit = Some(status);
                break status;
            }
            assert!(
                start.elapsed() < limit,
                "{}: still running after {limit:?}",
                self.name
            );
            tokio::time::sleep(POLL).await;
        };
        eventually(
            &format!("{}: its output read to the end", self.name),
            STEP,
            || self.readers.iter().all(JoinHandle::is_finished),
        )
        .await;
        status
    }
}

impl Drop for Hubcap {
    fn drop(&mut self) {
        if self.exit.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let stderr = lock(&self.output.stderr);
            let tail = stderr.len().saturating_sub(120);
            eprintln!(
                "----- {} (pid {}): {} events printed; last stderr lines:\n{}\n-----",
                self.name,
                self.child.id(),
                lock(&self.output.events).len(),
                stderr[tail..].join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A frame-counting proxy

/// A loopback TCP proxy in front of the emulator that parses the AMQP frames going each way
/// and counts performatives: what a test cannot see inside hubcap, it can see on the wire.
pub struct AmqpProxy {
    addr: SocketAddr,
    counts: Arc<FrameCounts>,
    stop: CancellationToken,
}

/// The `link-credit`s a client granted one link.
#[derive(Debug, Default, Clone, Copy)]
struct Granted {
    largest: u64,
    last: u64,
}

/// Performative counts: `open` is 0x10 ... `close` 0x18.
#[derive(Debug, Default)]
pub struct FrameCounts {
    to_client: [AtomicU64; 9],
    from_client: [AtomicU64; 9],
    /// The highest `delivery-count` in a link `flow` the client sent.
    client_flow_delivery_count: AtomicU64,
    /// The credit the client granted in its link flows, by the name it attached the link with.
    client_link_credit: Mutex<BTreeMap<String, Granted>>,
}

pub const ATTACH: u8 = 0x12;
pub const FLOW: u8 = 0x13;
pub const TRANSFER: u8 = 0x14;

impl AmqpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let counts = Arc::new(FrameCounts::default());
        let stop = CancellationToken::new();
        let (accept_counts, accept_stop) = (Arc::clone(&counts), stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                    _ = accept_stop.cancelled() => return,
                };
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(
                    server_read,
                    client_write,
                    Arc::clone(&accept_counts),
                    true,
                    accept_stop.clone(),
                ));
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    Arc::clone(&accept_counts),
                    false,
                    accept_stop.clone(),
                ));
            }
        });
        Self { addr, counts, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Frames with `performative` the emulator sent to hubcap.
    pub fn sent_to_client(&self, performative: u8) -> u64 {
        self.counts.to_client[usize::from(performative - 0x10)].load(Ordering::SeqCst)
    }

    /// Frames with `performative` hubcap sent to the emulator.
    pub fn sent_by_client(&self, performative: u8) -> u64 {
        self.counts.from_client[usize::from(performative - 0x10)].load(Ordering::SeqCst)
    }

    /// The highest `delivery-count` hubcap has granted credit at: a receiver sends a link
    /// `flow` with the deliveries it has seen whenever it tops up its credit, and hubcap tops
    /// up only after taking events off the link into its window.
    pub fn client_flow_delivery_count(&self) -> u64 {
        self.counts
            .client_flow_delivery_count
            .load(Ordering::SeqCst)
    }

    /// The largest credit hubcap has granted in one `flow` to a link whose name starts with
    /// `prefix` (0 before any).
    pub fn max_link_credit(&self, prefix: &str) -> u64 {
        self.link_credits(prefix)
            .iter()
            .map(|granted| granted.largest)
            .max()
            .unwrap_or(0)
    }

    /// The credit of the latest `flow` hubcap sent a link whose name starts with `prefix`
    /// (the largest such, if several links match; 0 before any).
    pub fn last_link_credit(&self, prefix: &str) -> u64 {
        self.link_credits(prefix)
            .iter()
            .map(|granted| granted.last)
            .max()
            .unwrap_or(0)
    }

    fn link_credits(&self, prefix: &str) -> Vec<Granted> {
        let credits = self.counts.client_link_credit.lock().expect("credit map");
        credits
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, granted)| *granted)
            .collect()
    }
}

impl Drop for AmqpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counts: Arc<FrameCounts>,
    to_client: bool,
    stop: CancellationToken,
) {
    let mut parser = FrameParser::default();
    // The client's links by (channel, handle), from its attaches.
    let mut link_names: BTreeMap<(u16, u64), String> = BTreeMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.cancelled() => break,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        // Counted once written on, so a count means the bytes are on their way to the peer.
        parser.feed(&buf[..n], |channel, code, body| {
            if !(0x10..=0x18).contains(&code) {
                return;
            }
            let table = if to_client {
                &counts.to_client
            } else {
                &counts.from_client
            };
            table[usize::from(code - 0x10)].fetch_add(1, Ordering::SeqCst);
            if to_client {
                return;
            }
            if code == ATTACH {
                if let Some((name, handle)) = attach_fields(body) {
                    link_names.insert((channel, handle), name);
                }
            }
            if code == FLOW {
                if let Some(flow) = link_flow_fields(body) {
                    counts
                        .client_flow_delivery_count
                        .fetch_max(flow.delivery_count, Ordering::SeqCst);
                    if let Some(name) = link_names.get(&(channel, flow.handle)) {
                        let mut credits = counts.client_link_credit.lock().expect("credit map");
                        let granted = credits.entry(name.clone()).or_default();
                        granted.largest = flow.link_credit.max(granted.largest);
                        granted.last = flow.link_credit;
                    }
                }
            }
        });
    }
    let _ = to.shutdown().await;
}

/// Splits a byte stream into AMQP frames (skipping the protocol headers).
#[derive(Debug, Default)]
struct FrameParser {
    buffer: Vec<u8>,
    /// Set on bytes that are not AMQP framing: counting stops, forwarding goes on, and the
    /// waits on the counts fail by their deadlines.
    lost_track: bool,
}

impl FrameParser {
    /// Calls `on_performative(channel, code, body)` for every complete AMQP frame.
    fn feed(&mut self, bytes: &[u8], mut on_performative: impl FnMut(u16, u8, &[u8])) {
        if self.lost_track {
            return;
        }
        self.buffer.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            let rest = &self.buffer[at..];
            if rest.len() < 8 {
                break;
            }
            if rest.starts_with(b"AMQP") {
                at += 8;
                continue;
            }
            let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if size < 8 {
                eprintln!("proxy: frame size {size} is not AMQP framing; no longer counting");
                self.lost_track = true;
                self.buffer.clear();
                return;
            }
            if rest.len() < size {
                break;
            }
            let data_offset = usize::from(rest[4]) * 4;
            // Type 0 is an AMQP frame (1 is SASL); an empty body is a heartbeat.
            if rest[5] == 0 && size > data_offset {
                let body = &rest[data_offset..size];
                let channel = u16::from_be_bytes([rest[6], rest[7]]);
                if let Some(code) = performative(body) {
                    on_performative(channel, code, body);
                }
            }
            at += size;
        }
        self.buffer.drain(..at);
    }
}

/// The descriptor code of a frame body: `0x00 0x53 <code>` or `0x00 0x80 <u64 code>`.
fn performative(body: &[u8]) -> Option<u8> {
    match body {
        [0x00, 0x53, code, ..] => Some(*code),
        [0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, code, ..] => Some(*code),
        _ => None,
    }
}

/// What the tests read from a link `flow`.
struct LinkFlow {
    handle: u64,
    delivery_count: u64,
    link_credit: u64,
}

/// The handle, `delivery-count` and `link-credit` of a link `flow` frame body; `None` for a
/// session flow (no handle).
///
/// flow = list [next-incoming-id, incoming-window, next-outgoing-id, outgoing-window, handle,
/// delivery-count, link-credit, ...], every one of these a uint or null.
fn link_flow_fields(body: &[u8]) -> Option<LinkFlow> {
    let fields = performative_fields(body, FLOW, 7)?;
    let uint = |index: usize| match fields.get(index) {
        Some(Field::Uint(value)) => Some(*value),
        _ => None,
    };
    Some(LinkFlow {
        handle: uint(4)?,
        delivery_count: uint(5)?,
        link_credit: uint(6).unwrap_or(0),
    })
}

/// The name and handle of an `attach` frame body: list [name, handle, role, ...].
fn attach_fields(body: &[u8]) -> Option<(String, u64)> {
    match performative_fields(body, ATTACH, 2)?.as_slice() {
        [Field::Str(name), Field::Uint(handle)] => Some((name.clone(), *handle)),
        _ => None,
    }
}

/// A performative field, as far as the proxy reads them.
enum Field {
    Null,
    Uint(u64),
    Str(String),
}

/// The first `wanted` fields of performative `code`'s list (fewer if the list is shorter);
/// `None` for another performative or a field type the proxy does not read.
fn performative_fields(body: &[u8], code: u8, wanted: usize) -> Option<Vec<Field>> {
    let list = match body {
        [0x00, 0x53, c, rest @ ..] if *c == code => rest,
        [0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, c, rest @ ..] if *c == code => rest,
        _ => return None,
    };
    let (count, mut items) = match list {
        [0xc0, _size, count, rest @ ..] => (usize::from(*count), rest),
        [0xd0, _, _, _, _, a, b, c, d, rest @ ..] => {
            (u32::from_be_bytes([*a, *b, *c, *d]) as usize, rest)
        }
        _ => return None,
    };
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut fields = Vec::with_capacity(wanted);
    for _ in 0..count.min(wanted) {
        let (field, rest) = match items {
            [0x40, rest @ ..] => (Field::Null, rest),
            [0x43 | 0x44, rest @ ..] => (Field::Uint(0), rest),
            [0x52 | 0x53, v, rest @ ..] => (Field::Uint(u64::from(*v)), rest),
            [0x70, rest @ ..] if rest.len() >= 4 => {
                (Field::Uint(u64::from(be32(rest))), &rest[4..])
            }
            [0xa1, len, rest @ ..] if rest.len() >= usize::from(*len) => {
                let (text, rest) = rest.split_at(usize::from(*len));
                (Field::Str(String::from_utf8_lossy(text).into_owned()), rest)
            }
            [0xb1, rest @ ..] if rest.len() >= 4 && rest.len() - 4 >= be32(rest) as usize => {
                let (text, rest) = rest[4..].split_at(be32(rest) as usize);
                (Field::Str(String::from_utf8_lossy(text).into_owned()), rest)
            }
            _ => return None,
        };
        fields.push(field);
        items = rest;
    }
    Some(fields)
}
