//! Parsing of the `apache.org:selector-filter:string` expression a receiver sends to say where
//! in a partition it wants to start.
//!
//! The SDKs agree on the grammar `<annotation> <op> <value>` but not on its spelling: Python
//! writes `x > '5'`, Rust `x >'5'`, current .NET `x > 5` without quotes. The parser therefore
//! ignores whitespace around every token and treats the quotes as optional.

const OFFSET_OPERAND: &str = "amqp.annotation.x-opt-offset";
const SEQUENCE_NUMBER_OPERAND: &str = "amqp.annotation.x-opt-sequence-number";
const ENQUEUED_TIME_OPERAND: &str = "amqp.annotation.x-opt-enqueued-time";

/// Offset the SDKs send for "the start of the stream".
const EARLIEST_OFFSET: &str = "-1";
/// Offset the SDKs send for "only events enqueued after the receiver attaches".
const LATEST_OFFSET: &str = "@latest";

/// Why a selector expression was refused; each variant names the text at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("empty selector expression")]
    Empty,
    #[error("selector expression '{expression}' has no '>' or '>=' operator")]
    MissingOperator { expression: String },
    #[error("unknown selector operand '{operand}'")]
    UnknownOperand { operand: String },
    #[error("invalid value '{value}' for selector operand '{operand}'")]
    InvalidValue { operand: String, value: String },
}

/// Where a receiver starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The oldest retained event.
    Earliest,
    /// The first event enqueued after the receiver attached.
    Latest,
    /// After (or at, if `inclusive`) the event stored at this byte offset.
    Offset { offset: u64, inclusive: bool },
    /// After (or at, if `inclusive`) this sequence number; `-1` exclusive means from 0.
    SequenceNumber {
        sequence_number: i64,
        inclusive: bool,
    },
    /// After (or at, if `inclusive`) this enqueue time, in milliseconds since the Unix epoch.
    EnqueuedTime {
        enqueued_time_ms: i64,
        inclusive: bool,
    },
}

#[derive(Clone, Copy)]
enum Operand {
    Offset,
    SequenceNumber,
    EnqueuedTime,
}

/// Parses a selector expression such as `amqp.annotation.x-opt-offset > '-1'`.
pub fn parse_selector(expression: &str) -> Result<StartPosition, FilterError> {
    let trimmed = expression.trim();
    if trimmed.is_empty() {
        return Err(FilterError::Empty);
    }
    // `>` is ASCII, so slicing at its byte index is safe whatever else the text contains.
    let (left, right) = trimmed
        .split_once('>')
        .ok_or_else(|| FilterError::MissingOperator {
            expression: trimmed.to_string(),
        })?;
    let operand_text = left.trim();
    let operand = parse_operand(operand_text).ok_or_else(|| FilterError::UnknownOperand {
        operand: operand_text.to_string(),
    })?;
    let (inclusive, right) = match right.strip_prefix('=') {
        Some(rest) => (true, rest),
        None => (false, right),
    };
    let raw_value = right.trim();
    let value = unquote(raw_value);
    let invalid = || FilterError::InvalidValue {
        operand: operand_text.to_string(),
        value: value.unwrap_or(raw_value).to_string(),
    };
    let value = value.ok_or_else(invalid)?;
    match operand {
        Operand::Offset if value == EARLIEST_OFFSET => Ok(StartPosition::Earliest),
        Operand::Offset if value.eq_ignore_ascii_case(LATEST_OFFSET) => Ok(StartPosition::Latest),
        // The emulator issues plain decimal offsets, so anything else cannot name an event.
        Operand::Offset => parse_digits(value)
            .map(|offset| StartPosition::Offset { offset, inclusive })
            .ok_or_else(invalid),
        Operand::SequenceNumber => value
            .parse()
            .map(|sequence_number| StartPosition::SequenceNumber {
                sequence_number,
                inclusive,
            })
            .map_err(|_| invalid()),
        Operand::EnqueuedTime => value
            .parse()
            .map(|enqueued_time_ms| StartPosition::EnqueuedTime {
                enqueued_time_ms,
                inclusive,
            })
            .map_err(|_| invalid()),
    }
}

fn parse_operand(text: &str) -> Option<Operand> {
    [
        (OFFSET_OPERAND, Operand::Offset),
        (SEQUENCE_NUMBER_OPERAND, Operand::SequenceNumber),
        (ENQUEUED_TIME_OPERAND, Operand::EnqueuedTime),
    ]
    .into_iter()
    .find(|(name, _)| text.eq_ignore_ascii_case(name))
    .map(|(_, operand)| operand)
}

/// Strips optional single quotes; `None` for a lone quote or an empty value.
fn unquote(value: &str) -> Option<&str> {
    let inner = match value.strip_prefix('\'') {
        Some(rest) => rest.strip_suffix('\'')?.trim(),
        None if value.ends_with('\'') => return None,
        None => value,
    };
    (!inner.is_empty()).then_some(inner)
}

/// Decimal digits only: `u64::from_str` would also take a leading `+`, which no SDK sends.
fn parse_digits(value: &str) -> Option<u64> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse().ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(offset: u64, inclusive: bool) -> StartPosition {
        StartPosition::Offset { offset, inclusive }
    }

    fn sequence_number(sequence_number: i64, inclusive: bool) -> StartPosition {
        StartPosition::SequenceNumber {
            sequence_number,
            inclusive,
        }
    }

    fn enqueued_time(enqueued_time_ms: i64, inclusive: bool) -> StartPosition {
        StartPosition::EnqueuedTime {
            enqueued_time_ms,
            inclusive,
        }
    }

    fn assert_parses(cases: &[(&str, StartPosition)]) {
        for (expression, expected) in cases {
            assert_eq!(parse_selector(expression), Ok(*expected), "{expression:?}");
        }
    }

    #[test]
    fn python_style_quoted_with_spaces() {
        assert_parses(&[
            (
                "amqp.annotation.x-opt-offset > '-1'",
                StartPosition::Earliest,
            ),
            (
                "amqp.annotation.x-opt-offset > '@latest'",
                StartPosition::Latest,
            ),
            ("amqp.annotation.x-opt-offset > '1024'", offset(1024, false)),
            ("amqp.annotation.x-opt-offset >= '1024'", offset(1024, true)),
            (
                "amqp.annotation.x-opt-sequence-number > '41'",
                sequence_number(41, false),
            ),
            (
                "amqp.annotation.x-opt-sequence-number >= '42'",
                sequence_number(42, true),
            ),
            (
                "amqp.annotation.x-opt-enqueued-time > '1700000000000'",
                enqueued_time(1_700_000_000_000, false),
            ),
            (
                "amqp.annotation.x-opt-enqueued-time >= '1700000000000'",
                enqueued_time(1_700_000_000_000, true),
            ),
        ]);
    }

    #[test]
    fn rust_style_without_space_before_the_quote() {
        assert_parses(&[
            (
                "amqp.annotation.x-opt-offset >'-1'",
                StartPosition::Earliest,
            ),
            (
                "amqp.annotation.x-opt-offset >'@latest'",
                StartPosition::Latest,
            ),
            ("amqp.annotation.x-opt-offset >='0'", offset(0, true)),
            (
                "amqp.annotation.x-opt-sequence-number >'7'",
                sequence_number(7, false),
            ),
            (
                "amqp.annotation.x-opt-enqueued-time >='1'",
                enqueued_time(1, true),
            ),
        ]);
    }

    #[test]
    fn dotnet_style_unquoted() {
        assert_parses(&[
            ("amqp.annotation.x-opt-offset > -1", StartPosition::Earliest),
            (
                "amqp.annotation.x-opt-offset > @latest",
                StartPosition::Latest,
            ),
            ("amqp.annotation.x-opt-offset >= 12345", offset(12345, true)),
            (
                "amqp.annotation.x-opt-sequence-number > -1",
                sequence_number(-1, false),
            ),
            (
                "amqp.annotation.x-opt-sequence-number >= 9223372036854775807",
                sequence_number(i64::MAX, true),
            ),
            (
                "amqp.annotation.x-opt-enqueued-time > 1700000000123",
                enqueued_time(1_700_000_000_123, false),
            ),
        ]);
    }

    #[test]
    fn special_offsets_ignore_the_operator() {
        assert_parses(&[
            (
                "amqp.annotation.x-opt-offset >= '-1'",
                StartPosition::Earliest,
            ),
            (
                "amqp.annotation.x-opt-offset >= '@latest'",
                StartPosition::Latest,
            ),
            (
                "amqp.annotation.x-opt-offset > '@LATEST'",
                StartPosition::Latest,
            ),
        ]);
    }

    #[test]
    fn whitespace_and_operand_case_do_not_matter() {
        assert_parses(&[
            ("amqp.annotation.x-opt-offset>'5'", offset(5, false)),
            ("amqp.annotation.x-opt-offset>=5", offset(5, true)),
            (
                "  amqp.annotation.x-opt-offset \t >   ' 5 '  ",
                offset(5, false),
            ),
            ("\namqp.annotation.x-opt-offset\n>=\n'5'\n", offset(5, true)),
            ("AMQP.ANNOTATION.X-OPT-OFFSET > '5'", offset(5, false)),
            (
                "Amqp.Annotation.X-Opt-Sequence-Number >= '3'",
                sequence_number(3, true),
            ),
            (
                "amqp.annotation.X-OPT-ENQUEUED-TIME > 0",
                enqueued_time(0, false),
            ),
        ]);
    }

    #[test]
    fn empty_expressions_are_reported_as_empty() {
        for expression in ["", "   ", "\t\n"] {
            assert_eq!(parse_selector(expression), Err(FilterError::Empty));
        }
    }

    #[test]
    fn expressions_without_greater_than_lack_an_operator() {
        for expression in [
            "1=1",
            "amqp.annotation.x-opt-offset",
            "''",
            "amqp.annotation.x-opt-offset = '5'",
            "amqp.annotation.x-opt-offset < '5'",
        ] {
            assert_eq!(
                parse_selector(expression),
                Err(FilterError::MissingOperator {
                    expression: expression.to_string()
                }),
            );
        }
    }

    #[test]
    fn unknown_operands_are_named() {
        let err = parse_selector("amqp.annotation.x-opt-partition-key > 'a'").unwrap_err();
        assert_eq!(
            err,
            FilterError::UnknownOperand {
                operand: "amqp.annotation.x-opt-partition-key".into()
            }
        );
        let err = parse_selector("> '5'").unwrap_err();
        assert_eq!(
            err,
            FilterError::UnknownOperand {
                operand: String::new()
            }
        );
    }

    #[test]
    fn invalid_values_are_named() {
        let err = parse_selector("amqp.annotation.x-opt-offset > 'abc'").unwrap_err();
        assert_eq!(
            err,
            FilterError::InvalidValue {
                operand: "amqp.annotation.x-opt-offset".into(),
                value: "abc".into()
            }
        );
        for expression in [
            "amqp.annotation.x-opt-offset >",
            "amqp.annotation.x-opt-offset > ''",
            "amqp.annotation.x-opt-offset > '5",
            "amqp.annotation.x-opt-offset > 5'",
            "amqp.annotation.x-opt-offset > '-2'",
            "amqp.annotation.x-opt-offset > '+5'",
            "amqp.annotation.x-opt-offset > '1 2'",
            "amqp.annotation.x-opt-offset >> '5'",
            "amqp.annotation.x-opt-offset > '18446744073709551616'",
            "amqp.annotation.x-opt-offset > \"5\"",
            "amqp.annotation.x-opt-sequence-number > 'latest'",
            "amqp.annotation.x-opt-sequence-number > '9223372036854775808'",
            "amqp.annotation.x-opt-sequence-number > '1.5'",
            "amqp.annotation.x-opt-enqueued-time > '2024-01-01T00:00:00Z'",
        ] {
            let result = parse_selector(expression);
            assert!(
                matches!(result, Err(FilterError::InvalidValue { .. })),
                "{expression:?} gave {result:?}"
            );
        }
    }

    #[test]
    fn garbage_never_panics() {
        let long = "x".repeat(100_000);
        let inputs = [
            long.clone(),
            format!("amqp.annotation.x-opt-offset > '{}'", "9".repeat(10_000)),
            format!("{long} >= {long}"),
            ">".into(),
            ">=".into(),
            "'>'".into(),
            "amqp.annotation.x-opt-offset > 'é'".into(),
            "ünïcödé > '5'".into(),
            "amqp.annotation.x-opt-offset > '５'".into(),
            "amqp.annotation.x-opt-offset > '\u{0}'".into(),
            "'".into(),
        ];
        for input in inputs {
            assert!(parse_selector(&input).is_err(), "{input:.80?}");
        }
    }

    #[test]
    fn error_messages_name_the_offending_text() {
        let err = parse_selector("amqp.annotation.x-opt-offset > 'abc'").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value 'abc' for selector operand 'amqp.annotation.x-opt-offset'"
        );
        assert!(parse_selector("1=1")
            .unwrap_err()
            .to_string()
            .contains("'1=1'"));
    }
}
