//! Backfill progress: counters the readers bump, and a task that shows them: a redrawn bar per
//! partition and one for the total on a terminal, a plain line every few seconds otherwise
//! (logs, CI). Rendering is pure ([`render`]); only [`show`] knows about time and terminals.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::ops::human_duration;

/// One partition's counters.
#[derive(Debug)]
pub struct PartitionProgress {
    pub partition_id: String,
    /// Events to read (what the archive did not hold).
    pub total: u64,
    /// Events read so far.
    pub read: AtomicU64,
}

/// Every partition's counters; shared by the readers and the display.
#[derive(Debug)]
pub struct Progress {
    pub partitions: Vec<Arc<PartitionProgress>>,
    started: Instant,
}

impl Progress {
    pub fn new(totals: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self {
            partitions: totals
                .into_iter()
                .map(|(partition_id, total)| {
                    Arc::new(PartitionProgress {
                        partition_id,
                        total,
                        read: AtomicU64::new(0),
                    })
                })
                .collect(),
            started: Instant::now(),
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            partitions: self
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.partition_id.clone(),
                        p.read.load(Ordering::Relaxed),
                        p.total,
                    )
                })
                .collect(),
            elapsed: self.started.elapsed(),
        }
    }
}

/// The counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `(partition, read, total)`.
    pub partitions: Vec<(String, u64, u64)>,
    pub elapsed: Duration,
}

impl Snapshot {
    fn totals(&self) -> (u64, u64) {
        self.partitions
            .iter()
            .fold((0, 0), |(read, total), (_, r, t)| {
                (read + r.min(t), total + t)
            })
    }
}

/// Partitions drawn one by one on a terminal; beyond this only the total is drawn.
const MAX_PARTITION_LINES: usize = 16;
const BAR_WIDTH: usize = 30;

/// The terminal display: a line per partition (up to [`MAX_PARTITION_LINES`]) and the total.
pub fn render(snapshot: &Snapshot) -> Vec<String> {
    let mut lines = Vec::new();
    if snapshot.partitions.len() <= MAX_PARTITION_LINES {
        for (id, read, total) in &snapshot.partitions {
            lines.push(format!(
                "partition {id:<4} {} {:>12}",
                bar(*read, *total),
                format!("{}/{total}", read.min(total))
            ));
        }
    }
    let (read, total) = snapshot.totals();
    lines.push(format!(
        "total          {} {:>12}  {}",
        bar(read, total),
        format!("{read}/{total}"),
        rate_and_eta(read, total, snapshot.elapsed)
    ));
    lines
}

/// The line written every few seconds when stderr is not a terminal.
pub fn log_line(snapshot: &Snapshot) -> String {
    let (read, total) = snapshot.totals();
    let done = snapshot
        .partitions
        .iter()
        .filter(|(_, read, total)| read >= total)
        .count();
    format!(
        "backfill: {read} of {total} events read ({}), {done} of {} partitions done, {}",
        percent(read, total),
        snapshot.partitions.len(),
        rate_and_eta(read, total, snapshot.elapsed)
    )
}

fn bar(done: u64, total: u64) -> String {
    let filled = if total == 0 {
        BAR_WIDTH
    } else {
        ((done.min(total) as u128 * BAR_WIDTH as u128) / total as u128) as usize
    };
    format!(
        "[{}{}] {:>4}",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled),
        percent(done, total)
    )
}

fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        return "100%".into();
    }
    format!("{}%", (done.min(total) as u128 * 100 / total as u128))
}

fn rate_and_eta(read: u64, total: u64, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    if read == 0 || seconds <= 0.0 {
        return "rate -, ETA -".into();
    }
    let rate = read as f64 / seconds;
    let remaining = total.saturating_sub(read) as f64 / rate;
    format!(
        "{} events/s, ETA {}",
        human_count(rate),
        human_duration(remaining)
    )
}

fn human_count(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}

/// How often the display changes.
const REDRAW: Duration = Duration::from_millis(250);
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Shows `progress` on stderr until `done` is cancelled, then once more (the final state).
pub async fn show(progress: Arc<Progress>, done: CancellationToken) {
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut drawn = 0usize;
    let mut draw = |progress: &Progress| {
        let snapshot = progress.snapshot();
        let mut err = std::io::stderr().lock();
        if terminal {
            let lines = render(&snapshot);
            // Back to the first line drawn last time, then every line cleared and redrawn.
            if drawn > 0 {
                let _ = write!(err, "\x1b[{drawn}A");
            }
            for line in &lines {
                let _ = writeln!(err, "\x1b[2K{line}");
            }
            drawn = lines.len();
        } else {
            let _ = writeln!(err, "{}", log_line(&snapshot));
        }
        let _ = err.flush();
    };
    let every = if terminal { REDRAW } else { LOG_EVERY };
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = ticks.tick() => draw(&progress),
            () = done.cancelled() => break,
        }
    }
    draw(&progress);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(partitions: &[(&str, u64, u64)], elapsed_s: u64) -> Snapshot {
        Snapshot {
            partitions: partitions
                .iter()
                .map(|(id, read, total)| ((*id).to_owned(), *read, *total))
                .collect(),
            elapsed: Duration::from_secs(elapsed_s),
        }
    }

    #[test]
    fn a_terminal_gets_a_bar_per_partition_and_the_total_with_rate_and_eta() {
        let lines = render(&snapshot(&[("0", 500, 1000), ("1", 1000, 1000)], 10));
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            format!(
                "partition 0    [{}{}]  50%     500/1000",
                "#".repeat(15),
                ".".repeat(15)
            )
        );
        assert!(
            lines[1].contains(&format!("[{}] 100%", "#".repeat(30))),
            "{}",
            lines[1]
        );
        // 1500 events in 10 s: 150/s, 500 left: about 3 s.
        assert!(
            lines[2].starts_with("total") && lines[2].ends_with("1500/2000  150 events/s, ETA 3s"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn many_partitions_show_only_the_total() {
        let many: Vec<(String, u64, u64)> = (0..40).map(|i| (i.to_string(), 1, 2)).collect();
        let lines = render(&Snapshot {
            partitions: many,
            elapsed: Duration::from_secs(1),
        });
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("40/80"), "{}", lines[0]);
    }

    #[test]
    fn logs_get_one_plain_line() {
        assert_eq!(
            log_line(&snapshot(&[("0", 20_000, 20_000), ("1", 10_000, 40_000)], 2)),
            "backfill: 30000 of 60000 events read (50%), 1 of 2 partitions done, 15k events/s, ETA 2s"
        );
        assert_eq!(
            log_line(&snapshot(&[("0", 0, 10)], 0)),
            "backfill: 0 of 10 events read (0%), 0 of 1 partitions done, rate -, ETA -"
        );
        assert_eq!(human_duration(3725.0), "1h02m");
        assert_eq!(human_duration(61.0), "1m01s");
    }
}
