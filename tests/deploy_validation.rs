//! The systemd unit (deploy/systemd) and the Grafana dashboard (deploy/grafana), checked offline
//! with the tools that will read them: `systemd-analyze verify` and `security` on the unit,
//! `hubcap check-config` on its config the way `ExecStartPre=` runs it, and `promtool` on every
//! dashboard query, whose metric names must be ones `src/metrics.rs` defines.
//! tests/interop/test_deploy.py checks deploy/kubernetes and deploy/docker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `systemd-analyze security` rates the unit at 1.1 ("OK"): what remains is network access,
/// which hubcap exists for. A change that loosens the sandbox noticeably fails here.
const MAX_SECURITY_EXPOSURE: f64 = 1.5;
/// Where the unit expects the binary; the verify test points it at the one cargo built.
const INSTALLED_BINARY: &str = "/usr/bin/hubcap";

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    let path = repo_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs a tool the test needs; a missing tool fails with the command that installs it.
fn run_tool(command: &mut Command, install: &str) -> Output {
    match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("{:?} is not installed: {install}", command.get_program())
        }
        Err(e) => panic!("cannot run {:?}: {e}", command.get_program()),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// systemd

const SYSTEMD_INSTALL: &str = "apt-get install systemd (it provides systemd-analyze)";

/// The unit's `[Service]` settings: each key with its values in order (keys may repeat).
fn service_settings() -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in read("deploy/systemd/hubcap.service").lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(!line.ends_with('\\'), "keep settings on one line: {line}");
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if section == "Service" {
            let (key, value) = line.split_once('=').expect("key=value");
            let values = settings.entry(key.to_owned()).or_default();
            values.push(value.to_owned());
        }
    }
    settings
}

fn setting(settings: &BTreeMap<String, Vec<String>>, key: &str) -> String {
    match settings.get(key).map(Vec::as_slice) {
        Some([value]) => value.clone(),
        other => panic!("expected one {key}=, found {other:?}"),
    }
}

/// A systemd time span such as "45s", "1min 30s" or "2min".
fn systemd_seconds(span: &str) -> u64 {
    let mut total = 0;
    for part in span.split_whitespace() {
        let digits = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        let (number, unit) = part.split_at(digits);
        let number: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("time span {span:?}"));
        total += number
            * match unit {
                "" | "s" | "sec" => 1,
                "m" | "min" => 60,
                "h" | "hr" => 3600,
                _ => panic!("time span unit {unit:?} in {span:?}"),
            };
    }
    total
}

/// The unit with its binary path pointed at the one cargo built: `verify` checks that the
/// ExecStart= binary exists and is executable.
fn unit_for_the_built_binary(dir: &Path) -> PathBuf {
    let unit = read("deploy/systemd/hubcap.service");
    assert!(unit.contains(INSTALLED_BINARY));
    let path = dir.join("hubcap.service");
    let unit = unit.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_hubcap"));
    std::fs::write(&path, unit).expect("write the unit");
    path
}

/// The credentials `LoadCredential=` hands the service, by name.
fn credential_names(settings: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let names: Vec<String> = settings
        .get("LoadCredential")
        .into_iter()
        .flatten()
        .map(|value| value.split_once(':').expect("NAME:PATH").0.to_owned())
        .collect();
    assert!(!names.is_empty(), "the unit loads no credential");
    names
}

/// A `$CREDENTIALS_DIRECTORY` as systemd would prepare it for the unit.
fn credentials_directory(settings: &BTreeMap<String, Vec<String>>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in credential_names(settings) {
        let value = "Endpoint=sb://example-namespace.servicebus.windows.net/;\
                     SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0\n";
        std::fs::write(dir.path().join(name), value).expect("write a credential");
    }
    dir
}

/// The variables `Environment=` sets, with `%H` (the host name) filled in.
fn unit_environment(settings: &BTreeMap<String, Vec<String>>) -> Vec<(String, String)> {
    settings
        .get("Environment")
        .into_iter()
        .flatten()
        .map(|assignment| {
            let (name, value) = assignment.split_once('=').expect("NAME=VALUE");
            (name.to_owned(), value.replace("%H", "host-1"))
        })
        .collect()
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_the_built_binary(dir.path());
    let output = run_tool(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit),
        SYSTEMD_INSTALL,
    );
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify:\n{stderr}");
    // verify reports unknown keys, bad values and missing binaries as warnings: none allowed.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze verify warns:\n{stderr}"
    );
}

#[test]
fn the_unit_is_sandboxed_to_an_ok_exposure_level() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_the_built_binary(dir.path());
    let output = run_tool(
        Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&unit),
        SYSTEMD_INSTALL,
    );
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "systemd-analyze security:\n{stdout}{}",
        text(&output.stderr)
    );
    let marker = "Overall exposure level for hubcap.service: ";
    let rest = &stdout[stdout.find(marker).expect("an overall exposure level") + marker.len()..];
    let level: f64 = rest
        .split_whitespace()
        .next()
        .unwrap_or("")
        .parse()
        .expect("a number");
    assert!(
        level <= MAX_SECURITY_EXPOSURE,
        "exposure {level} > {MAX_SECURITY_EXPOSURE}; what is exposed:\n{}",
        stdout
            .lines()
            .filter(|l| l.starts_with('✗'))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn exec_start_pre_checks_the_config_exec_start_runs() {
    let settings = service_settings();
    let config = "/etc/hubcap/hubcap.toml";
    assert_eq!(
        setting(&settings, "ExecStartPre"),
        format!("{INSTALLED_BINARY} check-config --config {config}")
    );
    assert_eq!(
        setting(&settings, "ExecStart"),
        format!("{INSTALLED_BINARY} run --config {config}")
    );
    assert_eq!(
        format!(
            "/etc/{}/hubcap.toml",
            setting(&settings, "ConfigurationDirectory")
        ),
        config
    );
}

#[test]
fn the_unit_is_a_notify_service_with_a_watchdog_and_its_socket_family() {
    let settings = service_settings();
    assert_eq!(setting(&settings, "Type"), "notify");
    assert_eq!(setting(&settings, "NotifyAccess"), "main");
    assert!(systemd_seconds(&setting(&settings, "WatchdogSec")) >= 10);
    // sd_notify is a datagram on a Unix socket: without AF_UNIX, READY=1 never arrives.
    let families = setting(&settings, "RestrictAddressFamilies");
    let families: BTreeSet<&str> = families.split_whitespace().collect();
    assert_eq!(families, BTreeSet::from(["AF_INET", "AF_INET6", "AF_UNIX"]));
    assert_eq!(setting(&settings, "KillSignal"), "SIGTERM");
    assert_eq!(setting(&settings, "Restart"), "on-failure");
    assert_eq!(setting(&settings, "DynamicUser"), "yes");
    assert_eq!(setting(&settings, "CapabilityBoundingSet"), "");
}

#[test]
fn systemd_waits_for_the_drain_before_it_kills() {
    let settings = service_settings();
    let credentials = credentials_directory(&settings);
    let environment = unit_environment(&settings);
    let config = hubcap::config::parse(
        &read("deploy/systemd/hubcap.toml"),
        "deploy/systemd/hubcap.toml",
        &|name| match name {
            "CREDENTIALS_DIRECTORY" => Some(credentials.path().display().to_string()),
            _ => environment
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
        },
    )
    .unwrap_or_else(|errors| panic!("{errors}"));
    let stop_timeout = Duration::from_secs(systemd_seconds(&setting(&settings, "TimeoutStopSec")));
    let drain_timeout = config.shutdown.drain_timeout;
    assert!(
        stop_timeout >= drain_timeout + Duration::from_secs(10),
        "TimeoutStopSec {stop_timeout:?} leaves no margin over drain_timeout {drain_timeout:?}"
    );
}

#[test]
fn the_example_config_writes_only_under_the_state_directory() {
    let settings = service_settings();
    let state = format!("/var/lib/{}/", setting(&settings, "StateDirectory"));
    let config: toml::Table = read("deploy/systemd/hubcap.toml").parse().expect("TOML");
    for section in ["checkpoint_store", "sink"] {
        let path = config[section]["path"].as_str().expect("a path");
        assert!(
            path.starts_with(&state),
            "[{section}] path {path} is outside {state}"
        );
    }
    let secret = config["eventhub"]["connection_string_file"]
        .as_str()
        .expect("a secret file");
    let name = secret
        .strip_prefix("${CREDENTIALS_DIRECTORY}/")
        .expect("the secret comes from a systemd credential");
    assert!(credential_names(&settings)
        .iter()
        .any(|loaded| loaded == name));
}

#[test]
fn the_example_config_passes_check_config_as_exec_start_pre_runs_it() {
    let settings = service_settings();
    let credentials = credentials_directory(&settings);
    let output = Command::new(env!("CARGO_BIN_EXE_hubcap"))
        .args(["check-config", "--config"])
        .arg(repo_file("deploy/systemd/hubcap.toml"))
        .env_clear()
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .envs(unit_environment(&settings))
        .output()
        .expect("run hubcap");
    assert!(
        output.status.success(),
        "hubcap check-config:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

// ---------------------------------------------------------------------------------------------
// Grafana

/// Labels a query may group by: those metrics.rs defines plus the ones Prometheus adds.
const SCRAPE_LABELS: &[&str] = &["instance", "job", "le"];

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/hubcap-dashboard.json")).expect("valid JSON")
}

/// (panel title, refId, expr) of every query.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                target["refId"].as_str().expect("refId").to_owned(),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    queries
}

/// Every `hubcap_*` identifier in a text.
fn hubcap_identifiers(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("hubcap_") {
        let preceded_by_word = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_word {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The series names hubcap exports, read from a real exposition in which every metric has a
/// value (so histograms show their `_bucket`/`_sum`/`_count` series).
fn exported_series() -> BTreeSet<String> {
    let metrics = hubcap::metrics::Metrics::new("hub", "$Default");
    let partition = metrics.partition("0");
    partition.received(1, 1);
    partition.committed(1, 1, std::time::Duration::from_millis(1));
    partition.checkpointed(0);
    partition.lag(1, 1.0);
    partition.checkpoint_error("x");
    partition.sink_error("x");
    partition.reconnect("x");
    partition.expired(1);
    partition.position_fallback();
    partition.receiver_recycled();
    metrics.set_owned_partitions(1);
    metrics.ownership_change("claimed");
    let series: BTreeSet<String> = metrics
        .render()
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    assert!(
        series.len() >= 10,
        "found only {series:?} in the exposition"
    );
    series
}

#[test]
fn the_dashboard_has_eventhub_and_consumer_group_variables_and_unique_panels() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "hubcap");
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|variable| variable["name"].as_str().expect("name"))
        .collect();
    assert!(variables.is_superset(&BTreeSet::from([
        "datasource",
        "eventhub",
        "consumer_group"
    ])));
    let panels = dashboard["panels"].as_array().expect("panels");
    let ids: BTreeSet<u64> = panels
        .iter()
        .map(|p| p["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for panel in panels {
        assert!(panel["gridPos"]["w"].as_u64().is_some_and(|w| w <= 24));
        if panel["type"] != "row" {
            assert!(!panel["targets"].as_array().expect("targets").is_empty());
            assert_eq!(panel["datasource"]["uid"], "${datasource}");
        }
    }
}

#[test]
fn every_dashboard_query_names_only_series_hubcap_exports() {
    let dashboard = dashboard();
    let exported = exported_series();
    let source = read("src/metrics.rs");
    let queries = dashboard_queries(&dashboard);
    let mut used = BTreeSet::new();
    for (title, ref_id, expr) in &queries {
        for name in hubcap_identifiers(expr) {
            assert!(
                exported.contains(&name),
                "{title} {ref_id}: {name} is not in src/metrics.rs"
            );
            used.insert(name);
        }
        for clause in expr.split("by (").skip(1) {
            for label in clause.split(')').next().unwrap_or_default().split(',') {
                let label = label.trim();
                let known =
                    SCRAPE_LABELS.contains(&label) || source.contains(&format!("\"{label}\""));
                assert!(known, "{title} {ref_id}: no metric has the label {label:?}");
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        for name in hubcap_identifiers(variable["definition"].as_str().unwrap_or_default()) {
            assert!(
                exported.contains(&name),
                "variable {}: {name}",
                variable["name"]
            );
        }
    }
    // The panels the dashboard promises: throughput, lag, ownership, flushes, errors, expiry.
    for required in [
        "hubcap_events_received_total",
        "hubcap_events_committed_total",
        "hubcap_received_bytes_total",
        "hubcap_committed_bytes_total",
        "hubcap_partition_lag_events",
        "hubcap_partition_lag_seconds",
        "hubcap_owned_partitions",
        "hubcap_ownership_changes_total",
        "hubcap_flush_duration_seconds_bucket",
        "hubcap_flush_size_bytes_bucket",
        "hubcap_checkpoint_errors_total",
        "hubcap_sink_errors_total",
        "hubcap_reconnects_total",
        "hubcap_expired_events_total",
    ] {
        assert!(used.contains(required), "no panel shows {required}");
    }
}

#[test]
fn every_dashboard_query_filters_by_the_selected_eventhub_and_consumer_group() {
    let filter = "{eventhub=~\"$eventhub\",consumer_group=~\"$consumer_group\"";
    for (title, ref_id, expr) in dashboard_queries(&dashboard()) {
        for name in hubcap_identifiers(&expr) {
            // hubcap_build_info has only a version label.
            if name == "hubcap_build_info" {
                continue;
            }
            for (at, _) in expr.match_indices(&name) {
                let after = &expr[at + name.len()..];
                if after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
                    continue;
                }
                assert!(
                    after.starts_with(filter),
                    "{title} {ref_id}: {name} without {filter}}}"
                );
            }
        }
    }
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses rule expressions with Prometheus' own parser; Grafana's variables are
    // replaced by values of the same syntactic kind first.
    let mut rules = String::from("groups:\n  - name: hubcap-dashboard\n    rules:\n");
    for (index, (title, ref_id, expr)) in dashboard_queries(&dashboard()).iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$eventhub", ".*")
            .replace("$consumer_group", ".*");
        assert!(
            !expr.contains('$'),
            "{title} {ref_id}: unknown variable in {expr}"
        );
        let expr = serde_json::to_string(&expr).expect("JSON string");
        rules.push_str(&format!(
            "      - record: dashboard:query_{index}\n        expr: {expr}\n"
        ));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dashboard-rules.yml");
    std::fs::write(&path, rules).expect("write rules");
    let output = run_tool(
        Command::new("promtool").args(["check", "rules"]).arg(&path),
        "apt-get install prometheus (it provides promtool)",
    );
    assert!(
        output.status.success(),
        "promtool check rules:\n{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[test]
fn identifiers_are_found_whole() {
    let names =
        hubcap_identifiers("sum(rate(hubcap_a_total{x=\"y\"}[5m])) / not_hubcap_b + hubcap_c");
    assert_eq!(
        names,
        BTreeSet::from(["hubcap_a_total".to_owned(), "hubcap_c".to_owned()])
    );
    assert_eq!(systemd_seconds("1min 30s"), 90);
    assert_eq!(systemd_seconds("45s"), 45);
}
