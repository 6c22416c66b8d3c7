//! Durations ("200ms", "10s", "1h30m") and byte sizes (4096, "4KiB", "10MB") as written in the
//! config, and their canonical spelling for messages.

use std::time::Duration;

/// Binary size units, for defaults and ranges.
pub(super) const KIB: u64 = 1 << 10;
pub(super) const MIB: u64 = 1 << 20;
pub(super) const GIB: u64 = 1 << 30;

const DURATION_UNITS: &str = "ms, s, m, h or d";
const SIZE_UNITS: &str = "B, KB, MB, GB, TB, KiB, MiB, GiB or TiB";

/// Parses a duration: one or more `<integer><unit>` parts, units `ms`, `s`, `m`, `h`, `d`,
/// optionally separated by spaces (`"1h30m"`, `"1h 30m"`). The error says what is wrong, without
/// repeating the input (the caller quotes it).
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            "empty duration (write a number and a unit: {DURATION_UNITS})"
        ));
    }
    if text.starts_with('-') {
        return Err("negative durations are not allowed".to_owned());
    }
    let mut total = Duration::ZERO;
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(format!(
                "expected a number followed by a unit ({DURATION_UNITS})"
            ));
        }
        let number: u64 = rest[..digits_end]
            .parse()
            .map_err(|_| "number too large".to_owned())?;
        rest = rest[digits_end..].trim_start();
        if rest.starts_with('.') {
            return Err("fractions are not supported (write 1500ms for 1.5s)".to_owned());
        }
        let unit_end = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        let part = match unit {
            "ms" => Some(Duration::from_millis(number)),
            "s" => Some(Duration::from_secs(number)),
            "m" => number.checked_mul(60).map(Duration::from_secs),
            "h" => number.checked_mul(3600).map(Duration::from_secs),
            "d" => number.checked_mul(86_400).map(Duration::from_secs),
            "" if number == 0 => Some(Duration::ZERO),
            "" => return Err(format!("missing unit after {number} ({DURATION_UNITS})")),
            other => {
                return Err(format!("unknown unit \"{other}\" (use {DURATION_UNITS})"));
            }
        };
        total = part
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| "duration too large".to_owned())?;
        rest = rest[unit_end..].trim_start();
    }
    Ok(total)
}

/// The shortest canonical spelling: `1h30m`, `200ms`, `0s`.
pub(super) fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    let mut secs = millis / 1000;
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    if millis % 1000 != 0 {
        out.push_str(&format!("{}ms", millis % 1000));
    }
    out
}

/// Parses a size in bytes from a string: `"4096"`, `"4KiB"`, `"10MB"`, `"1 GiB"`. Units are
/// case-insensitive; `KB`/`MB`/`GB`/`TB` are decimal, `KiB`/`MiB`/`GiB`/`TiB` binary.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err("negative sizes are not allowed".to_owned());
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err(format!(
            "expected a number of bytes, optionally followed by a unit ({SIZE_UNITS})"
        ));
    }
    let number: u64 = text[..digits_end]
        .parse()
        .map_err(|_| "number too large".to_owned())?;
    let unit = text[digits_end..].trim();
    if unit.starts_with('.') {
        return Err("fractions are not supported (write 1536KiB for 1.5MiB)".to_owned());
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000_u64.pow(2),
        "gb" => 1000_u64.pow(3),
        "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("unknown unit \"{unit}\" (use {SIZE_UNITS})")),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| "size too large".to_owned())
}

/// A size as a reader would write it: `300MiB` when exact in binary units, else bytes.
pub(super) fn format_size(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1_u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_every_unit_and_combined() {
        let cases = [
            ("200ms", Duration::from_millis(200)),
            ("10s", Duration::from_secs(10)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1h30m", Duration::from_secs(5400)),
            ("1h 30m 15s", Duration::from_secs(5415)),
            ("1s500ms", Duration::from_millis(1500)),
            (" 0 ", Duration::ZERO),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_durations_say_why() {
        let cases = [
            ("-5s", "negative"),
            ("", "empty duration"),
            ("abc", "expected a number"),
            ("10", "missing unit after 10"),
            ("10 minutes", "unknown unit \"minutes\""),
            ("1.5s", "fractions are not supported"),
            ("5s-", "expected a number"),
            ("99999999999999999999s", "too large"),
            ("999999999999999d", "too large"),
        ];
        for (text, expected) in cases {
            let error = parse_duration(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn durations_format_canonically() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn sizes_decimal_binary_and_plain() {
        let cases = [
            ("4096", 4096),
            ("512B", 512),
            ("4KiB", 4096),
            ("300MiB", 300 << 20),
            ("1GiB", 1 << 30),
            ("10MB", 10_000_000),
            ("1 kb", 1000),
            ("2tib", 2 << 40),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_why() {
        let cases = [
            ("-1MiB", "negative"),
            ("MiB", "expected a number"),
            ("10M", "unknown unit \"M\""),
            ("1.5GiB", "fractions"),
            ("99999999TiB", "too large"),
        ];
        for (text, expected) in cases {
            let error = parse_size(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn sizes_format_in_the_largest_exact_binary_unit() {
        assert_eq!(format_size(300 << 20), "300MiB");
        assert_eq!(format_size(1024), "1KiB");
        assert_eq!(format_size(10 << 30), "10GiB");
        assert_eq!(format_size(1500), "1500B");
    }
}
