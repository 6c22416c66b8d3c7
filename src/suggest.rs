//! "Did you mean ...?" for misspelt keys, sections and values.

/// The candidate closest to `input`, if any is close enough to be what was meant. Case, `-` and
/// `_` are ignored first (`connectionString`, `connection-string`); then Jaro-Winkler similarity,
/// which favours a shared prefix (`zstandard` -> `zstd`, `sinks` -> `sink`).
pub fn did_you_mean<'a>(input: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let normalise = |text: &str| {
        text.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    let input_normalised = normalise(input);
    if let Some(exact) = candidates
        .iter()
        .find(|candidate| normalise(candidate) == input_normalised)
    {
        return Some(exact);
    }
    // Ties go to the candidate listed first, which is the more common choice.
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let normalised = normalise(candidate);
        let score = strsim::jaro_winkler(&input_normalised, &normalised);
        // Jaro-Winkler undervalues short words with a dropped letter (`lvl` -> `level`).
        let close_edit = input_normalised.len() >= 3
            && strsim::osa_distance(&input_normalised, &normalised) <= 2;
        let score = if close_edit { score.max(0.8) } else { score };
        if score >= 0.8 && best.is_none_or(|(best_score, _)| score > best_score) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_misspellings_are_suggested() {
        let codecs = ["null", "deflate", "snappy", "zstd"];
        assert_eq!(did_you_mean("zstandard", &codecs), Some("zstd"));
        assert_eq!(did_you_mean("snapy", &codecs), Some("snappy"));
        assert_eq!(did_you_mean("Deflate", &codecs), Some("deflate"));
        let sections = [
            "eventhub",
            "checkpoint_store",
            "load_balancing",
            "sink",
            "http",
            "log",
        ];
        assert_eq!(did_you_mean("sinks", &sections), Some("sink"));
        assert_eq!(did_you_mean("event_hub", &sections), Some("eventhub"));
        assert_eq!(
            did_you_mean("checkpoint-store", &sections),
            Some("checkpoint_store")
        );
        let keys = ["connection_string", "connection_string_file", "name"];
        assert_eq!(
            did_you_mean("conection_string", &keys),
            Some("connection_string")
        );
        assert_eq!(
            did_you_mean("connectionString", &keys),
            Some("connection_string")
        );
    }

    #[test]
    fn unrelated_words_get_no_suggestion() {
        let codecs = ["null", "deflate", "snappy", "zstd"];
        assert_eq!(did_you_mean("brotli", &codecs), None);
        assert_eq!(did_you_mean("x", &codecs), None);
    }
}
