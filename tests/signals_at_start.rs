//! SIGTERM at any moment of `hubcap run`'s start-up is a clean stop: exit status 0, never death
//! by the signal. hubcap catches SIGTERM/SIGINT from the first instruction of `main`, before it
//! loads the config. A process cannot catch anything before its `main` (while the kernel and
//! the dynamic loader start it), so the moments tried here start when `main` is about to run:
//! when `/proc/<pid>/status` shows the SIGSEGV and SIGBUS handlers Rust's runtime installs just
//! before calling `main` (every Rust binary has them, whatever its own code does).

mod common;

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use rand::Rng as _;

/// Runs of the random-moment test.
const RUNS: usize = 20;
/// The latest moment a run is signalled, after its handler is installed.
const LATEST: Duration = Duration::from_millis(50);
/// How long a process may take to install its handler, and to exit once signalled.
const LIMIT: Duration = Duration::from_secs(15);
/// How often `/proc` is looked at while waiting for the handler: fine enough that the moments
/// tried start within a millisecond of it.
const FINE_POLL: Duration = Duration::from_micros(200);

/// The same log line as `hubcap::runtime::STOPPED_BEFORE_STARTING`, known by its start.
const STOPPED_BEFORE_STARTING: &str = "stopped before starting";

/// An Event Hubs endpoint where nobody listens: start-up never gets past connecting.
fn unreachable_endpoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// The caught-signals mask of a process, from `/proc/<pid>/status`.
fn caught_signals(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
    u64::from_str_radix(mask.trim(), 16).ok()
}

/// SIGTERM and SIGINT (bits 14 and 1 of the mask): hubcap's own handlers.
const HUBCAP_HANDLERS: u64 = (1 << (15 - 1)) | (1 << (2 - 1));
/// SIGSEGV and SIGBUS (bits 10 and 6): the stack-overflow handlers Rust's runtime installs
/// right before `main`.
const RUST_RUNTIME_HANDLERS: u64 = (1 << (11 - 1)) | (1 << (7 - 1));

/// Waits until the process catches every signal in `wanted`.
fn wait_for_handlers(pid: u32, wanted: u64, exited: &mut dyn FnMut() -> bool) {
    let started = Instant::now();
    while caught_signals(pid).is_none_or(|mask| mask & wanted != wanted) {
        assert!(!exited(), "hubcap {pid} exited before catching {wanted:#x}");
        assert!(
            started.elapsed() < LIMIT,
            "hubcap {pid} does not catch signals {wanted:#x} within {LIMIT:?}"
        );
        std::thread::sleep(FINE_POLL);
    }
}

fn sigterm(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -TERM {pid}");
}

/// No partition was claimed: the store has no ownership record (it may not exist at all).
fn assert_nothing_claimed(work: &Workdir) {
    let mut pending = vec![work.checkpoints()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.parent().is_some_and(|p| p.ends_with("ownership")) {
                let name = entry.file_name();
                assert!(
                    name.to_string_lossy().starts_with('.'),
                    "an ownership record was written: {}",
                    path.display()
                );
            }
        }
    }
}

/// Opens `fifo` for writing once a reader has it open, within [`LIMIT`], failing if the
/// process exited first (a process killed by the signal never reads it).
fn open_when_read(fifo: &Path, exited: &mut dyn FnMut() -> bool) -> std::fs::File {
    let started = Instant::now();
    loop {
        // Non-blocking: without a reader this fails (ENXIO) instead of waiting forever.
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
            .open(fifo);
        match opened {
            Ok(file) => return file,
            Err(error) if error.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {}
            Err(error) => panic!("open {}: {error}", fifo.display()),
        }
        assert!(!exited(), "hubcap exited without reading its config");
        assert!(
            started.elapsed() < LIMIT,
            "hubcap does not read its config within {LIMIT:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// The config is a named pipe, so hubcap is held inside config loading until the test writes
/// it: SIGTERM arrives, for certain, before the config is loaded. hubcap then reads it, stops
/// without starting anything, and says so.
#[test]
fn sigterm_before_the_config_is_loaded_is_a_clean_stop() {
    let work = Workdir::new();
    let fifo = work.checkpoints().with_file_name("hubcap.toml");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let config = work.config(unreachable_endpoint()).sink(Sink::AvroFile);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcap"))
        .arg("run")
        .arg("--config")
        .arg(&fifo)
        .env_remove("RUST_LOG")
        .env_remove("HUBCAP_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut exited = || child.try_wait().unwrap().is_some();
    wait_for_handlers(pid, HUBCAP_HANDLERS, &mut exited);
    sigterm(pid);
    // Only now can the config be read.
    let mut pipe = open_when_read(&fifo, &mut exited);
    pipe.write_all(config.to_toml().as_bytes()).unwrap();
    drop(pipe);

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("hubcap still running {LIMIT:?} after SIGTERM");
        }
        std::thread::sleep(POLL);
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        status.signal(),
        None,
        "killed by a signal: {status}\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "{status}\n{stderr}");
    assert!(stderr.contains(STOPPED_BEFORE_STARTING), "{stderr}");
    assert!(
        !work.checkpoints().exists(),
        "the store was opened: {}",
        work.checkpoints().display()
    );
    assert!(!work.archive().exists(), "the archive was touched");
}

/// SIGTERM at random moments of the first 50 ms (denser early), run after run: while the config is read, the
/// runtime built, the store opened, the hub (unreachable here) first dialled. Every run exits
/// 0, none by the signal, and none claims anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_at_any_moment_of_start_up_exits_0() {
    let work = Workdir::new();
    let config = work.config(unreachable_endpoint()).sink(Sink::AvroFile);
    let mut rng = rand::thread_rng();
    let (mut before_starting, mut draining) = (0, 0);
    for run in 1..=RUNS {
        // Anywhere in 0-50 ms, most of them early (the cube of a uniform draw): start-up is
        // over within a few milliseconds.
        let delay = LATEST.mul_f64(rng.gen::<f64>().powi(3));
        let mut hubcap = Hubcap::start(&format!("start-up run {run}"), &work, &config);
        let pid = hubcap.pid();
        wait_for_handlers(pid, RUST_RUNTIME_HANDLERS, &mut || !hubcap.is_running());
        // The moment under test, counted from `main`; not a wait for anything.
        std::thread::sleep(delay);
        sigterm(pid);
        let status = hubcap.wait_exit(LIMIT).await;
        assert_eq!(
            status.signal(),
            None,
            "run {run}, SIGTERM {delay:?} after main: killed by the signal ({status})"
        );
        assert_eq!(
            status.code(),
            Some(0),
            "run {run}, SIGTERM {delay:?} after main: {status}\n{}",
            hubcap.stderr()
        );
        if hubcap.has_log(|l| l.message.starts_with(STOPPED_BEFORE_STARTING)) {
            before_starting += 1;
        } else {
            draining += 1;
        }
    }
    eprintln!(
        "{RUNS} runs: {before_starting} stopped before starting, {draining} drained after start-up"
    );
    assert_nothing_claimed(&work);
}

/// After start-up nothing changed: the first signal drains, a second one during the drain
/// exits at once (status 130), without waiting for the drain's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_exits_at_once() {
    let emulator = start_emulator(1).await;
    preload_each(&emulator, 50, 100);
    let work = Workdir::new();
    // A file where the window's directory must go: every commit fails, so the drain cannot
    // finish before its deadline.
    std::fs::create_dir_all(work.archive()).unwrap();
    std::fs::write(work.archive().join("127.0.0.1"), b"in the way").unwrap();
    let config = work.config(emulator.amqp_addr()).sink(Sink::AvroFile);
    let mut hubcap = Hubcap::start("stuck drain", &work, &config);
    hubcap
        .wait_for_log("a commit failing", LIMIT, |l| {
            l.message.starts_with("sink failed")
        })
        .await;
    hubcap.terminate();
    hubcap
        .wait_for_log("the drain under way", LIMIT, |l| {
            l.message.starts_with("draining")
        })
        .await;
    assert!(
        hubcap.is_running(),
        "the drain ended before the second signal"
    );
    let second = Instant::now();
    hubcap.terminate();
    let status = hubcap.wait_exit(DRAIN_TIMEOUT / 2).await;
    assert_eq!(status.code(), Some(130), "{status}\n{}", hubcap.stderr());
    assert!(second.elapsed() < DRAIN_TIMEOUT / 2);
    assert!(hubcap.has_log(|l| l.message.starts_with("second signal")));
}
