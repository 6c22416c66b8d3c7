//! The `hubcap` command line: thin on purpose; everything it runs lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use hubcap::config::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(version, about = "Archive Azure Event Hubs durably, Capture-style")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, short, env = "HUBCAP_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file and print every problem found.
    CheckConfig {
        #[arg(long, short, env = "HUBCAP_CONFIG")]
        config: PathBuf,
    },
    /// Publish each line of standard input as one event to the configured event hub.
    Send {
        #[arg(long, short, env = "HUBCAP_CONFIG")]
        config: PathBuf,
        /// Send every event with this partition key (same key, same partition).
        #[arg(long, conflicts_with = "partition_id")]
        partition_key: Option<String>,
        /// Send every event to this partition.
        #[arg(long)]
        partition_id: Option<String>,
    },
    /// Run the whole pipeline on an embedded emulator: no Azure account needed.
    Demo {
        /// Directory for the checkpoints and the Capture files.
        #[arg(long, default_value = "hubcap-demo")]
        dir: PathBuf,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
        /// Events per second to publish.
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        /// Partitions of the demo event hub.
        #[arg(long, default_value_t = 4)]
        partitions: usize,
        /// Seconds each Capture window stays open.
        #[arg(long, default_value_t = 10)]
        window: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Run { config } => run(&config),
        Command::Send {
            config,
            partition_key,
            partition_id,
        } => send(&config, partition_key, partition_id),
        Command::Demo {
            dir,
            duration,
            rate,
            partitions,
            window,
        } => demo(hubcap::demo::DemoOptions {
            dir,
            duration: duration.map(std::time::Duration::from_secs),
            rate,
            partitions,
            window: std::time::Duration::from_secs(window),
        }),
    }
}

fn demo(options: hubcap::demo::DemoOptions) -> ExitCode {
    init_logging(LogFormat::Text, "warn");
    let Some(runtime) = runtime(pool_size()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let signals = SignalWatcher::start(stop.clone());
        let result = hubcap::demo::run(options, stop).await;
        signals.stop().await;
        match result {
            Ok(summary) => {
                println!();
                println!("sent {} events; {} Capture files under {}", summary.events_sent, summary.files.len(), summary.capture_dir.display());
                if let Some(first) = summary.files.first() {
                    println!("read one with fastavro:");
                    println!("  python3 -c 'import fastavro,sys; [print(r[\"SequenceNumber\"], r[\"Body\"]) for r in fastavro.reader(open(sys.argv[1],\"rb\"))]' {}", first.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hubcap demo: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn send(
    path: &std::path::Path,
    partition_key: Option<String>,
    partition_id: Option<String>,
) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.format, &config.log.level);
    let target = match (partition_key, partition_id) {
        (Some(key), _) => hubcap::eventhubs::SendTarget::PartitionKey(key),
        (None, Some(id)) => hubcap::eventhubs::SendTarget::Partition(id),
        (None, None) => hubcap::eventhubs::SendTarget::Hub,
    };
    let Some(runtime) = runtime(pool_size()) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(hubcap::runtime::send_lines(
        &config,
        &target,
        std::io::stdin().lock(),
    )) {
        Ok((events, batches)) => {
            eprintln!("sent {events} events in {batches} batches");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hubcap send: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Threads for `demo` and `send`, which run more than the daemon's pipeline: one per CPU, at
/// least two.
fn pool_size() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

/// The async runtime: one thread (tokio's current-thread scheduler) or a pool of
/// `worker_threads`. The daemon defaults to one: fe2o3 hands every frame from the connection
/// task to the session task to the link, and on one thread those hand-offs are plain queue
/// pushes instead of cross-thread wake-ups (about 15% less CPU per event, measured in
/// bench/). The demo and `send` run the emulator or a producer beside it and take a pool.
fn runtime(worker_threads: usize) -> Option<tokio::runtime::Runtime> {
    let mut builder = if worker_threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(worker_threads);
        builder
    };
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            None
        }
    }
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} problem(s) found", errors.errors.len());
            ExitCode::from(2)
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.format, &config.log.level);
    let Some(runtime) = runtime(config.runtime.worker_threads) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = SignalWatcher::start(shutdown.clone());
        let result = hubcap::runtime::run(config, shutdown).await;
        signals.stop().await;
        match result {
            Ok(()) => {
                info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!(error = %e, "hubcap stopped on an error");
                eprintln!("hubcap: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The task that turns SIGTERM/SIGINT into a shutdown, owned by the command that runs it:
/// stopped and awaited when the command ends, so no task outlives it.
struct SignalWatcher {
    /// Cancelled by [`SignalWatcher::stop`]: the command is over, signals are no longer ours.
    stop: CancellationToken,
    /// The watching task.
    task: tokio::task::JoinHandle<()>,
}

impl SignalWatcher {
    /// Watches for signals from now on; the first one cancels `shutdown`.
    fn start(shutdown: CancellationToken) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_signals(shutdown, stop.clone()));
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            warn!(error = %error, "the signal watcher failed");
        }
    }
}

/// First SIGTERM/SIGINT: drain. Second: exit at once. Returns when `stop` is cancelled.
async fn watch_signals(shutdown: CancellationToken, stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = stop.cancelled() => return,
    }
    info!("shutdown requested: draining (send the signal again to exit at once)");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = stop.cancelled() => return,
    }
    warn!("second signal: exiting without draining");
    std::process::exit(130);
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
