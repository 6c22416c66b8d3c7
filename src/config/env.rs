//! `${VAR}` / `${VAR:-default}` substitution in string values, and reading `*_file` secrets.
//!
//! A `$` not followed by `{` or `$` is kept as it is, so `consumer_group = "$Default"` needs no
//! escaping; `$$` is a literal `$` for the rare value that must contain `${`.

use std::path::Path;

/// Replaces every `${VAR}` and `${VAR:-default}` in `value`. The default applies when the
/// variable is unset or empty, as in the shell. Errors name variables, never the value, which may
/// be a secret; every unset variable is reported, not only the first.
pub(super) fn substitute(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    if !value.contains('$') {
        return Ok(value.to_owned());
    }
    let mut out = String::with_capacity(value.len());
    let mut errors = Vec::new();
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(after_escape) = after.strip_prefix('$') {
            out.push('$');
            rest = after_escape;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(close) = body_and_rest.find('}') else {
            errors
                .push("unterminated \"${\": close it with \"}\" (write $$ for a literal $)".into());
            return Err(errors);
        };
        let body = &body_and_rest[..close];
        rest = &body_and_rest[close + 1..];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if !is_variable_name(name) {
            errors.push(
                "\"${...}\" must hold a variable name (letters, digits, _) optionally followed by \
                 :-default"
                    .into(),
            );
            continue;
        }
        match (env(name).filter(|value| !value.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => errors.push(format!(
                "environment variable {name} is not set (write ${{{name}:-default}} to give a \
                 default)"
            )),
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads a secret mounted as a file (a Kubernetes secret volume, a systemd credential) and strips
/// one trailing newline, which editors and `echo` add. The error names the path, never content.
pub(super) fn read_secret_file(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|error| format!("cannot read {path:?}: {error}"))?;
    let mut text =
        String::from_utf8(bytes).map_err(|_| format!("file {path:?} is not valid UTF-8"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(format!("file {path:?} is empty"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HUB" => Some("telemetry".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_defaults_and_escapes() {
        let cases = [
            ("plain", "plain"),
            ("${HUB}", "telemetry"),
            ("a-${HUB}-b", "a-telemetry-b"),
            ("${UNSET:-fallback}", "fallback"),
            ("${EMPTY:-fallback}", "fallback"),
            ("${HUB:-fallback}", "telemetry"),
            ("${UNSET:-}", ""),
            ("$Default", "$Default"),
            ("$$", "$"),
            ("$${HUB}", "${HUB}"),
            ("cost $5", "cost $5"),
            ("trailing $", "trailing $"),
            ("${UNSET:-a:-b}", "a:-b"),
        ];
        for (input, expected) in cases {
            assert_eq!(substitute(input, &env).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn every_unset_variable_is_reported() {
        let errors = substitute("${A}/${HUB}/${B}", &env).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].contains("environment variable A is not set"));
        assert!(errors[1].contains("environment variable B is not set"));
    }

    #[test]
    fn malformed_references_never_echo_the_value() {
        let unterminated = substitute("Key=S3CRET${HUB", &env).unwrap_err();
        assert!(unterminated[0].contains("unterminated"));
        let bad_name = substitute("${S3CRET VALUE}", &env).unwrap_err();
        assert!(bad_name[0].contains("variable name"));
        for error in unterminated.iter().chain(&bad_name) {
            assert!(!error.contains("S3CRET"), "{error}");
        }
        assert!(substitute("${}", &env).is_err());
    }

    #[test]
    fn secret_files_lose_one_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            path
        };
        assert_eq!(read_secret_file(&write("a", "key\n")).unwrap(), "key");
        assert_eq!(read_secret_file(&write("b", "key\r\n")).unwrap(), "key");
        assert_eq!(read_secret_file(&write("c", "key\n\n")).unwrap(), "key\n");
        assert_eq!(read_secret_file(&write("d", "key")).unwrap(), "key");
        assert!(read_secret_file(&write("e", "\n"))
            .unwrap_err()
            .contains("is empty"));
        let missing = read_secret_file(&dir.path().join("missing")).unwrap_err();
        assert!(
            missing.contains("cannot read") && missing.contains("missing"),
            "{missing}"
        );
    }
}
