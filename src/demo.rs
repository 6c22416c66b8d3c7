//! `hubcap demo`: the whole pipeline on this machine, no Azure account needed.
//!
//! It starts the embedded Event Hubs emulator, a producer publishing JSON events, and hubcap
//! itself with the file checkpoint store and the `avro_file` sink, prints progress, and at the
//! end says where the Capture files are and how to read them (`hubcap cat`).
//!
//! Every run starts from an empty directory, so its summary counts only its own files: a
//! directory an earlier demo left (it holds the [`MARKER`] file) is cleaned, and one holding
//! anything else is refused rather than mixed with. The first line says which.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hubcap_emulator::config::HubConfig;
use hubcap_emulator::{Emulator, EmulatorConfig};
use tokio_util::sync::CancellationToken;

use crate::eventhubs::{EventHubClient, OutgoingEvent, SendTarget};

const DEMO_HUB: &str = "demo-hub";

/// The file that marks a directory as the demo's own, safe to clean on the next run.
pub const MARKER: &str = ".hubcap-demo";

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the checkpoints and the Capture files go.
    pub dir: PathBuf,
    /// Stop after this long (`None`: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Events per second the producer publishes.
    pub rate: u32,
    pub partitions: usize,
    /// How long each window stays open.
    pub window: Duration,
}

/// What the demo did, for the closing summary.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    pub events_sent: u64,
    pub files: Vec<PathBuf>,
    pub capture_dir: PathBuf,
}

/// Runs the demo until `options.duration` passes or `stop` is cancelled.
pub async fn run(options: DemoOptions, stop: CancellationToken) -> anyhow::Result<DemoSummary> {
    println!("hubcap demo: {}", prepare_dir(&options.dir)?);
    let emulator = Emulator::start(EmulatorConfig {
        listen: "127.0.0.1:0".parse()?,
        hubs: vec![HubConfig {
            name: DEMO_HUB.into(),
            partitions: options.partitions,
        }],
        ..EmulatorConfig::default()
    })
    .await?;
    let connection_string = emulator.connection_string(Some(DEMO_HUB));
    let capture_dir = options.dir.join("capture");
    let http_port = free_loopback_port()?;
    let config_text = demo_config(&connection_string, &options, http_port);
    let config = crate::config::parse(&config_text, "hubcap demo", &|_| None)
        .map_err(|errors| anyhow::anyhow!("demo config: {errors}"))?;

    let sent = Arc::new(AtomicU64::new(0));
    let producer_stop = CancellationToken::new();
    let producer = tokio::spawn(produce(
        crate::runtime::client_settings(&config)?,
        options.rate,
        Arc::clone(&sent),
        producer_stop.clone(),
    ));
    let pipeline_stop = CancellationToken::new();
    let pipeline = tokio::spawn(crate::runtime::run(config, pipeline_stop.clone()));

    println!(
        "hubcap demo: emulator on {}, writing Capture files under {}",
        emulator.amqp_addr(),
        capture_dir.display()
    );
    println!(
        "             {} events/s into {} partitions, {}-second windows; Ctrl-C to stop",
        options.rate,
        options.partitions,
        options.window.as_secs()
    );
    println!("             health and metrics: http://127.0.0.1:{http_port}/readyz and /metrics");
    let started = Instant::now();
    let deadline = options.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(Duration::from_secs(2));
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let files = avro_files(&capture_dir).len();
                let count = sent.load(Ordering::Relaxed);
                let rate = count as f64 / started.elapsed().as_secs_f64();
                println!("  {:>5.0}s  sent {count:>8} events ({rate:>7.0}/s)  committed files: {files}", started.elapsed().as_secs_f64());
            }
            _ = sleep_until(deadline) => break,
            _ = stop.cancelled() => break,
        }
    }
    producer_stop.cancel();
    let _ = producer.await;
    pipeline_stop.cancel();
    let result = pipeline.await;
    emulator.shutdown().await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => anyhow::bail!("the pipeline task failed: {e}"),
    }
    Ok(DemoSummary {
        events_sent: sent.load(Ordering::Relaxed),
        files: avro_files(&capture_dir),
        capture_dir,
    })
}

/// Makes `dir` an empty demo directory and says what was done: created, used as it was empty,
/// or cleaned of an earlier demo's files. A directory with other files is an error.
pub fn prepare_dir(dir: &Path) -> anyhow::Result<String> {
    let shown = dir.display();
    let entries: Vec<std::fs::DirEntry> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.collect::<Result<_, _>>()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            std::fs::write(dir.join(MARKER), b"")?;
            return Ok(format!("new directory {shown}"));
        }
        Err(e) => anyhow::bail!("cannot read {shown}: {e}"),
    };
    if entries.is_empty() {
        std::fs::write(dir.join(MARKER), b"")?;
        return Ok(format!("empty directory {shown}"));
    }
    if !dir.join(MARKER).is_file() {
        anyhow::bail!(
            "{shown} is not empty and was not made by hubcap demo: choose another --dir (the demo cleans its directory on every run)"
        );
    }
    for entry in entries {
        if entry.file_name() == MARKER {
            continue;
        }
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(format!(
        "cleaning {shown} (an earlier demo's files): this run starts empty"
    ))
}

/// A free port for the demo's HTTP endpoint (bound and released: a demo can live with the tiny
/// race, and a fixed port would clash with a real hubcap on 9090).
fn free_loopback_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn demo_config(connection_string: &str, options: &DemoOptions, http_port: u16) -> String {
    let dir = options
        .dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        r#"
[eventhub]
connection_string = "{connection_string}"
name = "{DEMO_HUB}"
start_position = "earliest"

[checkpoint_store]
type = "file"
path = "{dir}/checkpoints"

[load_balancing]
update_interval = "2s"
ownership_expiration = "10s"

[sink]
type = "avro_file"
path = "{dir}/capture"
max_window = "{window}s"

[http]
listen = "127.0.0.1:{http_port}"

[log]
level = "warn"

[shutdown]
drain_timeout = "10s"
"#,
        window = options.window.as_secs().max(1)
    )
}

/// Publishes JSON events at `rate` per second, in batches of a tenth of a second.
async fn produce(
    settings: crate::eventhubs::ClientSettings,
    rate: u32,
    sent: Arc<AtomicU64>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let client = EventHubClient::new(settings)?;
    let mut sender = client.open_sender(&SendTarget::Hub).await?;
    let per_tick = (rate / 10).max(1) as usize;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut next_id: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => break,
        }
        let events: Vec<OutgoingEvent> = (0..per_tick)
            .map(|_| {
                next_id += 1;
                OutgoingEvent {
                    body: format!(
                        r#"{{"id":{next_id},"temperature":{:.1},"device":"sensor-{}"}}"#,
                        20.0 + (next_id % 100) as f64 / 10.0,
                        next_id % 8
                    )
                    .into_bytes(),
                    properties: vec![("source".into(), "hubcap-demo".into())],
                }
            })
            .collect();
        sender.send(&events).await?;
        sent.fetch_add(events.len() as u64, Ordering::Relaxed);
    }
    sender.close().await;
    client.close().await;
    Ok(())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Every committed `.avro` file under `dir`.
pub fn avro_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if path.is_dir() && !hidden {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "avro") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}
