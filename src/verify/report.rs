//! The report of `hubcap verify`: built from the scanned objects and the checkpoints, printed as
//! a table or as one JSON document (whose shape other tools parse: change it only by adding).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::ranges::{sweep, Run};
use super::source::Listing;
use crate::checkpoint::Checkpoint;

/// Everything `hubcap verify` found. Serializes as the `--json` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// No problem at all.
    pub ok: bool,
    /// The directory or container URL (never a secret).
    pub archive: String,
    /// Archive files or blobs found (unreadable ones and those of no partition included).
    pub files: u64,
    /// Events read.
    pub events: u64,
    /// Sorted numerically when the ids are numbers.
    pub partitions: Vec<PartitionReport>,
    pub unreadable: Vec<Unreadable>,
    /// One line per problem; empty when `ok`.
    pub problems: Vec<String>,
    /// Whether checkpoints were compared (`--config`), not with `--dir`.
    #[serde(skip)]
    pub checkpoints_checked: bool,
    /// Files left alone because they are not archives.
    #[serde(skip)]
    pub ignored: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReport {
    pub partition_id: String,
    pub files: u64,
    pub events: u64,
    pub first_sequence_number: Option<i64>,
    pub last_sequence_number: Option<i64>,
    /// Covered ranges, inclusive, merged.
    pub ranges: Vec<[i64; 2]>,
    /// Missing ranges between the first and the last archived number, inclusive.
    pub gaps: Vec<[i64; 2]>,
    /// Extra copies in all.
    pub duplicate_events: u64,
    pub duplicates: Vec<DuplicateReport>,
    /// The partition's checkpoint, if the store has one (always `None` with `--dir`).
    pub checkpoint: Option<CheckpointReport>,
    /// The checkpoint is past the last archived event (or nothing is archived).
    pub checkpoint_ahead: bool,
    /// What is wrong with the file the checkpoint names (`hubcapcommitted`): missing from the
    /// archive, or not ending at the checkpoint's event. `None` when it is right, or unnamed
    /// (an SDK processor's checkpoint, `--dir`).
    pub checkpoint_file_problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateReport {
    pub first: i64,
    pub last: i64,
    /// How many times each of these numbers is archived.
    pub copies: u64,
    /// The files holding them, by name.
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    pub sequence_number: Option<i64>,
    pub offset: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unreadable {
    pub file: String,
    pub error: String,
}

/// One partition's files, while the report is built.
#[derive(Default)]
struct Files {
    /// Names of the partition's files, in name order.
    names: Vec<String>,
    runs: Vec<Run>,
    events: u64,
}

/// Builds the report. `checkpoints` is `None` when the store was not read (`--dir`).
pub fn build(
    archive: String,
    path_format: &str,
    listing: Listing,
    checkpoints: Option<Vec<Checkpoint>>,
) -> Report {
    let mut report = Report {
        ok: true,
        archive,
        files: listing.scanned.len() as u64,
        events: 0,
        partitions: Vec::new(),
        unreadable: Vec::new(),
        problems: Vec::new(),
        checkpoints_checked: checkpoints.is_some(),
        ignored: listing.ignored,
    };
    let mut file_problems = Vec::new();
    let mut by_partition: BTreeMap<String, Files> = BTreeMap::new();
    for scanned in listing.scanned {
        let Some(partition_id) = scanned.partition_id else {
            file_problems.push(format!(
                "{}: the name does not match path_format {path_format:?}: its partition is \
                 unknown, the file was not read",
                scanned.name
            ));
            continue;
        };
        let partition = by_partition.entry(partition_id.clone()).or_default();
        let tally = &scanned.tally;
        report.events += tally.events();
        partition.events += tally.events();
        let file = partition.names.len();
        partition.runs.extend(
            tally
                .runs()
                .iter()
                .map(|&(first, last)| Run { first, last, file }),
        );
        if let Some(disorder) = tally.disorder() {
            let more = match tally.disorders() {
                1 => String::new(),
                n => format!(" ({n} events out of order in all)"),
            };
            file_problems.push(format!(
                "partition {partition_id}: {}: sequence number {} follows {} at event {}: not \
                 strictly increasing{more}",
                scanned.name, disorder.next, disorder.previous, disorder.index
            ));
        }
        if let Some(index) = tally.fragmented_at() {
            file_problems.push(format!(
                "partition {partition_id}: {}: more than {} separate sequence ranges; numbers \
                 from event {index} on were counted, not checked",
                scanned.name,
                super::ranges::MAX_RUNS_PER_FILE
            ));
        }
        if let Some(mismatch) = &scanned.metadata_mismatch {
            file_problems.push(format!(
                "partition {partition_id}: {}: {mismatch}",
                scanned.name
            ));
        }
        if let Some(error) = scanned.unreadable {
            file_problems.push(format!("unreadable {}: {error}", scanned.name));
            report.unreadable.push(Unreadable {
                file: scanned.name.clone(),
                error,
            });
        }
        partition.names.push(scanned.name);
    }
    let checkpoints: BTreeMap<String, Checkpoint> = checkpoints
        .unwrap_or_default()
        .into_iter()
        .map(|checkpoint| (checkpoint.partition_id.clone(), checkpoint))
        .collect();
    let mut ids: Vec<String> = by_partition
        .keys()
        .chain(checkpoints.keys())
        .cloned()
        .collect();
    ids.sort_by(|a, b| partition_order(a).cmp(&partition_order(b)));
    ids.dedup();
    for id in ids {
        let files = by_partition.remove(&id).unwrap_or_default();
        let partition = partition_report(&id, files, checkpoints.get(&id));
        partition_problems(&partition, &mut report.problems);
        report.partitions.push(partition);
    }
    report.problems.extend(file_problems);
    report.ok = report.problems.is_empty();
    report
}

/// Numbers first, in numeric order, then other ids in text order.
fn partition_order(id: &str) -> (bool, u128, &str) {
    match id.parse::<u128>() {
        Ok(number) if id.bytes().all(|b| b.is_ascii_digit()) => (false, number, id),
        _ => (true, 0, id),
    }
}

fn partition_report(id: &str, files: Files, checkpoint: Option<&Checkpoint>) -> PartitionReport {
    let coverage = sweep(&files.runs);
    let first = coverage.ranges.first().map(|range| range.0);
    let last = coverage.ranges.last().map(|range| range.1);
    let checkpoint_ahead = checkpoint
        .and_then(|checkpoint| checkpoint.sequence_number)
        .is_some_and(|at| last.is_none_or(|last| at > last));
    let checkpoint_file_problem = checkpoint
        .and_then(|checkpoint| {
            Some((
                checkpoint.committed_in.as_ref()?,
                checkpoint.sequence_number?,
            ))
        })
        .and_then(|(name, at)| {
            let Some(index) = files.names.iter().position(|n| n == name) else {
                return Some(format!(
                    "names {name}, which is not among the partition's files"
                ));
            };
            let file_last = files
                .runs
                .iter()
                .filter(|r| r.file == index)
                .map(|r| r.last)
                .max();
            (file_last != Some(at)).then(|| match file_last {
                Some(file_last) => format!("names {name}, which ends at {file_last}, not {at}"),
                None => format!("names {name}, which holds no event"),
            })
        });
    PartitionReport {
        partition_id: id.to_owned(),
        files: files.names.len() as u64,
        events: files.events,
        first_sequence_number: first,
        last_sequence_number: last,
        ranges: coverage.ranges.iter().map(|&(a, b)| [a, b]).collect(),
        gaps: coverage.gaps.iter().map(|&(a, b)| [a, b]).collect(),
        duplicate_events: coverage.duplicate_events,
        duplicates: coverage
            .duplicates
            .into_iter()
            .map(|duplicate| DuplicateReport {
                first: duplicate.first,
                last: duplicate.last,
                copies: duplicate.copies,
                files: duplicate
                    .files
                    .iter()
                    .map(|&file| files.names[file].clone())
                    .collect(),
            })
            .collect(),
        checkpoint: checkpoint.map(|checkpoint| CheckpointReport {
            sequence_number: checkpoint.sequence_number,
            offset: checkpoint.offset.clone(),
        }),
        checkpoint_ahead,
        checkpoint_file_problem,
    }
}

fn partition_problems(partition: &PartitionReport, problems: &mut Vec<String>) {
    let id = &partition.partition_id;
    for [first, last] in &partition.gaps {
        problems.push(format!("partition {id}: gap {first}..={last}"));
    }
    for duplicate in &partition.duplicates {
        problems.push(format!(
            "partition {id}: duplicates {}..={} ({} copies, in {})",
            duplicate.first,
            duplicate.last,
            duplicate.copies,
            duplicate.files.join(", ")
        ));
    }
    if let Some(problem) = &partition.checkpoint_file_problem {
        problems.push(format!("partition {id}: the checkpoint {problem}"));
    }
    if partition.checkpoint_ahead {
        let at = partition
            .checkpoint
            .as_ref()
            .and_then(|checkpoint| checkpoint.sequence_number)
            .unwrap_or_default();
        problems.push(match partition.last_sequence_number {
            Some(last) => format!(
                "partition {id}: checkpoint ahead of data: checkpoint at sequence number {at}, \
                 last archived {last}"
            ),
            None => format!(
                "partition {id}: checkpoint ahead of data: checkpoint at sequence number {at}, \
                 nothing archived"
            ),
        });
    }
}

impl Report {
    /// The `--json` document, one line.
    pub fn to_json(&self) -> String {
        // Plain data with string keys: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The table, a summary line and one line per problem.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "archive: {}", self.archive);
        let header = [
            "partition",
            "files",
            "events",
            "sequence numbers",
            "duplicates",
            "checkpoint",
        ];
        let mut rows: Vec<[String; 6]> = vec![header.map(str::to_owned)];
        for partition in &self.partitions {
            let ranges = if partition.ranges.is_empty() {
                "-".to_owned()
            } else {
                partition
                    .ranges
                    .iter()
                    .map(|[a, b]| format!("{a}..={b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let checkpoint = match (&partition.checkpoint, self.checkpoints_checked) {
                (_, false) => "not checked".to_owned(),
                (None, true) => "none".to_owned(),
                (Some(checkpoint), true) => {
                    let at = match (checkpoint.sequence_number, &checkpoint.offset) {
                        (Some(n), _) => n.to_string(),
                        (None, Some(offset)) => format!("offset {offset}"),
                        (None, None) => "empty".to_owned(),
                    };
                    if partition.checkpoint_ahead {
                        format!("{at} AHEAD")
                    } else {
                        at
                    }
                }
            };
            rows.push([
                partition.partition_id.clone(),
                partition.files.to_string(),
                partition.events.to_string(),
                ranges,
                partition.duplicate_events.to_string(),
                checkpoint,
            ]);
        }
        let mut widths = [0usize; 6];
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &rows {
            let mut line = String::new();
            for (column, (cell, width)) in row.iter().zip(widths).enumerate() {
                // Counts right-aligned, text left-aligned.
                let _ = match column {
                    1 | 2 | 4 => write!(line, "{cell:>width$}  "),
                    _ => write!(line, "{cell:<width$}  "),
                };
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        let verdict = if self.ok {
            "ok".to_owned()
        } else {
            format!("{} problem(s)", self.problems.len())
        };
        let ignored = match self.ignored {
            0 => String::new(),
            n => format!(" ({n} other files ignored)"),
        };
        let _ = writeln!(
            out,
            "{} partition(s), {} file(s){ignored}, {} event(s): {verdict}",
            self.partitions.len(),
            self.files,
            self.events
        );
        for problem in &self.problems {
            let _ = writeln!(out, "problem: {problem}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::ranges::FileTally;
    use crate::verify::source::Scanned;

    fn scanned(name: &str, partition: Option<&str>, numbers: std::ops::Range<i64>) -> Scanned {
        let mut tally = FileTally::default();
        for n in numbers {
            tally.add(n);
        }
        Scanned {
            name: name.to_owned(),
            partition_id: partition.map(str::to_owned),
            tally,
            unreadable: None,
            metadata_mismatch: None,
        }
    }

    fn checkpoint(partition: &str, sequence_number: i64) -> Checkpoint {
        Checkpoint {
            partition_id: partition.to_owned(),
            offset: Some((sequence_number * 10).to_string()),
            sequence_number: Some(sequence_number),
            committed_in: None,
        }
    }

    #[test]
    fn a_checkpoint_naming_a_missing_file_or_one_ending_elsewhere_is_a_problem() {
        let listing = Listing {
            scanned: vec![
                scanned("0/a.avro", Some("0"), 0..10),
                scanned("0/b.avro", Some("0"), 10..20),
                scanned("1/a.avro", Some("1"), 0..10),
                scanned("2/a.avro", Some("2"), 0..10),
            ],
            ignored: 0,
        };
        let named = |partition: &str, at: i64, name: &str| Checkpoint {
            committed_in: Some(name.to_owned()),
            ..checkpoint(partition, at)
        };
        let report = build(
            "/archive".into(),
            "{PartitionId}/{Second}",
            listing,
            Some(vec![
                named("0", 19, "0/b.avro"),
                named("1", 9, "1/gone.avro"),
                named("2", 9, "0/a.avro"),
            ]),
        );
        assert_eq!(
            report.problems,
            [
                "partition 1: the checkpoint names 1/gone.avro, which is not among the partition's files",
                "partition 2: the checkpoint names 0/a.avro, which is not among the partition's files",
            ]
        );
        let named_elsewhere = build(
            "/archive".into(),
            "{PartitionId}/{Second}",
            Listing {
                scanned: vec![
                    scanned("0/a.avro", Some("0"), 0..10),
                    scanned("0/b.avro", Some("0"), 10..20),
                ],
                ignored: 0,
            },
            Some(vec![named("0", 19, "0/a.avro")]),
        );
        assert_eq!(
            named_elsewhere.problems,
            ["partition 0: the checkpoint names 0/a.avro, which ends at 9, not 19"]
        );
        assert!(report.partitions[0].checkpoint_file_problem.is_none());
    }

    #[test]
    fn partitions_sort_numerically_and_problems_are_named() {
        let listing = Listing {
            scanned: vec![
                scanned("10/a.avro", Some("10"), 0..5),
                scanned("2/a.avro", Some("2"), 0..5),
                scanned("2/b.avro", Some("2"), 8..10),
                scanned("2/c.avro", Some("2"), 8..10),
                scanned("x.avro", None, 0..0),
            ],
            ignored: 1,
        };
        let report = build(
            "/archive".into(),
            "{PartitionId}/{Second}",
            listing,
            Some(vec![
                checkpoint("2", 9),
                checkpoint("10", 7),
                checkpoint("7", 0),
            ]),
        );
        let ids: Vec<&str> = report
            .partitions
            .iter()
            .map(|p| p.partition_id.as_str())
            .collect();
        assert_eq!(ids, ["2", "7", "10"]);
        assert!(!report.ok);
        assert_eq!((report.files, report.events), (5, 14));
        assert_eq!(
            report.problems,
            [
                "partition 2: gap 5..=7",
                "partition 2: duplicates 8..=9 (2 copies, in 2/b.avro, 2/c.avro)",
                "partition 7: checkpoint ahead of data: checkpoint at sequence number 0, nothing archived",
                "partition 10: checkpoint ahead of data: checkpoint at sequence number 7, last archived 4",
                "x.avro: the name does not match path_format \"{PartitionId}/{Second}\": its partition is unknown, the file was not read",
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(
            json["partitions"][0]["ranges"],
            serde_json::json!([[0, 4], [8, 9]])
        );
        assert_eq!(json["partitions"][0]["duplicate_events"], 2);
        assert_eq!(json["partitions"][0]["checkpoint"]["offset"], "90");
        assert_eq!(
            json["partitions"][1]["first_sequence_number"],
            serde_json::Value::Null
        );
        let text = report.to_text();
        assert!(text.contains("7 AHEAD"), "{text}");
        assert!(text.contains("(1 other files ignored)"), "{text}");
    }

    #[test]
    fn a_clean_archive_without_checkpoints_is_ok() {
        let listing = Listing {
            scanned: vec![scanned("0/a.avro", Some("0"), 0..100)],
            ignored: 0,
        };
        let report = build("/archive".into(), "f", listing, None);
        assert!(report.ok, "{:?}", report.problems);
        let text = report.to_json();
        assert!(text.starts_with("{\"ok\":true,\"archive\":\"/archive\",\"files\":1,"));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "archive",
                "events",
                "files",
                "ok",
                "partitions",
                "problems",
                "unreadable"
            ]
        );
        assert!(json["partitions"][0]["checkpoint"].is_null());
        assert_eq!(json["partitions"][0]["checkpoint_ahead"], false);
        assert!(report.to_text().contains("not checked"));
    }
}
