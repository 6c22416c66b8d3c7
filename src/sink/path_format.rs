//! Archive file and blob names: a `path_format` template, parsed once at startup and rendered
//! once per window.
//!
//! Tokens (UTC, from the window's start; date parts zero-padded, `{Year}` to 4 digits):
//! `{Namespace} {EventHub} {PartitionId} {Year} {Month} {Day} {Hour} {Minute} {Second}` as in
//! Capture, plus `{ConsumerGroup}`, `{FirstSequenceNumber}` and `{LastSequenceNumber}` (plain
//! decimal). Everything else is literal text. The rendered name has no `.avro` extension: the
//! sinks add it.
//!
//! Names come partly from the service (hub, consumer group, partition id), so every substituted
//! value is sanitized: `/`, `\` and control characters (NUL included) become `_`, and a rendered
//! segment that would be empty, `.` or `..` becomes `_`, `_` or `__`. Whatever the values, a
//! rendered name is relative, has exactly as many segments as the template, and stays under the
//! archive root.

use std::fmt::{self, Write as _};

use crate::suggest::did_you_mean;

/// Capture's default archive name format; the sinks append `.avro`.
pub const DEFAULT_PATH_FORMAT: &str =
    "{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}";

/// The tokens a `path_format` may use, without braces, in the order error messages list them.
pub const PATH_FORMAT_TOKENS: &[&str] = &[
    "Namespace",
    "EventHub",
    "PartitionId",
    "Year",
    "Month",
    "Day",
    "Hour",
    "Minute",
    "Second",
    "ConsumerGroup",
    "FirstSequenceNumber",
    "LastSequenceNumber",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Namespace,
    EventHub,
    PartitionId,
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    ConsumerGroup,
    FirstSequenceNumber,
    LastSequenceNumber,
}

impl Token {
    /// Same order as [`PATH_FORMAT_TOKENS`] (a test keeps them in step).
    const ALL: [Token; 12] = [
        Token::Namespace,
        Token::EventHub,
        Token::PartitionId,
        Token::Year,
        Token::Month,
        Token::Day,
        Token::Hour,
        Token::Minute,
        Token::Second,
        Token::ConsumerGroup,
        Token::FirstSequenceNumber,
        Token::LastSequenceNumber,
    ];

    fn from_name(name: &str) -> Option<Token> {
        PATH_FORMAT_TOKENS
            .iter()
            .position(|known| *known == name)
            .map(|index| Token::ALL[index])
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Token(Token),
}

/// A checked `path_format`, ready to name windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathFormat {
    /// The template as configured, for logs and error messages.
    source: String,
    /// Literal text and tokens, in order.
    parts: Vec<Part>,
}

/// What a window's name is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathContext<'a> {
    /// Namespace name as Capture uses it (`mynamespace`, not the host name).
    pub namespace: &'a str,
    pub event_hub: &'a str,
    pub consumer_group: &'a str,
    pub partition_id: &'a str,
    /// Milliseconds since the Unix epoch at which the window opened: the date and time tokens.
    pub window_start_ms: i64,
    pub first_sequence_number: i64,
    pub last_sequence_number: i64,
}

/// Every problem found in a `path_format`, in the order [`PathFormat::parse`] found them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", join(problems))]
pub struct PathFormatError {
    problems: Vec<PathFormatProblem>,
}

impl PathFormatError {
    pub fn problems(&self) -> &[PathFormatProblem] {
        &self.problems
    }
}

fn join(problems: &[PathFormatProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One thing wrong with a `path_format`. Positions count characters from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathFormatProblem {
    #[error("must not be empty")]
    Empty,
    #[error("{}", unknown_token(token, *suggestion))]
    UnknownToken {
        token: String,
        suggestion: Option<&'static str>,
    },
    #[error("unbalanced braces: '{{' at character {character} is not closed")]
    UnclosedBrace { character: usize },
    #[error("unbalanced braces: '}}' at character {character} closes nothing")]
    UnopenedBrace { character: usize },
    #[error("must be relative: remove the leading '/'")]
    LeadingSlash,
    #[error("separate directories with '/', not '\\'")]
    Backslash,
    #[error("must not contain '.' or '..' segments")]
    DotSegment,
    #[error("must not contain empty segments ('//' or a trailing '/')")]
    EmptySegment,
    #[error("must contain {{PartitionId}}, or two partitions would write to the same names")]
    MissingPartitionId,
    #[error(
        "must contain {{Second}}, {{FirstSequenceNumber}} or {{LastSequenceNumber}}, or \
         consecutive windows of a partition would write to the same names"
    )]
    MissingWindowToken,
}

fn unknown_token(token: &str, suggestion: Option<&str>) -> String {
    match suggestion {
        Some(near) => format!("unknown token {{{token}}}; did you mean {{{near}}}?"),
        None => format!(
            "unknown token {{{token}}}; tokens are {}",
            PATH_FORMAT_TOKENS
                .iter()
                .map(|token| format!("{{{token}}}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

impl PathFormat {
    /// Checks `format` and reports every problem at once.
    pub fn parse(format: &str) -> Result<Self, PathFormatError> {
        if format.is_empty() {
            return Err(PathFormatError {
                problems: vec![PathFormatProblem::Empty],
            });
        }
        let mut problems = Vec::new();
        let parts = parts(format, &mut problems);
        let token_problems = problems.len();
        if format.starts_with('/') {
            problems.push(PathFormatProblem::LeadingSlash);
        }
        if format.contains('\\') {
            problems.push(PathFormatProblem::Backslash);
        }
        let segments: Vec<&str> = format.trim_start_matches('/').split('/').collect();
        if segments
            .iter()
            .any(|segment| matches!(*segment, "." | ".."))
        {
            problems.push(PathFormatProblem::DotSegment);
        }
        if segments.contains(&"") {
            problems.push(PathFormatProblem::EmptySegment);
        }
        // A misspelt or unclosed token is most likely the missing one: say it once.
        if token_problems == 0 {
            let uses = |token: Token| parts.contains(&Part::Token(token));
            if !uses(Token::PartitionId) {
                problems.push(PathFormatProblem::MissingPartitionId);
            }
            let changes_per_window = [
                Token::Second,
                Token::FirstSequenceNumber,
                Token::LastSequenceNumber,
            ]
            .into_iter()
            .any(uses);
            if !changes_per_window {
                problems.push(PathFormatProblem::MissingWindowToken);
            }
        }
        if !problems.is_empty() {
            return Err(PathFormatError { problems });
        }
        Ok(PathFormat {
            source: format.to_owned(),
            parts,
        })
    }

    /// The template as configured.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The window's relative name, without the `.avro` extension.
    pub fn render(&self, context: &PathContext<'_>) -> String {
        let time = UtcTime::from_unix_ms(context.window_start_ms);
        let mut out = String::with_capacity(self.source.len() + 32);
        for part in &self.parts {
            // Writing to a String cannot fail.
            let _ = match part {
                Part::Literal(text) => out.write_str(text),
                Part::Token(token) => match token {
                    Token::Namespace => push_sanitized(&mut out, context.namespace),
                    Token::EventHub => push_sanitized(&mut out, context.event_hub),
                    Token::ConsumerGroup => push_sanitized(&mut out, context.consumer_group),
                    Token::PartitionId => push_sanitized(&mut out, context.partition_id),
                    Token::Year => write!(out, "{:04}", time.year),
                    Token::Month => write!(out, "{:02}", time.month),
                    Token::Day => write!(out, "{:02}", time.day),
                    Token::Hour => write!(out, "{:02}", time.hour),
                    Token::Minute => write!(out, "{:02}", time.minute),
                    Token::Second => write!(out, "{:02}", time.second),
                    Token::FirstSequenceNumber => write!(out, "{}", context.first_sequence_number),
                    Token::LastSequenceNumber => write!(out, "{}", context.last_sequence_number),
                },
            };
        }
        neutralize_segments(out)
    }
}

impl fmt::Display for PathFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Literal text and known tokens in order; unknown tokens and unbalanced braces go to `problems`.
fn parts(format: &str, problems: &mut Vec<PathFormatProblem>) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    // `rest` is always a suffix of `format`, which locates a brace for the message.
    let mut rest = format;
    while let Some(brace) = rest.find(['{', '}']) {
        literal.push_str(&rest[..brace]);
        let position = format.len() - rest.len() + brace;
        let character = format[..position].chars().count() + 1;
        if rest[brace..].starts_with('}') {
            problems.push(PathFormatProblem::UnopenedBrace { character });
            rest = &rest[brace + 1..];
            continue;
        }
        let after = &rest[brace + 1..];
        match after.find(['{', '}']) {
            Some(close) if after[close..].starts_with('}') => {
                let name = &after[..close];
                match Token::from_name(name) {
                    Some(token) => {
                        if !literal.is_empty() {
                            parts.push(Part::Literal(std::mem::take(&mut literal)));
                        }
                        parts.push(Part::Token(token));
                    }
                    None => problems.push(PathFormatProblem::UnknownToken {
                        token: name.to_owned(),
                        suggestion: did_you_mean(name, PATH_FORMAT_TOKENS),
                    }),
                }
                rest = &after[close + 1..];
            }
            _ => {
                problems.push(PathFormatProblem::UnclosedBrace { character });
                rest = after;
            }
        }
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    parts
}

/// Appends `value` with path separators and control characters replaced by `_`.
fn push_sanitized(out: &mut String, value: &str) -> fmt::Result {
    out.extend(value.chars().map(|c| {
        if c == '/' || c == '\\' || c.is_control() {
            '_'
        } else {
            c
        }
    }));
    Ok(())
}

/// Replaces the segments that would not name a directory entry of their own. The template has
/// none (parse rejects them), so only substituted values can produce one.
fn neutralize_segments(rendered: String) -> String {
    let harmless = |segment: &str| !matches!(segment, "" | "." | "..");
    if rendered.split('/').all(harmless) {
        return rendered;
    }
    rendered
        .split('/')
        .map(|segment| match segment {
            "" | "." => "_",
            ".." => "__",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A UTC calendar time to the second; also used for Capture's `EnqueuedTimeUtc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UtcTime {
    pub year: i64,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
}

impl UtcTime {
    /// Any `ms` is valid: the proleptic Gregorian calendar extends both ways (Howard Hinnant's
    /// `civil_from_days`, exact for every day count an `i64` of milliseconds can hold).
    pub(crate) fn from_unix_ms(ms: i64) -> Self {
        let seconds = ms.div_euclid(1000);
        let days = seconds.div_euclid(86_400);
        let second_of_day = seconds.rem_euclid(86_400);
        let shifted = days + 719_468; // days since 0000-03-01
        let era = shifted.div_euclid(146_097);
        let day_of_era = shifted.rem_euclid(146_097);
        let year_of_era =
            (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
        let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
        let month_from_march = (5 * day_of_year + 2) / 153;
        let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
        let month = if month_from_march < 10 {
            month_from_march + 3
        } else {
            month_from_march - 9
        };
        let year = year_of_era + era * 400 + i64::from(month <= 2);
        // Every narrowing below is of a value already bounded to its field's range.
        UtcTime {
            year,
            month: month as u8,
            day: day as u8,
            hour: (second_of_day / 3600) as u8,
            minute: (second_of_day / 60 % 60) as u8,
            second: (second_of_day % 60) as u8,
        }
    }
}

/// Reading names back: which partition an archive name belongs to (`hubcap verify`).
///
/// A name is the rendered template, an optional `-N` collision suffix and the format's
/// extension (`.avro`, `.parquet`, `.jsonl`, `.jsonl.gz`, `.jsonl.zst`). Each token
/// matches what [`PathFormat::render`] writes for it: `{Year}` four digits, the other date and
/// time tokens two, the sequence-number tokens a decimal number (`-1` for an empty window),
/// and the name tokens (`{Namespace}`, `{EventHub}`, `{ConsumerGroup}`, `{PartitionId}`) any
/// non-empty text without `/`. When the template can split a name more than one way (say
/// `{EventHub}-{PartitionId}` and `my-hub-3`), the partition ids that come out must agree; if
/// they do not, the one that is a number wins (Event Hubs numbers its partitions), else the name
/// is ambiguous and has no partition.
impl PathFormat {
    /// The partition id in `relative_name` (`/`-separated, relative to the archive root, with
    /// its extension), or `None` if this format did not produce that name.
    pub fn partition_of(&self, relative_name: &str) -> Option<String> {
        let stem = super::format::strip_archive_extension(relative_name)?;
        // The sink adds `-1`, `-2`, ... to a name that was taken; a name may also end in
        // digits of its own (`{FirstSequenceNumber}` of `-1`), so both readings are tried.
        without_collision_suffix(stem)
            .into_iter()
            .chain([stem])
            .find_map(|rendered| self.partition_of_rendered(rendered))
    }

    /// Whether names of this format say their partition.
    pub fn has_partition_id(&self) -> bool {
        self.parts.contains(&Part::Token(Token::PartitionId))
    }

    fn partition_of_rendered(&self, rendered: &str) -> Option<String> {
        let mut search = Search {
            found: Vec::new(),
            steps: 0,
        };
        search.walk(&self.parts, rendered, None);
        let mut found = search.found;
        found.sort();
        found.dedup();
        if found.len() <= 1 {
            return found.pop();
        }
        let mut numeric = found
            .into_iter()
            .filter(|id| id.bytes().all(|b| b.is_ascii_digit()));
        match (numeric.next(), numeric.next()) {
            (Some(id), None) => Some(id),
            _ => None,
        }
    }
}

/// `stem` without a trailing `-N` (N from 1, no leading zero) in its last segment.
fn without_collision_suffix(stem: &str) -> Option<&str> {
    let (base, number) = stem.rsplit_once('-')?;
    let is_suffix = !number.is_empty()
        && !number.starts_with('0')
        && number.bytes().all(|b| b.is_ascii_digit());
    (is_suffix && !base.is_empty() && !base.ends_with('/')).then_some(base)
}

/// A backtracking match of a name against the template's parts, collecting the partition id
/// of every complete match.
struct Search {
    found: Vec<String>,
    /// Calls so far: a hostile name cannot make the search take long.
    steps: u32,
}

/// More than any real template and name need (a few dozen); past it the name has no match.
const MAX_SEARCH_STEPS: u32 = 10_000;

impl Search {
    fn walk(&mut self, parts: &[Part], rest: &str, partition: Option<&str>) {
        self.steps += 1;
        if self.steps > MAX_SEARCH_STEPS {
            self.found.clear();
            return;
        }
        let Some((part, later)) = parts.split_first() else {
            if rest.is_empty() {
                if let Some(id) = partition {
                    self.found.push(id.to_owned());
                }
            }
            return;
        };
        match part {
            Part::Literal(text) => {
                if let Some(after) = rest.strip_prefix(text.as_str()) {
                    self.walk(later, after, partition);
                }
            }
            Part::Token(token) => {
                // A value never crosses a `/`: every candidate is a prefix of this segment.
                let segment_end = rest.find('/').unwrap_or(rest.len());
                for end in 1..=segment_end {
                    if !rest.is_char_boundary(end) {
                        continue;
                    }
                    let (value, after) = rest.split_at(end);
                    if !token.accepts(value) {
                        continue;
                    }
                    if *token == Token::PartitionId {
                        if partition.is_some_and(|earlier| earlier != value) {
                            continue;
                        }
                        self.walk(later, after, Some(value));
                    } else {
                        self.walk(later, after, partition);
                    }
                    if self.steps > MAX_SEARCH_STEPS {
                        return;
                    }
                }
            }
        }
    }
}

impl Token {
    /// Whether `value` (one segment's worth of text, no `/`) is something
    /// [`PathFormat::render`] writes for this token.
    fn accepts(self, value: &str) -> bool {
        let digits = |text: &str| !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        match self {
            Token::Year => value.len() == 4 && digits(value),
            Token::Month | Token::Day | Token::Hour | Token::Minute | Token::Second => {
                value.len() == 2 && digits(value)
            }
            Token::FirstSequenceNumber | Token::LastSequenceNumber => {
                digits(value.strip_prefix('-').unwrap_or(value))
            }
            Token::Namespace | Token::EventHub | Token::ConsumerGroup | Token::PartitionId => {
                !value.is_empty()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>() -> PathContext<'a> {
        PathContext {
            namespace: "mynamespace",
            event_hub: "myeventhub",
            consumer_group: "$Default",
            partition_id: "0",
            // 2017-12-08T03:03:17.250Z
            window_start_ms: 1_512_702_197_250,
            first_sequence_number: 1200,
            last_sequence_number: 1299,
        }
    }

    fn problems(format: &str) -> Vec<PathFormatProblem> {
        PathFormat::parse(format).unwrap_err().problems().to_vec()
    }

    #[test]
    fn default_format_renders_like_the_capture_docs_example() {
        let format = PathFormat::parse(DEFAULT_PATH_FORMAT).unwrap();
        assert_eq!(
            format.render(&context()),
            "mynamespace/myeventhub/0/2017/12/08/03/03/17"
        );
        assert_eq!(format.to_string(), DEFAULT_PATH_FORMAT);
    }

    #[test]
    fn every_token_renders() {
        let format = PathFormat::parse(
            "{Namespace}-{EventHub}-{ConsumerGroup}-{PartitionId}/\
             {Year}{Month}{Day}T{Hour}{Minute}{Second}/{FirstSequenceNumber}_{LastSequenceNumber}",
        )
        .unwrap();
        assert_eq!(
            format.render(&context()),
            "mynamespace-myeventhub-$Default-0/20171208T030317/1200_1299"
        );
    }

    #[test]
    fn date_parts_are_zero_padded_utc() {
        let format =
            PathFormat::parse("{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}")
                .unwrap();
        let at = |ms| {
            format.render(&PathContext {
                window_start_ms: ms,
                ..context()
            })
        };
        assert_eq!(at(0), "0/1970/01/01/00/00/00");
        // 0099-01-02T03:04:05Z: the year is padded to four digits.
        assert_eq!(at(-59_042_897_755_000), "0/0099/01/02/03/04/05");
        // 2024-02-29T23:59:59.999Z, a leap day.
        assert_eq!(at(1_709_251_199_999), "0/2024/02/29/23/59/59");
    }

    #[test]
    fn hostile_values_cannot_leave_the_root() {
        let format = PathFormat::parse(DEFAULT_PATH_FORMAT).unwrap();
        let render = |event_hub, partition_id| {
            format.render(&PathContext {
                event_hub,
                partition_id,
                ..context()
            })
        };
        assert_eq!(render("..", "."), "mynamespace/__/_/2017/12/08/03/03/17");
        assert_eq!(
            render("a/b", "..\\.."),
            "mynamespace/a_b/.._../2017/12/08/03/03/17"
        );
        assert_eq!(
            render("hub\0\n\u{7f}", ""),
            "mynamespace/hub___/_/2017/12/08/03/03/17"
        );
        assert_eq!(
            render("/etc/passwd", "../../x"),
            "mynamespace/_etc_passwd/.._.._x/2017/12/08/03/03/17"
        );
        // Two values that together make a dot segment.
        let joined = PathFormat::parse("{EventHub}{PartitionId}/{Second}").unwrap();
        let rendered = joined.render(&PathContext {
            event_hub: ".",
            partition_id: ".",
            ..context()
        });
        assert_eq!(rendered, "__/17");
    }

    #[test]
    fn unknown_tokens_get_a_suggestion_or_the_list() {
        assert_eq!(
            problems("{Partition}/{Second}"),
            vec![PathFormatProblem::UnknownToken {
                token: "Partition".into(),
                suggestion: Some("PartitionId"),
            }]
        );
        assert_eq!(
            PathFormat::parse("{Partition}/{Second}")
                .unwrap_err()
                .to_string(),
            "unknown token {Partition}; did you mean {PartitionId}?"
        );
        let listed = PathFormat::parse("{PartitionId}/{Second}/{Weather}")
            .unwrap_err()
            .to_string();
        assert!(
            listed.starts_with("unknown token {Weather}; tokens are {Namespace} {EventHub}"),
            "{listed}"
        );
    }

    #[test]
    fn unbalanced_braces_are_located_by_character() {
        assert_eq!(
            problems("{PartitionId}/{Second"),
            vec![PathFormatProblem::UnclosedBrace { character: 15 }]
        );
        assert_eq!(
            problems("{PartitionId}/Second}"),
            vec![PathFormatProblem::UnopenedBrace { character: 21 }]
        );
        // Characters, not bytes.
        assert_eq!(
            problems("é/{PartitionId}/{Second"),
            vec![PathFormatProblem::UnclosedBrace { character: 17 }]
        );
    }

    #[test]
    fn structural_problems_are_named() {
        use PathFormatProblem::*;
        assert_eq!(problems(""), vec![Empty]);
        assert_eq!(problems("/{PartitionId}/{Second}"), vec![LeadingSlash]);
        assert_eq!(problems("../{PartitionId}/{Second}"), vec![DotSegment]);
        assert_eq!(problems("{PartitionId}/./{Second}"), vec![DotSegment]);
        assert_eq!(problems("{PartitionId}//{Second}"), vec![EmptySegment]);
        assert_eq!(problems("{PartitionId}/{Second}/"), vec![EmptySegment]);
        assert_eq!(problems("{PartitionId}\\{Second}"), vec![Backslash]);
        assert_eq!(problems("{EventHub}/{Second}"), vec![MissingPartitionId]);
        assert_eq!(problems("{PartitionId}/{Hour}"), vec![MissingWindowToken]);
        assert_eq!(
            PathFormat::parse("{EventHub}/{Second}")
                .unwrap_err()
                .to_string(),
            "must contain {PartitionId}, or two partitions would write to the same names"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = problems("/{Partiton}/../{Minute");
        assert_eq!(found.len(), 4, "{found:#?}");
        let message = PathFormat::parse("/{Partiton}/../{Minute}")
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "unknown token {Partiton}; did you mean {PartitionId}?; \
             must be relative: remove the leading '/'; must not contain '.' or '..' segments"
        );
    }

    #[test]
    fn literal_text_and_sequence_formats_are_accepted() {
        for format in [
            DEFAULT_PATH_FORMAT,
            "{EventHub}/{ConsumerGroup}/{PartitionId}/{FirstSequenceNumber}",
            "archive/{PartitionId}/{Year}-{Month}-{Day}T{Hour}{Minute}{Second}",
            "{PartitionId}/{LastSequenceNumber}.part",
        ] {
            assert!(PathFormat::parse(format).is_ok(), "{format}");
        }
    }

    #[test]
    fn token_names_and_variants_are_in_step() {
        for (name, token) in PATH_FORMAT_TOKENS.iter().zip(Token::ALL) {
            assert_eq!(format!("{token:?}"), *name);
        }
        assert_eq!(PATH_FORMAT_TOKENS.len(), Token::ALL.len());
    }

    #[test]
    fn utc_time_agrees_with_the_time_crate() {
        let mut ms: i64 = -62_135_596_800_000; // 0001-01-01
        while ms < 253_402_300_799_000 {
            // 9999-12-31T23:59:59
            let ours = UtcTime::from_unix_ms(ms);
            let theirs = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap();
            assert_eq!(
                (
                    ours.year,
                    ours.month,
                    ours.day,
                    ours.hour,
                    ours.minute,
                    ours.second
                ),
                (
                    i64::from(theirs.year()),
                    u8::from(theirs.month()),
                    theirs.day(),
                    theirs.hour(),
                    theirs.minute(),
                    theirs.second()
                ),
                "{ms}"
            );
            ms += 7_777_777_777; // about 90 days and a few hours: every month and hour over time
        }
        // Extremes do not panic.
        let _ = UtcTime::from_unix_ms(i64::MIN);
        let _ = UtcTime::from_unix_ms(i64::MAX);
    }

    #[test]
    fn the_partition_comes_back_from_a_default_name_with_or_without_a_suffix() {
        let format = PathFormat::parse(DEFAULT_PATH_FORMAT).unwrap();
        let name = format.render(&context()) + ".avro";
        assert_eq!(format.partition_of(&name).as_deref(), Some("0"));
        let of = |name: &str| format.partition_of(name);
        assert_eq!(
            of("ns/hub/12/2026/12/01/20/13/20-1.avro").as_deref(),
            Some("12")
        );
        assert_eq!(
            of("ns/hub/12/2026/12/01/20/13/20-17.avro").as_deref(),
            Some("12")
        );
        // Not what this format writes: wrong depth, widths, extension, a `-0` suffix.
        for other in [
            "ns/hub/12/2026/12/01/20/13/20",
            "ns/hub/12/2026/12/01/20/13/20.avro.tmp",
            "ns/hub/12/2026/12/01/20/13.avro",
            "ns/hub/12/2026/12/1/20/13/20.avro",
            "ns/hub/12/26/12/01/20/13/20.avro",
            "ns/hub/12/2026/12/01/20/13/20-0.avro",
            "ns/hub/12/2026/12/01/20/13/20-.avro",
            "x/ns/hub/12/2026/12/01/20/13/20.avro",
            "ns//12/2026/12/01/20/13/20.avro",
            "hubcap-preflight",
            "",
        ] {
            assert_eq!(of(other), None, "{other}");
        }
    }

    #[test]
    fn sequence_number_formats_read_back_including_empty_windows() {
        let format = PathFormat::parse(
            "{EventHub}/{PartitionId}/{FirstSequenceNumber}_{LastSequenceNumber}",
        )
        .unwrap();
        let name = format.render(&context()) + ".avro";
        assert_eq!(name, "myeventhub/0/1200_1299.avro");
        assert_eq!(format.partition_of(&name).as_deref(), Some("0"));
        assert_eq!(format.partition_of("h/7/-1_-1.avro").as_deref(), Some("7"));
        assert_eq!(format.partition_of("h/7/5_9-2.avro").as_deref(), Some("7"));
        assert_eq!(format.partition_of("h/7/5_x.avro"), None);
        // A format that ends in a number: `-1` is a suffix where that leaves a match.
        let first = PathFormat::parse("{PartitionId}/{FirstSequenceNumber}").unwrap();
        assert_eq!(first.partition_of("3/100-1.avro").as_deref(), Some("3"));
        assert_eq!(first.partition_of("3/-1.avro").as_deref(), Some("3"));
    }

    #[test]
    fn a_partition_inside_a_segment_is_found_and_ambiguity_prefers_a_number() {
        let format = PathFormat::parse("{EventHub}-{PartitionId}/{Second}").unwrap();
        assert_eq!(
            format.partition_of("my-hub-3/05.avro").as_deref(),
            Some("3")
        );
        assert_eq!(format.partition_of("hub-p-q/05.avro"), None, "ambiguous");
        let literal =
            PathFormat::parse("archive/p{PartitionId}/{Year}{Month}{Day}T{Second}").unwrap();
        assert_eq!(
            literal
                .partition_of("archive/p31/20261201T07.avro")
                .as_deref(),
            Some("31")
        );
        assert_eq!(literal.partition_of("archive/31/20261201T07.avro"), None);
        // Hostile values come back as the sink wrote them.
        let rendered = PathFormat::parse(DEFAULT_PATH_FORMAT)
            .unwrap()
            .render(&PathContext {
                partition_id: "../x",
                ..context()
            });
        assert_eq!(
            PathFormat::parse(DEFAULT_PATH_FORMAT)
                .unwrap()
                .partition_of(&format!("{rendered}.avro"))
                .as_deref(),
            Some(".._x")
        );
        assert!(format.has_partition_id());
    }

    #[test]
    fn a_long_hostile_name_is_refused_quickly() {
        let format = PathFormat::parse(
            "{Namespace}{EventHub}{ConsumerGroup}{PartitionId}{Namespace}{EventHub}/{Second}",
        )
        .unwrap();
        let name = format!("{}/05.avro", "a".repeat(4000));
        let started = std::time::Instant::now();
        let _ = format.partition_of(&name);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
