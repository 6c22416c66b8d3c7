//! A test-only fault hook: `HUBCAP_TEST_CRASH=<point>:<n>` makes the process kill itself with
//! SIGKILL the `n`-th time (1-based, over all partitions) it reaches `point`, so tests can crash
//! it exactly between two steps of the commit protocol instead of hoping a random `kill -9`
//! lands there. Points: `after_record` (the commit record is written, the window not yet
//! committed) and `after_commit` (the window is committed, its checkpoint not yet written).
//! Unset, it costs one relaxed atomic load per committed window.

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
    at: u64,
    reached: AtomicU64,
}

fn armed() -> Option<&'static Armed> {
    static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
    ARMED
        .get_or_init(|| {
            let value = std::env::var("HUBCAP_TEST_CRASH").ok()?;
            let (point, at) = value.split_once(':')?;
            let point = match point {
                "after_record" => CrashPoint::AfterRecord,
                "after_commit" => CrashPoint::AfterCommit,
                _ => return None,
            };
            let at = at.parse::<u64>().ok().filter(|n| *n > 0)?;
            Some(Armed {
                point,
                at,
                reached: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Kills the process if the hook is armed for this point and this is the chosen time.
pub fn reached(point: CrashPoint) {
    let Some(armed) = armed() else {
        return;
    };
    if armed.point != point {
        return;
    }
    if armed.reached.fetch_add(1, Ordering::Relaxed) + 1 == armed.at {
        eprintln!(
            "test crash hook: {} #{}: killing the process",
            point.name(),
            armed.at
        );
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::process::abort();
    }
}
