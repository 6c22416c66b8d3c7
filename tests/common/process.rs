//! The real `hubcap run --config FILE` as a child process: its stdout (one JSON line per event
//! with the stdout sink) and stderr (JSON logs) collected by reader threads, signals, exit
//! status, and the events it delivered through whichever sink it runs. A `Hubcap` dropped while
//! the test is panicking prints the tail of its log, so a failure shows what it was doing.

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{
    covers, eventually, sample, Archive, Event, EventId, HubcapConfig, Workdir, DRAIN_TIMEOUT,
    POLL, STEP,
};

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

    /// Whether the record carries field `name`.
    pub fn has(&self, name: &str) -> bool {
        self.fields.contains_key(name)
    }

    /// The record of a committed and checkpointed window, known by its fields (the range and
    /// size of what was committed), not by its wording.
    pub fn is_commit(&self) -> bool {
        self.has("events") && self.has("first_sequence_number") && self.has("last_sequence_number")
    }

    /// The record of an Event Hubs connection opened: the client's lines that name the
    /// endpoint and the connection's generation.
    pub fn is_connection(&self) -> bool {
        self.target.ends_with("eventhubs::client") && self.has("endpoint") && self.has("generation")
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

/// Where a run's delivered events are read.
#[derive(Debug)]
enum Delivery {
    /// JSON lines on its stdout.
    Stdout,
    /// Files it committed to the archive (not those of earlier runs).
    Archive(Archive),
}

/// A running `hubcap run --config FILE` with its output collected.
pub struct Hubcap {
    name: String,
    child: Child,
    delivery: Delivery,
    output: Arc<Output>,
    readers: Vec<JoinHandle<()>>,
    exit: Option<ExitStatus>,
}

impl Hubcap {
    /// Writes `config` into `work` and starts the real binary on it; `name` labels the run in
    /// failure output and names its config file.
    pub fn start(name: &str, work: &Workdir, config: &HubcapConfig) -> Self {
        Self::start_with_env(name, work, config, &[])
    }

    /// [`Hubcap::start`] with extra environment variables (e.g. the `HUBCAP_TEST_CRASH` hook).
    pub fn start_with_env(
        name: &str,
        work: &Workdir,
        config: &HubcapConfig,
        env: &[(&str, &str)],
    ) -> Self {
        let file_name = format!("{}.toml", name.replace(|c: char| !c.is_alphanumeric(), "-"));
        let path = work.write_config(&file_name, config);
        let delivery = match config.archive() {
            Some(root) => Delivery::Archive(Archive::from_now(root)),
            None => Delivery::Stdout,
        };
        Self::spawn(name, &path, delivery, env)
    }

    fn spawn(
        name: &str,
        config: &std::path::Path,
        delivery: Delivery,
        env: &[(&str, &str)],
    ) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hubcap"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("HUBCAP_CONFIG")
            .envs(env.iter().copied())
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
            delivery,
            output,
            readers: vec![stdout_reader, stderr_reader],
            exit: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every event this run delivered so far: printed, in order, or in the files it committed
    /// (see [`Archive::events`] for their order). Fails the test if stdout had a line that is
    /// not an event, or any line at all with the `avro_file` sink.
    pub fn events(&self) -> Vec<Event> {
        let bad = lock(&self.output.bad_lines);
        assert!(
            bad.is_empty(),
            "{}: stdout lines that are not events: {}",
            self.name,
            sample(bad.iter())
        );
        let printed = lock(&self.output.events);
        match &self.delivery {
            Delivery::Stdout => printed.clone(),
            Delivery::Archive(archive) => {
                assert!(
                    printed.is_empty(),
                    "{}: the avro_file sink printed events",
                    self.name
                );
                archive.events()
            }
        }
    }

    pub fn event_count(&self) -> usize {
        match &self.delivery {
            Delivery::Stdout => lock(&self.output.events).len(),
            Delivery::Archive(archive) => archive.event_count(),
        }
    }

    /// Waits until this run delivered every event in `expected`.
    pub async fn wait_to_deliver(&self, expected: &BTreeSet<EventId>, limit: Duration) {
        let what = format!("{}: all {} events delivered", self.name, expected.len());
        eventually(&what, limit, || covers(&self.events(), expected)).await;
    }

    /// Waits until this run delivered more than `more` events beyond what it had delivered
    /// when called: it is making progress.
    pub async fn wait_for_progress(&self, what: &str, more: usize, limit: Duration) {
        let delivered = self.event_count();
        eventually(&format!("{}: {what}", self.name), limit, || {
            self.event_count() > delivered + more
        })
        .await;
    }

    /// The files this run committed, with the `avro_file` sink.
    pub fn committed_files(&self) -> Vec<std::path::PathBuf> {
        match &self.delivery {
            Delivery::Stdout => panic!("{}: runs the stdout sink", self.name),
            Delivery::Archive(archive) => archive.files(),
        }
    }

    /// How many Event Hubs connections it opened (each has its own generation).
    pub fn connections(&self) -> usize {
        self.logs()
            .iter()
            .filter(|l| l.is_connection())
            .filter_map(|l| l.field("generation"))
            .collect::<BTreeSet<_>>()
            .len()
    }

    /// Where its HTTP endpoint listens, once it logged the address (config from
    /// [`HubcapConfig::serve_http`]).
    pub async fn metrics_addr(&self) -> SocketAddr {
        let address = || {
            self.logs()
                .iter()
                .filter(|l| l.target.ends_with("http"))
                .find_map(|l| l.field("address"))
        };
        eventually(
            &format!("{}: its HTTP endpoint listening", self.name),
            STEP,
            || address().is_some(),
        )
        .await;
        address()
            .expect("an address")
            .parse()
            .expect("the address is a socket address")
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

    /// SIGCONT: resume a stopped process.
    pub fn resume(&self) {
        self.signal("CONT");
    }

    /// Whether the process is stopped (SIGSTOP).
    pub fn is_stopped(&self) -> bool {
        super::command::is_stopped(self.pid())
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
            // Counted without decoding anything: a second panic here would abort the run.
            let delivered = match &self.delivery {
                Delivery::Stdout => format!("{} events printed", lock(&self.output.events).len()),
                Delivery::Archive(archive) => format!("{} files committed", archive.files().len()),
            };
            eprintln!(
                "----- {} (pid {}): {delivered}; last stderr lines:\n{}\n-----",
                self.name,
                self.child.id(),
                stderr[tail..].join("\n")
            );
        }
    }
}
