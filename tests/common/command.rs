//! One-shot `hubcap` subcommands (`backfill`, `status`, ...) as child processes: arguments in,
//! exit status and the whole stdout and stderr out, within a deadline; signals while it runs.

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::POLL;

/// Whether process `pid` is stopped (SIGSTOP), from `/proc/<pid>/stat`.
pub fn is_stopped(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state == 'T' || state == 't')
        })
        .unwrap_or(false)
}

/// What a finished command left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Fails the test unless the command exited with `code`, showing its output.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            Some(code),
            "exit status {:?}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A running `hubcap ARGS`.
pub struct Subcommand {
    child: Child,
    readers: Vec<JoinHandle<String>>,
    what: String,
}

impl Subcommand {
    pub fn spawn<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Self {
        let what = args
            .iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new(env!("CARGO_BIN_EXE_hubcap"))
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("HUBCAP_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("hubcap starts");
        let read = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = pipe.read_to_string(&mut text);
                text
            })
        };
        let readers = vec![
            read(Box::new(child.stdout.take().expect("piped stdout"))),
            read(Box::new(child.stderr.take().expect("piped stderr"))),
        ];
        Self {
            child,
            readers,
            what,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is stopped (SIGSTOP).
    pub fn is_stopped(&self) -> bool {
        is_stopped(self.pid())
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Waits for the exit, killing the process and failing the test after `limit`.
    pub fn wait(mut self, limit: Duration) -> Finished {
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = self.readers.pop().map(|r| r.join().unwrap_or_default());
                panic!(
                    "hubcap {} still running after {limit:?}; stderr:\n{}",
                    self.what,
                    stderr.unwrap_or_default()
                );
            }
            std::thread::sleep(POLL);
        };
        let stderr = self
            .readers
            .pop()
            .expect("stderr reader")
            .join()
            .unwrap_or_default();
        let stdout = self
            .readers
            .pop()
            .expect("stdout reader")
            .join()
            .unwrap_or_default();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Subcommand {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `hubcap ARGS` to its end within `limit`.
pub fn run_hubcap<S: AsRef<OsStr>>(args: &[S], limit: Duration) -> Finished {
    Subcommand::spawn(args, &[]).wait(limit)
}

/// [`run_hubcap`] on the blocking pool: an in-process emulator on the test's runtime keeps
/// serving while the command runs.
pub async fn run_hubcap_async<S: AsRef<OsStr>>(args: &[S], limit: Duration) -> Finished {
    let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    tokio::task::spawn_blocking(move || run_hubcap(&args, limit))
        .await
        .expect("the command's waiting thread")
}

impl Subcommand {
    /// [`Subcommand::wait`] on the blocking pool.
    pub async fn finished(self, limit: Duration) -> Finished {
        tokio::task::spawn_blocking(move || self.wait(limit))
            .await
            .expect("the command's waiting thread")
    }
}
