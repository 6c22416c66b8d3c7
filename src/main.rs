//! The `hubcap` command line: thin on purpose; everything it runs lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use clap::{Parser, Subcommand};
use signal_hook::consts::signal::{SIGINT, SIGTERM};
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
    #[command(
        after_help = "Every config key is documented in config.example.toml at the top of the source tree; `hubcap check-config --connect` tries a config against the real services first."
    )]
    Run {
        #[arg(long, short, env = "HUBCAP_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file and print every problem found.
    CheckConfig {
        #[arg(long, short, env = "HUBCAP_CONFIG")]
        config: PathBuf,
        /// Also connect: Event Hubs accepts the credentials, the checkpoint store is readable
        /// and writable, the sink's destination is writable (writes an empty probe named
        /// `hubcap-preflight` in each container).
        #[arg(long)]
        connect: bool,
    },
    /// Print the events of archive files (Capture Avro, Parquet or JSON Lines, any codec) as
    /// JSON lines, in the stdout sink's format.
    Cat {
        /// Archive files, printed in the order given.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Stop after this many events in all.
        #[arg(long, short = 'n', value_name = "N")]
        limit: Option<u64>,
        /// Only these fields, comma-separated (partition_id, sequence_number, offset,
        /// enqueued_time, partition_key, properties, system_properties, body).
        #[arg(long, value_name = "a,b,...")]
        fields: Option<String>,
    },
    /// Check an archive end to end: every file reads, no gap and no duplicate in any partition,
    /// no checkpoint ahead of the data. Exit status 0 = exact, 1 = problems found, 2 = could
    /// not run.
    #[command(group(clap::ArgGroup::new("archive").required(true).args(["config", "dir"])))]
    Verify {
        /// The configured sink's archive (the file sink's directory or the blob sink's container) and the
        /// configured checkpoint store.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// A directory of archive files only (no checkpoints are checked).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// How the files under --dir are named [default: Capture's layout,
        /// {Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}].
        #[arg(long, value_name = "FMT", requires = "dir")]
        path_format: Option<String>,
        /// Print one JSON document instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: `hubcap completions bash > /etc/bash_completion.d/hubcap`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `hubcap man > /usr/local/share/man/man1/hubcap.1`.
    Man,
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
    /// Read and move a consumer group's checkpoints (list, set, export, import).
    Checkpoints(hubcap::ops::checkpoints::CheckpointsArgs),
    /// Show where every partition of the consumer group stands: owner, checkpoint, last
    /// event, lag, and checkpoints about to lose (or that lost) events to retention.
    Status(hubcap::ops::status::StatusArgs),
    /// Archive a past range of events into the configured sink (same formats, windows and
    /// names; windows by the events' enqueued time), skipping what the archive already holds.
    /// Checkpoints and ownerships are not touched. Exit status 0 = every partition reached the
    /// end of its range; 1 = interrupted (re-run to complete) or failed; 2 = bad config.
    Backfill(hubcap::ops::backfill::BackfillArgs),
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
    // First: a SIGTERM at any moment from here on is seen (see StartSignals).
    let signals = StartSignals::install();
    let cli = Cli::parse();
    // Only `run`, `demo` and `backfill` drain on a signal; every other command ends by it, as it would
    // with no handler at all.
    if !matches!(
        cli.command,
        Command::Run { .. } | Command::Demo { .. } | Command::Backfill(_)
    ) {
        signals.default_action_from_now();
    }
    match cli.command {
        Command::CheckConfig { config, connect } => check_config(&config, connect),
        Command::Cat {
            files,
            limit,
            fields,
        } => cat(&files, limit, fields.as_deref()),
        Command::Verify {
            config,
            dir,
            path_format,
            json,
        } => verify(
            config.as_deref(),
            dir.as_deref(),
            path_format.as_deref(),
            json,
        ),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "hubcap", &mut script);
            print_bytes("completions", &script)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            let mut page = Vec::new();
            match clap_mangen::Man::new(command).render(&mut page) {
                Ok(()) => print_bytes("man", &page),
                Err(e) => {
                    eprintln!("hubcap man: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => run(&config, signals),
        Command::Checkpoints(args) => {
            let path = args.config_path().to_owned();
            operate("checkpoints", &path, None, |config, _| {
                hubcap::ops::checkpoints::run(args, config)
            })
        }
        Command::Status(args) => {
            let path = args.config.clone();
            operate("status", &path, None, |config, _| async move {
                hubcap::ops::status::run(config, &args).await
            })
        }
        Command::Backfill(args) => {
            let path = args.config.clone();
            operate("backfill", &path, Some(signals), |config, stop| {
                hubcap::ops::backfill::command(config, args, stop)
            })
        }
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
        } => demo(
            hubcap::demo::DemoOptions {
                dir,
                duration: duration.map(std::time::Duration::from_secs),
                rate,
                partitions,
                window: std::time::Duration::from_secs(window),
            },
            signals,
        ),
    }
}

/// Writes generated text to stdout; a reader that stops early (`| head`) is not an error.
fn print_bytes(command: &str, bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hubcap {command}: stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(options: hubcap::demo::DemoOptions, early: StartSignals) -> ExitCode {
    init_logging(LogFormat::Text, "warn");
    let Some(runtime) = runtime(pool_size()) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let stop = CancellationToken::new();
        let signals = SignalWatcher::start(early, stop.clone());
        let result = hubcap::demo::run(options, stop).await;
        signals.stop().await;
        match result {
            Ok(summary) => {
                println!();
                println!(
                    "sent {} events; {} Capture files under {}",
                    summary.events_sent,
                    summary.files.len(),
                    summary.capture_dir.display()
                );
                if let Some(first) = summary.files.first() {
                    println!("print one as JSON lines:");
                    println!("  hubcap cat --limit 5 {}", first.display());
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
    // A command line tool: quiet on success; RUST_LOG still overrides.
    init_logging(config.log.format, "warn");
    let target = match (partition_key, partition_id) {
        (Some(key), _) => hubcap::eventhubs::SendTarget::PartitionKey(key),
        (None, Some(id)) => hubcap::eventhubs::SendTarget::Partition(id),
        (None, None) => hubcap::eventhubs::SendTarget::Hub,
    };
    let Some(runtime) = runtime(pool_size()) else {
        return ExitCode::FAILURE;
    };
    let sent = runtime.block_on(async {
        if let hubcap::eventhubs::SendTarget::Partition(id) = &target {
            hubcap::preflight::check_partition_exists(&config, id).await?;
        }
        hubcap::runtime::send_lines(&config, &target, std::io::stdin().lock()).await
    });
    match sent {
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

/// The operator commands (`status`, `checkpoints`, `backfill`, in `hubcap::ops`): load the
/// config (exit 2 on a bad one, every problem printed), log quietly (RUST_LOG overrides), run
/// `command` on a small pool. An error is printed as `hubcap <name>: <error>` with exit 1;
/// otherwise the exit status is the command's own. With `signals`, the first SIGTERM/SIGINT
/// cancels the token `command` gets (it drains), a second one ends the process.
fn operate<F, Fut>(
    name: &str,
    path: &std::path::Path,
    signals: Option<StartSignals>,
    command: F,
) -> ExitCode
where
    F: FnOnce(config::Config, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.format, "warn");
    let Some(runtime) = runtime(pool_size()) else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let stop = CancellationToken::new();
        let watcher = signals.map(|signals| SignalWatcher::start(signals, stop.clone()));
        let result = command(config, stop).await;
        if let Some(watcher) = watcher {
            watcher.stop().await;
        }
        result
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hubcap {name}: {e:#}");
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

fn check_config(path: &std::path::Path, connect: bool) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{} problem(s) found", errors.errors.len());
            return ExitCode::from(2);
        }
    };
    println!("{}: ok", path.display());
    if !connect {
        return ExitCode::SUCCESS;
    }
    init_logging(config.log.format, "warn");
    let Some(runtime) = runtime(pool_size()) else {
        return ExitCode::FAILURE;
    };
    let checks = runtime.block_on(hubcap::preflight::connect_checks(&config));
    let mut failed = 0;
    for check in &checks {
        match &check.outcome {
            Ok(found) => println!("{}: ok: {found}", check.what),
            Err(problem) => {
                failed += 1;
                println!("{}: FAILED: {problem}", check.what);
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{failed} of {} connection check(s) failed", checks.len());
        ExitCode::FAILURE
    }
}

/// `hubcap cat`: every file in order, stopping at `limit` events; a bad file is reported and
/// the others still printed.
fn cat(files: &[PathBuf], limit: Option<u64>, fields: Option<&str>) -> ExitCode {
    use std::io::Write;
    let fields = match fields.map(hubcap::archive::parse_fields).transpose() {
        Ok(fields) => fields,
        Err(problem) => {
            eprintln!("hubcap cat: --fields: {problem}");
            return ExitCode::from(2);
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut failed = false;
    let mut line = Vec::new();
    for file in files {
        if limit.is_some_and(|limit| printed >= limit) {
            break;
        }
        let mut write_error = None;
        let result = hubcap::archive::read_file(file, |event| {
            line.clear();
            hubcap::archive::write_json_line(&event, fields.as_deref(), &mut line);
            if let Err(e) = out.write_all(&line) {
                write_error = Some(e);
                return false;
            }
            printed += 1;
            limit.is_none_or(|limit| printed < limit)
        });
        if let Some(e) = write_error {
            // A closed pipe (`| head`) is the reader saying it has enough.
            return if e.kind() == std::io::ErrorKind::BrokenPipe {
                ExitCode::SUCCESS
            } else {
                eprintln!("hubcap cat: stdout: {e}");
                ExitCode::FAILURE
            };
        }
        if let Err(e) = result {
            let _ = out.flush();
            eprintln!("hubcap cat: {e}");
            failed = true;
        }
    }
    if let Err(e) = out.flush() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("hubcap cat: stdout: {e}");
            return ExitCode::FAILURE;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `hubcap verify`: 0 when the archive is exact, 1 when problems were found, 2 when it could
/// not be checked at all.
fn verify(
    config: Option<&std::path::Path>,
    dir: Option<&std::path::Path>,
    path_format: Option<&str>,
    json: bool,
) -> ExitCode {
    let could_not_run = |problem: &dyn std::fmt::Display| {
        eprintln!("hubcap verify: {problem}");
        ExitCode::from(2)
    };
    enum Target<'a> {
        Config(Box<config::Config>),
        Dir(&'a std::path::Path, hubcap::sink::path_format::PathFormat),
    }
    let target = match (config, dir) {
        (Some(path), _) => match config::load(path) {
            Ok(config) => Target::Config(Box::new(config)),
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::from(2);
            }
        },
        (None, Some(dir)) => {
            let format = path_format.unwrap_or(hubcap::config::DEFAULT_PATH_FORMAT);
            match hubcap::verify::parse_path_format(format) {
                Ok(format) => Target::Dir(dir, format),
                Err(error) => return could_not_run(&error),
            }
        }
        (None, None) => return could_not_run(&"give --config FILE or --dir DIR"),
    };
    let log_format = match &target {
        Target::Config(config) => config.log.format,
        Target::Dir(..) => LogFormat::Text,
    };
    init_logging(log_format, "warn");
    let Some(runtime) = runtime(1) else {
        return ExitCode::from(2);
    };
    let report = runtime.block_on(async {
        match &target {
            Target::Config(config) => hubcap::verify::verify_config(config).await,
            Target::Dir(dir, format) => hubcap::verify::verify_dir(dir, format).await,
        }
    });
    let report = match report {
        Ok(report) => report,
        Err(error) => return could_not_run(&error),
    };
    let mut text = if json {
        report.to_json()
    } else {
        report.to_text()
    };
    if !text.ends_with('\n') {
        text.push('\n');
    }
    match print_bytes("verify", text.as_bytes()) {
        code if code != ExitCode::SUCCESS => ExitCode::from(2),
        _ if report.ok => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

fn run(path: &std::path::Path, early: StartSignals) -> ExitCode {
    let config = match config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(2);
        }
    };
    init_logging(config.log.format, &config.log.level);
    if early.requested() {
        info!("{}", hubcap::runtime::STOPPED_BEFORE_STARTING);
        return ExitCode::SUCCESS;
    }
    let Some(runtime) = runtime(config.runtime.worker_threads) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = SignalWatcher::start(early, shutdown.clone());
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

/// SIGTERM and SIGINT, caught from the first instruction of `main`: before the config is
/// loaded and before the async runtime (with tokio's signal streams) exists, a signal only sets
/// a flag, so a signal at any moment of start-up is a clean stop instead of the default action
/// killing the process. The [`SignalWatcher`] consults the same flag later.
///
/// Commands that do not drain arm [`StartSignals::default_action_from_now`]: a signal then ends
/// them exactly as it would with no handler (and one that came while the command line was
/// parsed does so at once).
#[derive(Clone)]
struct StartSignals {
    /// Set by every SIGTERM/SIGINT; the watcher takes it ([`StartSignals::take`]).
    pending: Arc<AtomicBool>,
    /// The last signal's number, 0 before any.
    last: Arc<AtomicUsize>,
    /// Once set, a signal takes its default action at once.
    default_action: Arc<AtomicBool>,
    /// Whether every handler was installed; if not, the watcher takes tokio's word alone.
    installed: bool,
}

impl StartSignals {
    fn install() -> Self {
        let mut signals = Self {
            pending: Arc::new(AtomicBool::new(false)),
            last: Arc::new(AtomicUsize::new(0)),
            default_action: Arc::new(AtomicBool::new(false)),
            installed: true,
        };
        for signal in [SIGTERM, SIGINT] {
            // The conditional default first: signal-hook runs a signal's actions in the order
            // they were registered, and tokio's (registered later) after all of these.
            let installed = signal_hook::flag::register_conditional_default(
                signal,
                Arc::clone(&signals.default_action),
            )
            .and_then(|_| {
                signal_hook::flag::register_usize(
                    signal,
                    Arc::clone(&signals.last),
                    usize::try_from(signal).unwrap_or_default(),
                )
            })
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&signals.pending)));
            if let Err(error) = installed {
                // Logging is not set up yet.
                eprintln!("hubcap: cannot install the handler of signal {signal}: {error}");
                signals.installed = false;
            }
        }
        signals
    }

    /// From now on a signal ends the process by its default action; one that already came
    /// does so now.
    fn default_action_from_now(&self) {
        self.default_action.store(true, Ordering::SeqCst);
        let last = self.last.load(Ordering::SeqCst);
        if last != 0 {
            let signal = i32::try_from(last).unwrap_or(SIGTERM);
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        }
    }

    /// Whether a signal came at any time since `main` began.
    fn requested(&self) -> bool {
        self.pending.load(Ordering::SeqCst)
    }

    /// Whether a signal came since the last call: each signal is taken once.
    fn take(&self) -> bool {
        self.pending.swap(false, Ordering::SeqCst)
    }
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
    /// Watches for signals, including one that came before it started; the first one cancels
    /// `shutdown`.
    fn start(signals: StartSignals, shutdown: CancellationToken) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch_signals(signals, shutdown, stop.clone()));
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            warn!(error = %error, "the signal watcher failed");
        }
    }
}

/// First SIGTERM/SIGINT (since `main` began): drain. Second: exit at once. Returns when `stop`
/// is cancelled.
async fn watch_signals(
    signals: StartSignals,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    use tokio::signal::unix::{signal, SignalKind};
    // tokio's streams only wake this task; what counts is the start-up flag, which a signal
    // sets before tokio hears of it and which also holds one that came before these existed.
    let mut wakers = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some((term, int)),
        _ => {
            warn!("cannot watch signals with tokio; checking for them every 100 ms");
            None
        }
    };
    if !next_signal(&signals, &mut wakers, &stop).await {
        return;
    }
    info!("shutdown requested: draining (send the signal again to exit at once)");
    shutdown.cancel();
    if !next_signal(&signals, &mut wakers, &stop).await {
        return;
    }
    warn!("second signal: exiting without draining");
    std::process::exit(130);
}

/// Waits for the next signal (true) or for `stop` (false).
async fn next_signal(
    signals: &StartSignals,
    wakers: &mut Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
    stop: &CancellationToken,
) -> bool {
    loop {
        if signals.take() {
            return true;
        }
        // A wake-up for a signal already taken finds the flag clear and waits again. Without
        // the start-up handler (it could not be installed), the wake-up is the signal.
        match wakers {
            Some((term, int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    () = stop.cancelled() => return false,
                }
                if !signals.installed {
                    signals.take();
                    return true;
                }
            }
            None => tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                () = stop.cancelled() => return false,
            },
        }
    }
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
