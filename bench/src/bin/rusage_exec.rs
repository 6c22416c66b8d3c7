//! `rusage_exec OUT.json -- COMMAND [ARGS...]`: runs COMMAND, waits for it with `wait4` and writes
//! its own resource usage to OUT.json: `{"exit_code", "signal", "user_s", "sys_s", "max_rss_kib",
//! "minor_faults", "major_faults", "voluntary_switches", "involuntary_switches"}`.
//!
//! Why a launcher: Linux carries a process's peak RSS across `exec` (`ru_maxrss` is the larger of
//! the new image's and the image it replaced), so a contestant forked straight from the Python
//! harness reports the harness's peak RSS if that is higher. Forked from this small process, the
//! contestant's `ru_maxrss` is its own. SIGTERM, SIGINT and SIGHUP are forwarded to COMMAND, so
//! the harness can stop it through this process; the exit code is COMMAND's (128 + signal if a
//! signal ended it). COMMAND dies with this process (PR_SET_PDEATHSIG).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; pid is our child's.
        unsafe { libc::kill(pid, signal) };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, command) = match args.as_slice() {
        [out, dashes, command @ ..] if dashes == "--" && !command.is_empty() => {
            (out.clone(), command)
        }
        _ => {
            eprintln!("usage: rusage_exec OUT.json -- COMMAND [ARGS...]");
            std::process::exit(2);
        }
    };
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls kill (async-signal-safe).
        unsafe { libc::signal(signal, forward as *const () as libc::sighandler_t) };
    }
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: prctl is async-signal-safe; the child dies with this launcher (SIGKILL'd on a
    // timeout) instead of outliving it.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    };
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("rusage_exec: cannot start {}: {e}", command[0]);
            std::process::exit(127);
        }
    };
    let pid = child.id() as libc::pid_t;
    CHILD.store(pid, Ordering::SeqCst);
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain data; wait4 fills it when it returns the child's pid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to the locals above.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            eprintln!("rusage_exec: wait4: {}", std::io::Error::last_os_error());
            std::process::exit(125);
        }
    }
    // The child was reaped by wait4 above; std's handle must not wait for it again.
    std::mem::forget(child);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let (exit_code, signal) = if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), 0)
    } else {
        (128 + libc::WTERMSIG(status), libc::WTERMSIG(status))
    };
    let report = serde_json::json!({
        "exit_code": exit_code,
        "signal": signal,
        "user_s": secs(usage.ru_utime),
        "sys_s": secs(usage.ru_stime),
        "max_rss_kib": usage.ru_maxrss,
        "minor_faults": usage.ru_minflt,
        "major_faults": usage.ru_majflt,
        "voluntary_switches": usage.ru_nvcsw,
        "involuntary_switches": usage.ru_nivcsw,
    });
    let written = std::fs::File::create(&out).and_then(|mut f| writeln!(f, "{report}"));
    if let Err(e) = written {
        eprintln!("rusage_exec: writing {out}: {e}");
        std::process::exit(125);
    }
    std::process::exit(exit_code);
}
