//! `hubcap-emulator`: run the Event Hubs emulator from the command line.
//!
//! When it is ready it prints one JSON line to stdout, e.g.
//! `{"amqp_addr":"127.0.0.1:5672","admin_addr":"127.0.0.1:8080","namespace":"emulatorns",
//! "connection_string":"Endpoint=sb://127.0.0.1:5672/;..."}`, so scripts can start it on port 0
//! and read back the ports, then, on stderr for a person, one ready-to-paste Event Hubs
//! connection string per hub; logs go to stderr too. README.md beside this crate has the rest.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use hubcap_emulator::config::{EmulatorConfig, SasKeyConfig, TlsConfig};
use hubcap_emulator::Emulator;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "An Azure Event Hubs-compatible AMQP 1.0 server for tests and demos",
    after_help = after_help()
)]
struct Args {
    /// TOML file with the same settings; flags below are applied on top of it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// AMQP listen address (port 0 picks a free port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin HTTP address for fault injection and preloading.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Namespace name.
    #[arg(long)]
    namespace: Option<String>,
    /// An event hub as NAME:PARTITIONS (repeatable).
    #[arg(long = "hub", value_name = "NAME:PARTITIONS")]
    hubs: Vec<String>,
    /// A consumer group present on every hub besides $Default (repeatable).
    #[arg(long = "consumer-group")]
    consumer_groups: Vec<String>,
    /// Name of the SAS key tokens are verified against.
    #[arg(long, requires = "sas_key")]
    sas_key_name: Option<String>,
    /// The SAS key (or set HUBCAP_EMULATOR_SAS_KEY).
    #[arg(long, env = "HUBCAP_EMULATOR_SAS_KEY", hide_env_values = true)]
    sas_key: Option<String>,
    /// Accept `jwt` tokens (Entra ID) on $cbs; signatures are not checked.
    #[arg(long)]
    accept_jwt: bool,
    /// Largest publication accepted, in bytes.
    #[arg(long)]
    max_message_size: Option<u64>,
    /// Keep at most this many events per partition.
    #[arg(long)]
    retention_events: Option<u64>,
    /// Keep at most this many bytes per partition.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// PEM certificate chain: serve amqps (TLS) instead of plain AMQP.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// The connection string for the default address and key, for `--help`.
fn after_help() -> String {
    format!(
        "With the default --listen and key, clients connect with (one hub named telemetry):\n  \
         Endpoint=sb://127.0.0.1:5672/;SharedAccessKeyName={};SharedAccessKey={};UseDevelopmentEmulator=true;EntityPath=telemetry\n\
         On start it prints the string for its actual address, key and hubs. Example:\n  \
         hubcap-emulator --hub telemetry:4 --admin-listen 127.0.0.1:8080",
        hubcap_emulator::config::DEFAULT_SAS_KEY_NAME,
        hubcap_emulator::config::DEFAULT_SAS_KEY,
    )
}

fn build_config(args: Args) -> anyhow::Result<EmulatorConfig> {
    let mut config = match &args.config {
        Some(path) => EmulatorConfig::from_file(path)?,
        None => EmulatorConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.admin_listen.is_some() {
        config.admin_listen = args.admin_listen;
    }
    if let Some(namespace) = args.namespace {
        config.namespace = namespace;
    }
    for spec in &args.hubs {
        config.add_hub_spec(spec)?;
    }
    config.consumer_groups.extend(args.consumer_groups);
    if let Some(key) = args.sas_key {
        config.sas_keys.push(SasKeyConfig {
            name: args
                .sas_key_name
                .unwrap_or_else(|| hubcap_emulator::config::DEFAULT_SAS_KEY_NAME.to_owned()),
            key,
        });
    }
    config.accept_jwt |= args.accept_jwt;
    if let Some(size) = args.max_message_size {
        config.max_message_size = size;
    }
    if args.retention_events.is_some() {
        config.retention_events = args.retention_events;
    }
    if args.retention_bytes.is_some() {
        config.retention_bytes = args.retention_bytes;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(TlsConfig { cert, key });
    }
    if config.hubs.is_empty() {
        anyhow::bail!(
            "no event hub configured: pass --hub NAME:PARTITIONS or a config file with [[hubs]]"
        );
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = build_config(Args::parse())?;
    let namespace = config.namespace.clone();
    let hubs: Vec<String> = config.hubs.iter().map(|h| h.name.clone()).collect();
    let emulator = Emulator::start(config).await?;
    let ready = serde_json::json!({
        "amqp_addr": emulator.amqp_addr().to_string(),
        "admin_addr": emulator.admin_addr().map(|a| a.to_string()),
        "namespace": namespace,
        "connection_string": emulator.connection_string(None),
    });
    println!("{ready}");
    for hub in &hubs {
        eprintln!(
            "event hub {hub:?}, connection string:\n  {}",
            emulator.connection_string(Some(hub))
        );
    }
    wait_for_signal().await;
    emulator.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler cannot fail on unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
