//! Checks an archive path template (`path_format`) before any file is named with it. The parsing
//! is the sink's own ([`PathFormat::parse`]), so what validation accepts is exactly what the sink
//! can render; this module only turns its problems into config messages.
//!
//! The default format is parsed here too; a test below proves that it parses.

use crate::sink::path_format::PathFormat;

pub use crate::sink::path_format::{DEFAULT_PATH_FORMAT, PATH_FORMAT_TOKENS};

/// `format` parsed, or every problem with it.
pub(super) fn parse(format: &str) -> Result<PathFormat, Vec<String>> {
    PathFormat::parse(format)
        .map_err(|error| error.problems().iter().map(ToString::to_string).collect())
}

/// Capture's default format, parsed.
pub(super) fn default() -> PathFormat {
    PathFormat::parse(DEFAULT_PATH_FORMAT).expect("the default path format parses")
}

/// Every problem with `format`, empty when it is usable.
#[cfg(test)]
fn check(format: &str) -> Vec<String> {
    parse(format).err().unwrap_or_default()
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
        assert_eq!(default().as_str(), DEFAULT_PATH_FORMAT);
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
