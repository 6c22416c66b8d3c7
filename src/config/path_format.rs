//! Checks an archive path template (`path_format`) before any file is named with it.

use super::suggest::did_you_mean;

/// Capture's default archive name format; the sink appends `.avro`.
pub const DEFAULT_PATH_FORMAT: &str =
    "{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}";

/// The tokens a `path_format` may use, without braces.
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

/// Every problem with `format`, empty when it is usable.
pub(super) fn check(format: &str) -> Vec<String> {
    if format.is_empty() {
        return vec!["must not be empty".into()];
    }
    let mut problems = Vec::new();
    let tokens = tokens(format, &mut problems);
    let token_problems = problems.len();
    if format.starts_with('/') {
        problems.push("must be relative: remove the leading '/'".into());
    }
    if format.contains('\\') {
        problems.push("separate directories with '/', not '\\'".into());
    }
    let segments: Vec<&str> = format.trim_start_matches('/').split('/').collect();
    if segments.contains(&"..") || segments.contains(&".") {
        problems.push("must not contain '.' or '..' segments".into());
    }
    if segments.contains(&"") {
        problems.push("must not contain empty segments ('//' or a trailing '/')".into());
    }
    if token_problems > 0 {
        // A misspelt or unclosed token is most likely the missing one: say it once.
        return problems;
    }
    if !tokens.contains(&"PartitionId") {
        problems.push(
            "must contain {PartitionId}, or two partitions would write to the same names".into(),
        );
    }
    let changes_per_window = ["Second", "FirstSequenceNumber", "LastSequenceNumber"]
        .iter()
        .any(|token| tokens.contains(token));
    if !changes_per_window {
        problems.push(
            "must contain {Second}, {FirstSequenceNumber} or {LastSequenceNumber}, or \
             consecutive windows of a partition would write to the same names"
                .into(),
        );
    }
    problems
}

/// The known tokens used, in order; unknown tokens and unbalanced braces go to `problems`.
fn tokens<'a>(format: &'a str, problems: &mut Vec<String>) -> Vec<&'a str> {
    let mut found = Vec::new();
    // `rest` is always a suffix of `format`, which locates a brace for the message.
    let mut rest = format;
    while let Some(brace) = rest.find(['{', '}']) {
        let position = format.len() - rest.len() + brace;
        let character = format[..position].chars().count() + 1;
        if rest[brace..].starts_with('}') {
            problems.push(format!(
                "unbalanced braces: '}}' at character {character} closes nothing"
            ));
            rest = &rest[brace + 1..];
            continue;
        }
        let after = &rest[brace + 1..];
        match after.find(['{', '}']) {
            Some(close) if after[close..].starts_with('}') => {
                let token = &after[..close];
                if PATH_FORMAT_TOKENS.contains(&token) {
                    found.push(token);
                } else {
                    let message = match did_you_mean(token, PATH_FORMAT_TOKENS) {
                        Some(near) => {
                            format!("unknown token {{{token}}}; did you mean {{{near}}}?")
                        }
                        None => format!(
                            "unknown token {{{token}}}; tokens are {}",
                            PATH_FORMAT_TOKENS
                                .iter()
                                .map(|token| format!("{{{token}}}"))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                    };
                    problems.push(message);
                }
                rest = &after[close + 1..];
            }
            _ => {
                problems.push(format!(
                    "unbalanced braces: '{{' at character {character} is not closed"
                ));
                rest = after;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(format: &str) -> String {
        check(format).join("\n")
    }

    #[test]
    fn default_and_sequence_formats_are_accepted() {
        assert_eq!(check(DEFAULT_PATH_FORMAT), Vec::<String>::new());
        let with_sequence = "{EventHub}/{ConsumerGroup}/{PartitionId}/{FirstSequenceNumber}";
        assert_eq!(check(with_sequence), Vec::<String>::new());
        let literal_text = "archive/{PartitionId}/{Year}-{Month}-{Day}T{Hour}{Minute}{Second}";
        assert_eq!(check(literal_text), Vec::<String>::new());
    }

    #[test]
    fn unknown_tokens_get_a_suggestion() {
        let found = problems("{Partition}/{Second}");
        assert!(
            found.contains("unknown token {Partition}; did you mean {PartitionId}?"),
            "{found}"
        );
        let found = problems("{PartitionId}/{Second}/{Weather}");
        assert!(
            found.contains("unknown token {Weather}; tokens are {Namespace}"),
            "{found}"
        );
    }

    #[test]
    fn unbalanced_braces_are_located() {
        let found = problems("{PartitionId}/{Second");
        assert!(
            found.contains("'{' at character 15 is not closed"),
            "{found}"
        );
        let found = problems("{PartitionId}/Second}");
        assert!(
            found.contains("'}' at character 21 closes nothing"),
            "{found}"
        );
        let found = problems("{Partition{Id}/{Second}");
        assert!(
            found.contains("'{' at character 1 is not closed"),
            "{found}"
        );
    }

    #[test]
    fn structure_is_checked() {
        assert!(problems("/{PartitionId}/{Second}").contains("leading '/'"));
        assert!(problems("../{PartitionId}/{Second}").contains("'..' segments"));
        assert!(problems("{PartitionId}//{Second}").contains("empty segments"));
        assert!(problems("{PartitionId}/{Second}/").contains("empty segments"));
        assert!(problems("{PartitionId}\\{Second}").contains("not '\\'"));
        assert!(problems("{EventHub}/{Second}").contains("must contain {PartitionId}"));
        assert!(problems("{PartitionId}/{Hour}").contains("consecutive windows"));
        assert_eq!(check(""), vec!["must not be empty".to_owned()]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let found = check("/{Partiton}/../{Minute");
        assert_eq!(found.len(), 4, "{found:#?}");
    }
}
