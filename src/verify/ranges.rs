//! The sequence-number bookkeeping of `hubcap verify`, pure: a small record per file built while
//! its events stream past ([`FileTally`]), and one sweep per partition over those records
//! ([`sweep`]) that finds what the archive covers, the gaps inside it and the numbers archived
//! more than once, with the files that hold them. No event is ever kept.

/// A file holding more separate runs than this is not a window of one partition (a window's
/// sequence numbers are consecutive, or have a gap or two where a re-read or expired events
/// jumped): its later numbers are counted but not placed, and the file is reported.
pub const MAX_RUNS_PER_FILE: usize = 1024;

/// One file's sequence numbers, built event by event: the runs of consecutive numbers (one for
/// a file hubcap wrote), the event count, and where the numbers first failed to increase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileTally {
    /// Consecutive runs `(first, last)`, in file order.
    runs: Vec<(i64, i64)>,
    /// Events read.
    events: u64,
    /// The first number of the file, and the last one read.
    first: Option<i64>,
    last: Option<i64>,
    /// The first place where a number was not greater than the one before.
    disorder: Option<Disorder>,
    /// How many events were not greater than the one before.
    disorders: u64,
    /// Set once the file had more than [`MAX_RUNS_PER_FILE`] runs: the event index from which
    /// numbers were no longer placed.
    fragmented_at: Option<u64>,
}

/// Where a file's sequence numbers stopped increasing strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disorder {
    /// Index of the event in the file, from 0.
    pub index: u64,
    /// The number before it.
    pub previous: i64,
    /// Its number, not greater than `previous`.
    pub next: i64,
}

impl FileTally {
    /// Counts the next event of the file.
    pub fn add(&mut self, sequence_number: i64) {
        let index = self.events;
        self.events += 1;
        self.first.get_or_insert(sequence_number);
        let previous = self.last.replace(sequence_number);
        if let Some(previous) = previous {
            if sequence_number <= previous {
                self.disorders += 1;
                self.disorder.get_or_insert(Disorder {
                    index,
                    previous,
                    next: sequence_number,
                });
            }
        }
        if self.fragmented_at.is_some() {
            return;
        }
        let follows = previous.is_some_and(|p| p.checked_add(1) == Some(sequence_number));
        let full = self.runs.len() == MAX_RUNS_PER_FILE;
        match self.runs.last_mut() {
            Some(run) if follows => run.1 = sequence_number,
            _ if full => self.fragmented_at = Some(index),
            _ => self.runs.push((sequence_number, sequence_number)),
        }
    }

    pub fn runs(&self) -> &[(i64, i64)] {
        &self.runs
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// The file's first number, as stored first.
    pub fn first(&self) -> Option<i64> {
        self.first
    }

    /// The file's last number, as stored last.
    pub fn last(&self) -> Option<i64> {
        self.last
    }

    pub fn disorder(&self) -> Option<Disorder> {
        self.disorder
    }

    pub fn disorders(&self) -> u64 {
        self.disorders
    }

    pub fn fragmented_at(&self) -> Option<u64> {
        self.fragmented_at
    }
}

/// One run of one file, as the sweep takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub first: i64,
    pub last: i64,
    /// The file's index in the caller's list.
    pub file: usize,
}

/// Numbers archived more than once: `first..=last`, each `copies` times, in `files` (indices,
/// ascending; a file that repeats numbers itself appears once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub first: i64,
    pub last: i64,
    pub copies: u64,
    pub files: Vec<usize>,
}

/// What one partition's runs cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Covered ranges, merged, ascending.
    pub ranges: Vec<(i64, i64)>,
    /// Numbers missing between the first and the last covered one, ascending.
    pub gaps: Vec<(i64, i64)>,
    /// Ranges covered more than once, ascending.
    pub duplicates: Vec<Duplicate>,
    /// Extra copies in all: an event archived three times counts two.
    pub duplicate_events: u64,
}

/// Sweeps the runs of one partition's files: sorts their boundaries and walks them once,
/// keeping only the files open at the current point. Time O(r log r), memory O(r) for r runs.
pub fn sweep(runs: &[Run]) -> Coverage {
    // Boundaries in i128: `last + 1` of i64::MAX must not overflow.
    let mut points: Vec<(i128, bool, usize)> = Vec::with_capacity(runs.len() * 2);
    for run in runs {
        let (first, last) = (run.first.min(run.last), run.first.max(run.last));
        points.push((i128::from(first), true, run.file));
        points.push((i128::from(last) + 1, false, run.file));
    }
    points.sort_unstable();
    let mut coverage = Coverage::default();
    // Open runs per file: (file, count), sorted by file.
    let mut open: Vec<(usize, u64)> = Vec::new();
    let mut depth = 0u64;
    let mut index = 0;
    while index < points.len() {
        let here = points[index].0;
        while index < points.len() && points[index].0 == here {
            let (_, starts, file) = points[index];
            let slot = open.binary_search_by_key(&file, |(f, _)| *f);
            if starts {
                depth += 1;
                match slot {
                    Ok(at) => open[at].1 += 1,
                    Err(at) => open.insert(at, (file, 1)),
                }
            } else if let Ok(at) = slot {
                depth -= 1;
                open[at].1 -= 1;
                if open[at].1 == 0 {
                    open.remove(at);
                }
            }
            index += 1;
        }
        let Some(&(next, _, _)) = points.get(index) else {
            break;
        };
        // [here, next) has `depth` copies; both ends are inside the runs' i64 range.
        let (first, last) = (narrow(here), narrow(next - 1));
        if depth == 0 {
            coverage.gaps.push((first, last));
            continue;
        }
        match coverage.ranges.last_mut() {
            Some(range) if i128::from(range.1) + 1 == here => range.1 = last,
            _ => coverage.ranges.push((first, last)),
        }
        if depth >= 2 {
            let extra = (next - here).saturating_mul(i128::from(depth - 1));
            coverage.duplicate_events = coverage
                .duplicate_events
                .saturating_add(u64::try_from(extra).unwrap_or(u64::MAX));
            let files: Vec<usize> = open.iter().map(|(file, _)| *file).collect();
            match coverage.duplicates.last_mut() {
                Some(previous)
                    if i128::from(previous.last) + 1 == here
                        && previous.copies == depth
                        && previous.files == files =>
                {
                    previous.last = last;
                }
                _ => coverage.duplicates.push(Duplicate {
                    first,
                    last,
                    copies: depth,
                    files,
                }),
            }
        }
    }
    coverage
}

/// Sorts runs `(first, last)` and merges those that overlap or touch: the numbers they cover,
/// as few disjoint runs as possible, in order.
pub fn merge_runs(mut runs: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    runs.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::with_capacity(runs.len());
    for (first, last) in runs {
        match merged.last_mut() {
            Some(run) if first <= run.1.saturating_add(1) => run.1 = run.1.max(last),
            _ => merged.push((first, last)),
        }
    }
    merged
}

fn narrow(value: i128) -> i64 {
    i64::try_from(value).unwrap_or(if value < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: i64, last: i64, file: usize) -> Run {
        Run { first, last, file }
    }

    fn tally(numbers: &[i64]) -> FileTally {
        let mut tally = FileTally::default();
        for n in numbers {
            tally.add(*n);
        }
        tally
    }

    #[test]
    fn consecutive_files_cover_one_range_with_no_gap_or_duplicate() {
        let coverage = sweep(&[run(100, 199, 1), run(0, 99, 0), run(200, 200, 2)]);
        assert_eq!(coverage.ranges, vec![(0, 200)]);
        assert!(coverage.gaps.is_empty());
        assert!(coverage.duplicates.is_empty());
        assert_eq!(coverage.duplicate_events, 0);
        assert_eq!(sweep(&[]), Coverage::default());
    }

    #[test]
    fn a_missing_file_is_a_gap_between_its_neighbours() {
        let coverage = sweep(&[run(0, 99, 0), run(141, 199, 2), run(300, 300, 3)]);
        assert_eq!(coverage.ranges, vec![(0, 99), (141, 199), (300, 300)]);
        assert_eq!(coverage.gaps, vec![(100, 140), (200, 299)]);
        assert!(coverage.duplicates.is_empty());
    }

    #[test]
    fn an_overlap_names_both_files_and_counts_the_extra_copies() {
        let coverage = sweep(&[run(0, 99, 0), run(90, 149, 1)]);
        assert_eq!(coverage.ranges, vec![(0, 149)]);
        assert_eq!(
            coverage.duplicates,
            vec![Duplicate {
                first: 90,
                last: 99,
                copies: 2,
                files: vec![0, 1],
            }]
        );
        assert_eq!(coverage.duplicate_events, 10);
    }

    #[test]
    fn a_copied_file_duplicates_its_whole_range() {
        let coverage = sweep(&[run(0, 49, 0), run(50, 99, 1), run(50, 99, 2)]);
        assert_eq!(coverage.ranges, vec![(0, 99)]);
        assert_eq!(
            coverage.duplicates,
            vec![Duplicate {
                first: 50,
                last: 99,
                copies: 2,
                files: vec![1, 2],
            }]
        );
        assert_eq!(coverage.duplicate_events, 50);
    }

    #[test]
    fn nested_ranges_split_by_how_many_copies_and_which_files() {
        // File 0 holds 0..=99, file 1 holds 20..=79, file 2 holds 40..=59.
        let coverage = sweep(&[run(0, 99, 0), run(20, 79, 1), run(40, 59, 2)]);
        assert_eq!(coverage.ranges, vec![(0, 99)]);
        let summary: Vec<(i64, i64, u64, Vec<usize>)> = coverage
            .duplicates
            .iter()
            .map(|d| (d.first, d.last, d.copies, d.files.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (20, 39, 2, vec![0, 1]),
                (40, 59, 3, vec![0, 1, 2]),
                (60, 79, 2, vec![0, 1]),
            ]
        );
        assert_eq!(coverage.duplicate_events, 20 + 2 * 20 + 20);
    }

    #[test]
    fn single_events_and_the_extremes_of_the_range() {
        let coverage = sweep(&[run(5, 5, 0), run(7, 7, 1), run(7, 7, 2), run(6, 6, 3)]);
        assert_eq!(coverage.ranges, vec![(5, 7)]);
        assert_eq!(coverage.duplicates.len(), 1);
        assert_eq!(
            (coverage.duplicates[0].first, coverage.duplicates[0].last),
            (7, 7)
        );
        assert_eq!(coverage.duplicate_events, 1);
        let extremes = sweep(&[
            run(i64::MAX, i64::MAX, 0),
            run(i64::MAX - 2, i64::MAX - 2, 1),
        ]);
        assert_eq!(extremes.gaps, vec![(i64::MAX - 1, i64::MAX - 1)]);
        let negative = sweep(&[run(-3, -1, 0), run(1, 2, 1)]);
        assert_eq!(negative.gaps, vec![(0, 0)]);
    }

    #[test]
    fn adjacent_duplicate_pieces_with_the_same_files_merge() {
        // Two files that both hold 0..=9 and 10..=19 as separate runs.
        let coverage = sweep(&[run(0, 9, 0), run(10, 19, 0), run(0, 19, 1)]);
        assert_eq!(coverage.duplicates.len(), 1);
        assert_eq!(
            (coverage.duplicates[0].first, coverage.duplicates[0].last),
            (0, 19)
        );
    }

    #[test]
    fn a_tally_keeps_runs_not_events_and_notes_where_order_breaks() {
        let straight = tally(&[10, 11, 12, 13]);
        assert_eq!(straight.runs(), &[(10, 13)]);
        assert_eq!((straight.events(), straight.disorder()), (4, None));
        let gapped = tally(&[1, 2, 5, 6]);
        assert_eq!(gapped.runs(), &[(1, 2), (5, 6)]);
        assert_eq!(gapped.disorders(), 0);
        let repeated = tally(&[1, 2, 3, 2, 3, 4]);
        assert_eq!(repeated.runs(), &[(1, 3), (2, 4)]);
        assert_eq!(
            repeated.disorder(),
            Some(Disorder {
                index: 3,
                previous: 3,
                next: 2
            })
        );
        assert_eq!((repeated.first(), repeated.last()), (Some(1), Some(4)));
        // Within one file, a repeated number is a duplicate of that file alone.
        let runs: Vec<Run> = repeated
            .runs()
            .iter()
            .map(|(first, last)| run(*first, *last, 0))
            .collect();
        let coverage = sweep(&runs);
        assert_eq!(coverage.ranges, vec![(1, 4)]);
        assert_eq!(coverage.duplicates[0].files, vec![0]);
        assert_eq!(coverage.duplicate_events, 2);
    }

    #[test]
    fn a_scattered_file_stops_growing_its_record() {
        let scattered: Vec<i64> = (0..(MAX_RUNS_PER_FILE as i64 + 10))
            .map(|n| n * 2)
            .collect();
        let tally = tally(&scattered);
        assert_eq!(tally.runs().len(), MAX_RUNS_PER_FILE);
        assert_eq!(tally.fragmented_at(), Some(MAX_RUNS_PER_FILE as u64));
        assert_eq!(tally.events(), scattered.len() as u64);
    }

    #[test]
    fn merged_runs_cover_the_same_numbers_in_as_few_runs_as_possible() {
        assert_eq!(merge_runs(vec![]), vec![]);
        assert_eq!(
            merge_runs(vec![
                (20, 29),
                (0, 9),
                (10, 14),
                (12, 13),
                (40, 40),
                (30, 31)
            ]),
            vec![(0, 14), (20, 31), (40, 40)]
        );
        assert_eq!(merge_runs(vec![(5, 9), (0, 100)]), vec![(0, 100)]);
    }
}
