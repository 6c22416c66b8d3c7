//! `hubcap status`'s two renderings of a [`Report`]: a table for a terminal (ages as `12s ago`,
//! absolute times in RFC 3339) and a JSON document for scripts, whose keys are the
//! [`Report`] fields' names and stay as they are.

use std::fmt::Write as _;

use super::report::{OwnerTotal, OwnershipState, Report};
use crate::ops::human_duration;

/// The report as one JSON document (`pretty` indents it; otherwise one line).
pub fn render_json(report: &Report, pretty: bool) -> String {
    let rendered = if pretty {
        serde_json::to_string_pretty(report)
    } else {
        serde_json::to_string(report)
    };
    // Plain data with string keys: serialization cannot fail.
    rendered.unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

fn ago(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), |s| format!("{} ago", human_duration(s)))
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The report as a table: a heading, one row per partition, the totals, and a legend for any
/// estimate.
pub fn render_table(report: &Report) -> String {
    const HEADERS: [&str; 12] = [
        "PARTITION",
        "OWNER",
        "OWNERSHIP",
        "RENEWED",
        "CHECKPOINT",
        "OFFSET",
        "WRITTEN",
        "LAST SEQ",
        "LAST ENQUEUED",
        "LAG",
        "LAG TIME",
        "WARNING",
    ];
    /// Columns of numbers, aligned right.
    const NUMERIC: [usize; 4] = [4, 7, 9, 10];
    let rows: Vec<[String; 12]> = report
        .partitions
        .iter()
        .map(|p| {
            let checkpoint = p.checkpoint.as_ref();
            [
                p.partition_id.clone(),
                or_dash(p.owner_id.as_deref()),
                match p.ownership {
                    OwnershipState::Active => "active",
                    OwnershipState::Expired => "EXPIRED",
                    OwnershipState::Released => "released",
                    OwnershipState::Unowned => "unowned",
                }
                .to_owned(),
                ago(p.ownership_age_seconds),
                or_dash(checkpoint.and_then(|c| c.sequence_number)),
                or_dash(checkpoint.and_then(|c| c.offset.as_deref())),
                ago(checkpoint.and_then(|c| c.age_seconds)),
                or_dash(p.last_enqueued_sequence_number),
                or_dash(p.last_enqueued_time.as_deref()),
                or_dash(p.lag_events),
                p.lag_seconds.map_or_else(
                    || "-".to_owned(),
                    |s| {
                        let mark = if p.lag_seconds_estimated { "~" } else { "" };
                        format!("{mark}{}", human_duration(s))
                    },
                ),
                p.warnings
                    .iter()
                    .map(|w| w.message.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (index, cell) in cells.iter().enumerate() {
            let width = widths[index];
            let last = index + 1 == cells.len();
            if NUMERIC.contains(&index) {
                let _ = write!(text, "{cell:>width$}");
            } else if last {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}");
            }
            if !last {
                text.push_str("  ");
            }
        }
        text.trim_end().to_owned()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "event hub {} | consumer group {} | namespace {} | {} store {} | {} | ownership expires after {}",
        report.event_hub,
        report.consumer_group,
        report.namespace,
        report.checkpoint_store.store_type,
        report.checkpoint_store.location,
        report.generated_at,
        human_duration(report.ownership_expiration_seconds),
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", line(&HEADERS.map(str::to_owned)));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{}", owners_line(&report.owners));
    let totals = &report.totals;
    let _ = writeln!(
        out,
        "partitions: {} ({} active, {} expired, {} released, {} unowned); lag {} events; {} with warnings",
        totals.partitions,
        totals.active,
        totals.expired,
        totals.released,
        totals.unowned,
        totals.lag_events,
        totals.partitions_with_warnings,
    );
    if report.partitions.iter().any(|p| p.lag_seconds_estimated) {
        let _ = writeln!(
            out,
            "~ estimated: a running consumer keeps others from reading the oldest unread event, \
             so its age is taken from the earlier of the checkpoint's write and the last enqueue"
        );
    }
    out
}

/// `owners: 3 (a 2, b 2, c 1 + 1 expired)`.
fn owners_line(owners: &[OwnerTotal]) -> String {
    if owners.is_empty() {
        return "owners: none".to_owned();
    }
    let each: Vec<String> = owners
        .iter()
        .map(|owner| match (owner.active, owner.expired) {
            (active, 0) => format!("{} {active}", owner.owner_id),
            (0, expired) => format!("{} {expired} expired", owner.owner_id),
            (active, expired) => format!("{} {active} + {expired} expired", owner.owner_id),
        })
        .collect();
    format!("owners: {} ({})", owners.len(), each.join(", "))
}
