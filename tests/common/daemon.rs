//! The daemon run in-process, mini-redis style: the config parsed by `hubcap::config::parse`
//! and `hubcap::runtime::run` on a task of the test's runtime, stopped by cancelling the
//! shutdown token it was given. No process to spawn, so it starts faster; for scenarios whose
//! subject is not the process boundary (signals, exit codes, logs, `kill -9`), and only with
//! the `avro_file` sink: stdout would be the test's own.

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{covers, eventually, within, Archive, Event, EventId, HubcapConfig, DRAIN_TIMEOUT};

/// A daemon running on the test's runtime.
pub struct Daemon {
    name: String,
    /// Cancelled to stop it: what SIGTERM does to the binary.
    shutdown: CancellationToken,
    /// `runtime::run` until the drain completes.
    task: Option<JoinHandle<anyhow::Result<()>>>,
    /// The files it commits.
    archive: Archive,
    /// Its HTTP endpoint, if it serves one.
    http: Option<SocketAddr>,
}

impl Daemon {
    /// Parses `config` (no `${VAR}` in it) and runs it. With `[http] listen` on port 0 it
    /// serves on a free loopback port chosen here, since the daemon's log is not at hand to
    /// say which one it bound.
    pub fn start(name: &str, config: &HubcapConfig) -> Self {
        let root = config
            .archive()
            .unwrap_or_else(|| panic!("{name}: in-process runs use the avro_file sink"));
        let archive = Archive::from_now(root);
        let mut config = config.clone();
        let mut http = None;
        if config.to_toml().contains("listen = \"127.0.0.1:0\"") {
            let addr = free_loopback_port();
            config = config.set("http", "listen", &addr.to_string());
            http = Some(addr);
        }
        let parsed = hubcap::config::parse(&config.to_toml(), name, &|_| None)
            .unwrap_or_else(|errors| panic!("{name}: the test config is invalid: {errors}"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(hubcap::runtime::run(parsed, shutdown.clone()));
        Self {
            name: name.to_owned(),
            shutdown,
            task: Some(task),
            archive,
            http,
        }
    }

    /// Every event in the files it committed so far.
    pub fn events(&self) -> Vec<Event> {
        self.archive.events()
    }

    pub fn event_count(&self) -> usize {
        self.archive.event_count()
    }

    /// Waits until it committed every event in `expected`.
    pub async fn wait_to_deliver(&self, expected: &BTreeSet<EventId>, limit: Duration) {
        let what = format!("{}: all {} events committed", self.name, expected.len());
        eventually(&what, limit, || covers(&self.events(), expected)).await;
    }

    /// Where its `/metrics` is served (config from [`HubcapConfig::serve_http`]).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.http
            .unwrap_or_else(|| panic!("{}: no HTTP endpoint configured", self.name))
    }

    /// Whether `run` is still going (it returns early only on a fatal error).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Cancels the shutdown token and waits for the drain, which must succeed within
    /// [`DRAIN_TIMEOUT`]; returns every event committed.
    pub async fn stop_cleanly(&mut self) -> Vec<Event> {
        self.shutdown.cancel();
        let task = self.task.take().expect("stopped once");
        let result = within(&format!("{}: drain", self.name), DRAIN_TIMEOUT, task)
            .await
            .expect("the daemon task does not panic");
        if let Err(error) = result {
            panic!("{}: run failed: {error:#}", self.name);
        }
        self.events()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A test that failed before stopping it: the runtime ends with the test, and the
        // token makes the daemon drain rather than be cut off mid-commit.
        self.shutdown.cancel();
    }
}

/// A loopback port nothing listens on now. Another process could take it before the daemon
/// binds it; the daemon's bind error would then name it.
fn free_loopback_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address")
}
