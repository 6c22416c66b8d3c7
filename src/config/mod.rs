//! The configuration file: its schema, defaults, `${VAR}` substitution, `*_file` secrets, and a
//! validation pass that reports every problem at once, each with its key and line.
//!
//! Validation parses once into the types the rest of hubcap uses (the parsed connection
//! string, [`PathFormat`], [`EventPosition`], [`Strategy`], [`WindowSettings`],
//! [`StorageAccount`], [`CredentialSpec`]), asking each of those modules to check its own
//! values, so a config that passes here is one `hubcap run` can build from without a parse
//! error. What this cannot know: whether the hub, the storage account or the credentials work
//! (that needs the network), what the process environment gives workload and managed identity,
//! and whether directories can be created and ports bound.
//!
//! [`parse`] is pure apart from reading `*_file` secrets and `ca_file`; [`load`] adds reading
//! the file and the process environment.
//!
//! - `reader.rs` walks the TOML document and turns values into typed settings or errors
//! - `eventhub.rs`, `sink.rs`, `sections.rs` read the sections; `storage.rs` and
//!   `credential.rs` the storage and Entra ID keys that several sections share
//! - `path_format.rs` checks archive path templates; `units.rs` durations and sizes
//! - `env.rs` substitution and secret files; did-you-mean comes from [`crate::suggest`]

mod credential;
mod env;
mod eventhub;
mod path_format;
mod reader;
mod sections;
mod sink;
mod storage;
mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::balance::Strategy;
use crate::checkpoint::NameCase;
use crate::credential::CredentialSpec;
use crate::eventhubs::{ConnectionString, EventPosition, FullyQualifiedNamespace, Transport};
use crate::proxy::ProxyRoute;
use crate::sink::format::FileFormat;
use crate::sink::path_format::PathFormat;
use crate::sink::WindowSettings;
use crate::storage::StorageAccount;
use reader::{Ctx, Section};

pub use path_format::{DEFAULT_PATH_FORMAT, PATH_FORMAT_TOKENS};

/// The whole configuration, every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[eventhub]`: which hub to read and how.
    pub eventhub: EventHubConfig,
    /// `[checkpoint_store]`: where ownership and checkpoints live.
    pub checkpoint_store: CheckpointStoreConfig,
    /// `[load_balancing]`: how instances share the partitions.
    pub load_balancing: LoadBalancingConfig,
    /// `[sink]`: where events are archived.
    pub sink: SinkConfig,
    /// `[http]`: the health and metrics endpoint.
    pub http: HttpConfig,
    /// `[log]`: log format and filter.
    pub log: LogConfig,
    /// `[shutdown]`: how long a drain may take.
    pub shutdown: ShutdownConfig,
    /// `[runtime]`: threads.
    pub runtime: RuntimeConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventHubConfig {
    /// How to reach and authenticate to the namespace.
    pub connection: EventHubConnection,
    /// Event hub name: the `name` key, else the connection string's `EntityPath`.
    pub name: String,
    /// Consumer group whose position hubcap keeps.
    pub consumer_group: String,
    /// Where to start in a partition that has no checkpoint yet.
    pub start_position: EventPosition,
    /// Link credit: events the service may send ahead of processing.
    pub prefetch: u32,
    /// Caps the credit further so that about this many bytes are in flight, at the event
    /// sizes seen so far: large events get less credit than `prefetch`.
    pub prefetch_bytes: u64,
    /// Receiver epoch; 0 lets instances take partitions from each other through the store.
    pub owner_level: i64,
    /// Lifetime of the SAS tokens hubcap signs; refreshed well before expiry.
    pub token_lifetime: Duration,
    /// Extra PEM trust root for `amqps`, for a TLS-terminating proxy or a private CA.
    pub ca_file: Option<PathBuf>,
    /// Limit for opening the connection, CBS authorisation and a link.
    pub connect_timeout: Duration,
    /// First reconnect delay; doubles up to `retry_max_backoff`, with full jitter.
    pub retry_min_backoff: Duration,
    /// Cap on the reconnect delay.
    pub retry_max_backoff: Duration,
    /// A partition with a backlog that delivers nothing for this long gets its receiver
    /// recycled (the stuck-partition watchdog).
    pub stuck_partition_timeout: Duration,
    /// AMQP on 5671/5672, or AMQP over WebSockets on 443.
    pub transport: Transport,
    /// `host` and optional port to open TCP to instead of the namespace.
    pub custom_endpoint: Option<(String, Option<u16>)>,
    /// The HTTP proxy for WebSockets (`proxy`, else `HTTPS_PROXY`), and `NO_PROXY`.
    pub proxy: ProxyRoute,
    /// The environment variable that named a proxy `transport = "amqp"` cannot use, for the
    /// log line at start.
    pub ignored_proxy_variable: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventHubConnection {
    /// An Event Hubs connection string (SAS key or signature), parsed; its secrets stay
    /// redacted in `Debug`.
    ConnectionString(ConnectionString),
    /// Entra ID: a namespace host and a credential that yields tokens for it.
    Credential {
        /// `<namespace>.servicebus.windows.net`, optionally with `:port`.
        fully_qualified_namespace: FullyQualifiedNamespace,
        /// Where the Entra ID tokens come from.
        credential: CredentialSpec,
    },
}

impl EventHubConnection {
    /// The namespace name checkpoint records start with: the host as the Python SDK keeps it
    /// (with `:port` when the endpoint has one), so hubcap and SDK processors share records.
    pub fn fully_qualified_namespace(&self) -> String {
        match self {
            EventHubConnection::ConnectionString(parsed) => parsed.fully_qualified_namespace(),
            EventHubConnection::Credential {
                fully_qualified_namespace,
                ..
            } => fully_qualified_namespace.to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckpointStoreConfig {
    /// Records in a local directory: one host, no Azure account.
    File {
        /// Directory holding the records.
        path: PathBuf,
    },
    /// Blobs in the official SDKs' layout, shared with other hubcap instances and SDK consumers.
    AzureBlob {
        /// The storage account and how to authenticate to it.
        storage: StorageAccount,
        /// The HTTP proxy its requests go through (`proxy`, else `HTTPS_PROXY`).
        proxy: ProxyRoute,
        /// Container name; taken from the URL when the storage is a `container_url`.
        container: String,
        /// How blob names are cased; must match the other consumers of the same store.
        blob_name_case: NameCase,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancingConfig {
    /// How many partitions an instance claims per cycle.
    pub strategy: Strategy,
    /// Time between balancing cycles (list ownerships, claim, renew).
    pub update_interval: Duration,
    /// An ownership not renewed for this long may be claimed by another instance.
    pub ownership_expiration: Duration,
    /// Identity written into ownership records; a random UUID when unset.
    pub owner_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// Which sink and its own settings.
    pub kind: SinkKind,
    /// When a partition's window closes and is committed: keys `max_window`,
    /// `max_window_bytes` and `skip_empty`.
    pub window: WindowSettings,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// JSON lines on standard output.
    Stdout,
    /// Archive files in a local directory (`type = "file"`, or `"avro_file"`).
    File {
        /// Root directory of the archive.
        path: PathBuf,
        /// File path under `path`, from tokens; the format's extension is appended.
        path_format: PathFormat,
        /// Avro, Parquet or JSON Lines, with its codec.
        format: FileFormat,
        /// Permissions of the files written (octal in the config, `"0640"`).
        file_mode: u32,
    },
    /// Archive block blobs (`type = "blob"`, or `"avro_blob"`).
    Blob {
        /// The storage account and how to authenticate to it.
        storage: StorageAccount,
        /// The HTTP proxy its requests go through (`proxy`, else `HTTPS_PROXY`).
        proxy: ProxyRoute,
        /// Container name; taken from the URL when the storage is a `container_url`.
        container: String,
        /// Blob name, from tokens; the format's extension is appended. Never uses
        /// `{LastSequenceNumber}`: a blob is named when its window opens.
        path_format: PathFormat,
        /// Avro, Parquet or JSON Lines, with its codec.
        format: FileFormat,
        /// Size of the blocks staged while a window is open.
        block_size: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address of `/livez`, `/readyz` and `/metrics`; `None` when disabled with `"off"`.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Text for people, JSON for collectors.
    pub format: LogFormat,
    /// A tracing filter: `info`, or `warn,hubcap=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    /// How long SIGTERM may take to commit, checkpoint and release before hubcap exits anyway.
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// Threads running the async work (receiving, encoding, HTTP). 1, the default, runs it all
    /// on one thread: cheapest per event, since no task is ever woken across threads. Blocking
    /// work (fsync, rename, stdout) has its own pool either way.
    pub worker_threads: usize,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line of the key (or section) at fault, when it is in the file.
    pub line: Option<usize>,
    /// Dotted key, `eventhub.prefetch`; a section name alone for a section-wide problem; empty
    /// for problems with the file as a whole.
    pub key: String,
    /// What is wrong; never contains a secret value.
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `[eventhub] prefetch: expected ...`, without the file and line ([`ConfigErrors`] adds them).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key.rsplit_once('.') {
            _ if self.key.is_empty() => {}
            Some((section, name)) => write!(f, "[{section}] {name}: ")?,
            None => write!(f, "[{}]: ", self.key)?,
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in a config file, in line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// The file name used in messages.
    pub source_name: String,
    /// The problems, sorted by line; those without a line (absent sections) last.
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    fn new(source_name: &str, mut errors: Vec<ConfigError>) -> Self {
        // Line order reads like the file; problems with no line (a missing section) go last.
        errors.sort_by_key(|error| error.line.unwrap_or(usize::MAX));
        Self {
            source_name: source_name.to_owned(),
            errors,
        }
    }
}

impl fmt::Display for ConfigErrors {
    /// One problem per line: `hubcap.toml:12: [eventhub] prefetch: expected ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                writeln!(f)?;
            }
            match error.line {
                Some(line) => write!(f, "{}:{line}: {error}", self.source_name)?,
                None => write!(f, "{}: {error}", self.source_name)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads and validates a config file, substituting variables from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let source_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| {
        let message = format!("cannot read config file: {error}");
        let error = ConfigError {
            line: None,
            key: String::new(),
            message,
        };
        ConfigErrors::new(&source_name, vec![error])
    })?;
    parse(&text, &source_name, &|name| std::env::var(name).ok())
}

/// Validates a config document. `source_name` names it in messages; `env` answers `${VAR}`.
/// Reading `*_file` secrets and checking that `ca_file` exists are its only I/O.
pub fn parse(
    text: &str,
    source_name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx::new(text, env);
    let document = match toml_edit::ImDocument::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let line = error.span().map(|span| ctx.line_at(span.start));
            // Only the message: the error's own Display quotes the source line, which may hold
            // a secret.
            let message = error.message().trim().replace('\n', "; ");
            let message = format!("invalid TOML: {message}");
            ctx.error("", line, message);
            return Err(ConfigErrors::new(source_name, ctx.errors));
        }
    };
    let mut root = Section::root(&ctx, document.as_table());
    let mut section = |ctx: &mut Ctx, name: &str| {
        root.take(name)
            .and_then(|entry| Section::from_entry(ctx, &entry))
            .unwrap_or_else(|| Section::absent(name))
    };
    let eventhub = section(&mut ctx, "eventhub");
    let eventhub = eventhub::parse(&mut ctx, eventhub);
    let checkpoint_store = section(&mut ctx, "checkpoint_store");
    let checkpoint_store = sections::checkpoint_store(&mut ctx, checkpoint_store);
    let load_balancing = section(&mut ctx, "load_balancing");
    let load_balancing = sections::load_balancing(&mut ctx, load_balancing);
    let sink = section(&mut ctx, "sink");
    let sink = sink::parse(&mut ctx, sink);
    let http = section(&mut ctx, "http");
    let http = sections::http(&mut ctx, http);
    let log = section(&mut ctx, "log");
    let log = sections::log(&mut ctx, log);
    let shutdown = section(&mut ctx, "shutdown");
    let shutdown = sections::shutdown(&mut ctx, shutdown);
    let runtime = section(&mut ctx, "runtime");
    let runtime = sections::runtime(&mut ctx, runtime);
    report_unknown_sections(&mut ctx, root);

    match (eventhub, checkpoint_store, sink) {
        (Some(eventhub), Some(checkpoint_store), Some(sink)) if ctx.errors.is_empty() => {
            Ok(Config {
                eventhub,
                checkpoint_store,
                load_balancing,
                sink,
                http,
                log,
                shutdown,
                runtime,
            })
        }
        _ => {
            debug_assert!(!ctx.errors.is_empty(), "a section failed without an error");
            Err(ConfigErrors::new(source_name, ctx.into_errors()))
        }
    }
}

/// Every section and its keys, for did-you-mean on misplaced keys and sections.
const SECTIONS: &[(&str, &[&str])] = &[
    ("eventhub", eventhub::KEYS),
    ("checkpoint_store", sections::CHECKPOINT_STORE_KEYS),
    ("load_balancing", sections::LOAD_BALANCING_KEYS),
    ("sink", sink::KEYS),
    ("http", sections::HTTP_KEYS),
    ("log", sections::LOG_KEYS),
    ("shutdown", sections::SHUTDOWN_KEYS),
    ("runtime", sections::RUNTIME_KEYS),
];

fn report_unknown_sections(ctx: &mut Ctx, root: Section) {
    let names: Vec<&str> = SECTIONS.iter().map(|(name, _)| *name).collect();
    for (name, entry) in root.unused() {
        if entry.item.is_table_like() {
            let message = match crate::suggest::did_you_mean(name, &names) {
                Some(near) => format!("unknown section; did you mean [{near}]?"),
                None => format!("unknown section; expected {}", section_list(&names)),
            };
            ctx.error(name, entry.line, message);
            continue;
        }
        let home = SECTIONS
            .iter()
            .find(|(_, keys)| keys.contains(&name))
            .map(|(section, _)| format!("; did you mean [{section}] {name}?"))
            .unwrap_or_default();
        let message = format!("key \"{name}\" is outside any section{home}");
        ctx.error("", entry.line, message);
    }
}

fn section_list(names: &[&str]) -> String {
    let bracketed: Vec<String> = names.iter().map(|name| format!("[{name}]")).collect();
    bracketed.join(", ")
}

#[cfg(test)]
mod tests;
