//! The smaller sections: `[checkpoint_store]`, `[load_balancing]`, `[http]`, `[log]`,
//! `[shutdown]` and `[runtime]`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::reader::{one_of, Ctx, Lookup, Section};
use super::storage;
use super::units::format_duration;
use super::{
    CheckpointStoreConfig, HttpConfig, LoadBalancingConfig, LogConfig, LogFormat, RuntimeConfig,
    ShutdownConfig,
};
use crate::balance::Strategy;
use crate::checkpoint::NameCase;
use crate::suggest::did_you_mean;

pub(super) const CHECKPOINT_STORE_KEYS: &[&str] = &[
    "type",
    "path",
    "connection_string",
    "connection_string_file",
    "container_url",
    "container_url_file",
    "account_url",
    "credential",
    "container",
    "blob_name_case",
];
pub(super) const LOAD_BALANCING_KEYS: &[&str] = &[
    "strategy",
    "update_interval",
    "ownership_expiration",
    "owner_id",
];
pub(super) const HTTP_KEYS: &[&str] = &["listen"];
pub(super) const LOG_KEYS: &[&str] = &["format", "level"];
pub(super) const SHUTDOWN_KEYS: &[&str] = &["drain_timeout"];
pub(super) const RUNTIME_KEYS: &[&str] = &["worker_threads"];

const DEFAULT_CHECKPOINT_PATH: &str = "/var/lib/hubcap/checkpoints";
const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

impl Default for LoadBalancingConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Balanced,
            update_interval: 10 * SECOND,
            ownership_expiration: 60 * SECOND,
            owner_id: None,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9090))),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            drain_timeout: 30 * SECOND,
        }
    }
}

pub(super) fn checkpoint_store(
    ctx: &mut Ctx,
    mut section: Section,
) -> Option<CheckpointStoreConfig> {
    #[derive(Clone, Copy)]
    enum Type {
        File,
        AzureBlob,
    }
    let types = [("file", Type::File), ("azure_blob", Type::AzureBlob)];
    match section.choice(ctx, "type", "checkpoint store type", &types, Type::File) {
        Lookup::Present(Type::File) => {
            let path = match section.take("path") {
                Some(entry) => ctx.path(&entry),
                None => Some(PathBuf::from(DEFAULT_CHECKPOINT_PATH)),
            };
            let owner = "checkpoint store type \"file\"";
            section.finish(ctx, &["type", "path"], CHECKPOINT_STORE_KEYS, owner);
            Some(CheckpointStoreConfig::File { path: path? })
        }
        Lookup::Present(Type::AzureBlob) => {
            let storage = storage::parse(ctx, &mut section);
            let cases = [("lower", NameCase::Lower), ("verbatim", NameCase::Verbatim)];
            let case = section.choice(
                ctx,
                "blob_name_case",
                "blob_name_case",
                &cases,
                NameCase::Lower,
            );
            let allowed = [&["type", "blob_name_case"], storage::KEYS].concat();
            let owner = "checkpoint store type \"azure_blob\"";
            section.finish(ctx, &allowed, CHECKPOINT_STORE_KEYS, owner);
            let (storage, container, proxy) = storage?;
            let Lookup::Present(blob_name_case) = case else {
                return None;
            };
            Some(CheckpointStoreConfig::AzureBlob {
                storage,
                proxy,
                container,
                blob_name_case,
            })
        }
        Lookup::Absent | Lookup::Invalid => {
            section.finish(ctx, CHECKPOINT_STORE_KEYS, &[], "");
            None
        }
    }
}

pub(super) fn load_balancing(ctx: &mut Ctx, mut section: Section) -> LoadBalancingConfig {
    let defaults = LoadBalancingConfig::default();
    let strategies = [
        ("balanced", Strategy::Balanced),
        ("greedy", Strategy::Greedy),
    ];
    let strategy = match section.choice(ctx, "strategy", "strategy", &strategies, defaults.strategy)
    {
        Lookup::Present(strategy) => strategy,
        Lookup::Absent | Lookup::Invalid => defaults.strategy,
    };
    let interval_entry = section.take("update_interval");
    let update_interval = match &interval_entry {
        Some(entry) => ctx.duration(entry, SECOND..=10 * MINUTE),
        None => Some(defaults.update_interval),
    };
    let expiration_entry = section.take("ownership_expiration");
    let ownership_expiration = match &expiration_entry {
        Some(entry) => ctx.duration(entry, 2 * SECOND..=HOUR),
        None => Some(defaults.ownership_expiration),
    };
    if let (Some(interval), Some(expiration)) = (update_interval, ownership_expiration) {
        if expiration <= 2 * interval {
            // Shorter, and a healthy owner that renews once per interval could lose a partition
            // to a single slow cycle.
            let default_note = if expiration_entry.is_none() {
                ", the default"
            } else {
                ""
            };
            let line = expiration_entry
                .as_ref()
                .and_then(|entry| entry.line)
                .or(interval_entry.as_ref().and_then(|entry| entry.line))
                .or(section.line);
            let message = format!(
                "ownership_expiration ({}{default_note}) must be longer than twice \
                 update_interval ({})",
                format_duration(expiration),
                format_duration(interval)
            );
            ctx.error(&section.key("ownership_expiration"), line, message);
        }
    }
    let owner_id = section.take("owner_id").and_then(|entry| {
        let owner_id = ctx.name(&entry)?;
        // It travels as blob metadata, an HTTP header value.
        if owner_id.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Some(owner_id);
        }
        let message = format!("owner_id {owner_id:?} must be printable ASCII");
        ctx.error(&entry.key, entry.line, message);
        None
    });
    section.finish(ctx, LOAD_BALANCING_KEYS, &[], "");
    LoadBalancingConfig {
        strategy,
        update_interval: update_interval.unwrap_or(defaults.update_interval),
        ownership_expiration: ownership_expiration.unwrap_or(defaults.ownership_expiration),
        owner_id,
    }
}

pub(super) fn http(ctx: &mut Ctx, mut section: Section) -> HttpConfig {
    let listen = match section.take("listen") {
        None => HttpConfig::default().listen,
        Some(entry) => match ctx.string(&entry) {
            Some(text) if text.is_empty() || text == "off" => None,
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(address) => Some(address),
                Err(_) => {
                    let message = format!(
                        "expected an address such as \"0.0.0.0:9090\" or \"[::]:9090\", or \
                         \"off\", found {text:?}"
                    );
                    ctx.error(&entry.key, entry.line, message);
                    None
                }
            },
            None => None,
        },
    };
    section.finish(ctx, HTTP_KEYS, &[], "");
    HttpConfig { listen }
}

pub(super) fn log(ctx: &mut Ctx, mut section: Section) -> LogConfig {
    let defaults = LogConfig::default();
    let formats = [("text", LogFormat::Text), ("json", LogFormat::Json)];
    let format = match section.choice(ctx, "format", "log format", &formats, defaults.format) {
        Lookup::Present(format) => format,
        Lookup::Absent | Lookup::Invalid => defaults.format,
    };
    let level = match section.take("level") {
        None => defaults.level,
        Some(entry) => ctx
            .string(&entry)
            .and_then(|level| {
                let problems = check_log_filter(&level);
                for problem in &problems {
                    ctx.error(&entry.key, entry.line, problem.as_str());
                }
                problems.is_empty().then_some(level)
            })
            .unwrap_or(defaults.level),
    };
    section.finish(ctx, LOG_KEYS, &[], "");
    LogConfig { format, level }
}

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// A tracing filter (`info`, `warn,hubcap=debug`). tracing reads a bare word as a target, so
/// `debugg` would silently mean "everything from a module named debugg"; here a bare word must be
/// a level, and every `target=level` must end in one.
pub(super) fn check_log_filter(filter: &str) -> Vec<String> {
    if filter.trim().is_empty() {
        return vec!["must not be empty (the default is \"info\")".into()];
    }
    // tracing-subscriber 0.3.23 panics parsing some non-ASCII directives (it slices a string
    // at a byte that is not a character boundary; found by fuzzing). Targets and levels are
    // ASCII, so refuse anything else before it gets there.
    if let Some(c) = filter.chars().find(|c| !c.is_ascii()) {
        return vec![format!(
            "must be ASCII (targets, levels and span names are), found {c:?}"
        )];
    }
    let mut problems = Vec::new();
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let (level, whole_directive) = match directive.rsplit_once('=') {
            Some((_, level)) => (level.trim(), false),
            // A span filter without a level (`[span]`) is tracing syntax; leave it to tracing.
            None if directive.contains('[') => continue,
            None => (directive, true),
        };
        if LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            continue;
        }
        let near = did_you_mean(level, LEVELS)
            .map(|near| format!("; did you mean \"{near}\"?"))
            .unwrap_or_else(|| format!("; expected {}", one_of(LEVELS)));
        let problem = if whole_directive {
            format!("unknown log level {level:?}{near} (write target=level to filter a module)")
        } else {
            format!("unknown log level {level:?} in {directive:?}{near}")
        };
        problems.push(problem);
    }
    if problems.is_empty() {
        if let Err(error) = tracing_subscriber::EnvFilter::builder().parse(filter) {
            problems.push(format!("invalid log filter {filter:?}: {error}"));
        }
    }
    problems
}

pub(super) fn shutdown(ctx: &mut Ctx, mut section: Section) -> ShutdownConfig {
    let defaults = ShutdownConfig::default();
    let drain_timeout = section.duration(
        ctx,
        "drain_timeout",
        defaults.drain_timeout,
        SECOND..=10 * MINUTE,
    );
    section.finish(ctx, SHUTDOWN_KEYS, &[], "");
    ShutdownConfig { drain_timeout }
}

pub(super) fn runtime(ctx: &mut Ctx, mut section: Section) -> RuntimeConfig {
    let worker_threads = section.integer(ctx, "worker_threads", 1, 1..=256);
    section.finish(ctx, RUNTIME_KEYS, &[], "");
    RuntimeConfig {
        worker_threads: usize::try_from(worker_threads).unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_filters_with_levels_and_targets() {
        for good in [
            "info",
            "WARN",
            "warn,hubcap=debug",
            "hubcap::sink=trace",
            "off",
            "info,",
        ] {
            assert_eq!(check_log_filter(good), Vec::<String>::new(), "{good}");
        }
    }

    #[test]
    fn log_filter_typos_are_caught() {
        let cases = [
            (
                "debugg",
                "unknown log level \"debugg\"; did you mean \"debug\"?",
            ),
            (
                "hubcap=verbose",
                "unknown log level \"verbose\" in \"hubcap=verbose\"",
            ),
            ("", "must not be empty"),
            ("info,hubcap[{=debug", "invalid log filter"),
        ];
        for (filter, expected) in cases {
            let problems = check_log_filter(filter).join("\n");
            assert!(problems.contains(expected), "{filter}: {problems}");
        }
    }
}
