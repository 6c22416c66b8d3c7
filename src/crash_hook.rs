//! A test-only fault hook: `HUBCAP_TEST_CRASH=<point>:<n>` makes the process kill itself with
//! SIGKILL the `n`-th time (1-based, over all partitions) it reaches `point`, so tests can crash
//! it exactly between two steps of the commit protocol instead of hoping a random `kill -9`
//! lands there. Points: `after_record` (the commit record is written, the window not yet
//! committed) and `after_commit` (the window is committed, its checkpoint not yet written).
//! `stop_after_record` / `stop_after_commit` stop the process with SIGSTOP there instead, so a
//! test can let its ownership be taken and resume it (a zombie) with SIGCONT.
//! Unset, it costs one check of a `OnceLock` per committed window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// A step of the commit protocol the hook can stop at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    AfterRecord,
    AfterCommit,
}

impl CrashPoint {
    fn name(self) -> &'static str {
        match self {
            CrashPoint::AfterRecord => "after_record",
            CrashPoint::AfterCommit => "after_commit",
        }
    }
}

struct Armed {
    point: CrashPoint,
    /// SIGSTOP rather than SIGKILL.
    stop: bool,
    at: u64,
    reached: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var("HUBCAP_TEST_CRASH").ok()?;
            let (point, at) = value.split_once(':')?;
            let (stop, point) = match point.strip_prefix("stop_") {
                Some(point) => (true, point),
                None => (false, point),
            };
            let point = match point {
                "after_record" => CrashPoint::AfterRecord,
                "after_commit" => CrashPoint::AfterCommit,
                _ => return None,
            };
            let at = at.parse::<u64>().ok().filter(|n| *n > 0)?;
            Some(Armed {
                point,
                stop,
                at,
                reached: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Kills (or stops) the process if the hook is armed for this point and this is the chosen time.
pub fn reached(point: CrashPoint) {
    let Some(armed) = armed() else {
        return;
    };
    if armed.point != point {
        return;
    }
    if armed.reached.fetch_add(1, Ordering::Relaxed) + 1 != armed.at {
        return;
    }
    let me = rustix::process::getpid();
    if armed.stop {
        eprintln!(
            "test crash hook: stop_{} #{}: stopping the process",
            point.name(),
            armed.at
        );
        let _ = rustix::process::kill_process(me, rustix::process::Signal::STOP);
    } else {
        eprintln!(
            "test crash hook: {} #{}: killing the process",
            point.name(),
            armed.at
        );
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
        std::process::abort();
    }
}
