//! The archive name template: `PathFormat::parse` on any text and, where it parses,
//! `render` with any context, and `partition_of` (how `hubcap verify` reads names back).
//!
//! Besides never panicking, what the module promises: a rendered name is relative, has as
//! many segments as the template, and no segment is empty, `.` or `..`, whatever the values;
//! and a name rendered from plain values reads back as its own partition (or as none, when
//! the template cannot tell), never as another one.
#![no_main]

use arbitrary::Arbitrary;
use hubcap::sink::path_format::{PathContext, PathFormat};
use libfuzzer_sys::fuzz_target;

/// 0000-01-01T00:00:00Z up to 10000-01-01T00:00:00Z, in ms since the epoch: the window
/// starts whose `{Year}` has four digits.
const FOUR_DIGIT_YEARS_MS: std::ops::Range<i64> = -62_167_219_200_000..253_402_300_800_000;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    template: &'a str,
    namespace: &'a str,
    event_hub: &'a str,
    consumer_group: &'a str,
    partition_id: &'a str,
    window_start_ms: i64,
    first_sequence_number: i64,
    last_sequence_number: i64,
    /// Any file name found under an archive root.
    found_name: &'a str,
}

/// A value `render` writes unchanged and `partition_of` can match: no character the renderer
/// sanitizes, no `-` (a collision suffix reads the same), not a segment it neutralizes.
fn plain(value: &str) -> bool {
    !value.is_empty()
        && !matches!(value, "." | "..")
        && !value
            .chars()
            .any(|c| matches!(c, '/' | '\\' | '-') || c.is_control())
}

fuzz_target!(|input: Input| {
    let Ok(format) = PathFormat::parse(input.template) else {
        return;
    };
    assert_eq!(format.as_str(), input.template);
    let _ = format.partition_of(input.found_name);

    let context = PathContext {
        namespace: input.namespace,
        event_hub: input.event_hub,
        consumer_group: input.consumer_group,
        partition_id: input.partition_id,
        window_start_ms: input.window_start_ms,
        first_sequence_number: input.first_sequence_number,
        last_sequence_number: input.last_sequence_number,
    };
    let rendered = format.render(&context);
    assert!(!rendered.starts_with('/'), "absolute: {rendered:?}");
    assert!(!rendered.contains('\\'), "backslash: {rendered:?}");
    let segments: Vec<&str> = rendered.split('/').collect();
    assert_eq!(
        segments.len(),
        input.template.split('/').count(),
        "segments of {rendered:?}"
    );
    assert!(
        segments.iter().all(|s| !matches!(*s, "" | "." | "..")),
        "a segment escapes: {rendered:?}"
    );

    // Reading back: only when every value rendered as given (4-digit years, plain names,
    // a numeric partition id, which wins over other readings) and nothing can pass for a
    // collision suffix.
    let names = [input.namespace, input.event_hub, input.consumer_group];
    let readable = names.iter().all(|name| plain(name))
        && !input.partition_id.is_empty()
        && input.partition_id.bytes().all(|b| b.is_ascii_digit())
        && FOUR_DIGIT_YEARS_MS.contains(&input.window_start_ms)
        && !segments.last().is_some_and(|last| last.contains('-'));
    if readable {
        let read = format.partition_of(&format!("{rendered}.avro"));
        assert!(
            read.is_none() || read.as_deref() == Some(input.partition_id),
            "{rendered:?} read as partition {read:?}, rendered for {:?}",
            input.partition_id
        );
    }
});
