//! Walks the TOML document by hand instead of through serde, so that one pass can report every
//! problem with its line: unknown keys (with a did-you-mean), wrong types, out-of-range values and
//! keys that belong to another `type`.

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use toml_edit::{Item, TableLike, Value};

use super::env::{read_secret_file, substitute};
use super::units::{format_duration, format_size, parse_duration, parse_size};
use super::ConfigError;
use crate::secret::Secret;
use crate::suggest::did_you_mean;

/// What a reading pass carries: the source (for line numbers), the environment, and every
/// problem found so far.
pub(super) struct Ctx<'a> {
    text: &'a str,
    env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) errors: Vec<ConfigError>,
    /// Every `${VAR}` the environment answered, with its value: kept out of every message
    /// (see [`Ctx::into_errors`]).
    from_env: Vec<(String, String)>,
}

/// One key of a section, with where it was written.
#[derive(Clone)]
pub(super) struct Entry<'d> {
    /// Full dotted key, `eventhub.credential.type`, as errors name it.
    pub key: String,
    /// Line of the key (1-based), when the document says.
    pub line: Option<usize>,
    /// The value, table or array written there.
    pub item: &'d Item,
}

/// The outcome of reading an optional key that may also be invalid.
pub(super) enum Lookup<T> {
    Absent,
    /// Present but unusable; the error is already recorded.
    Invalid,
    Present(T),
}

impl<'a> Ctx<'a> {
    pub(super) fn new(text: &'a str, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            text,
            env,
            errors: Vec::new(),
            from_env: Vec::new(),
        }
    }

    /// The first of `names` set (non-empty) in the environment `${VAR}` reads, and its value:
    /// for the variables hubcap reads itself (`HTTPS_PROXY`, `NO_PROXY`). The value is kept out
    /// of messages like any other the environment supplied.
    pub(super) fn env_var(&mut self, names: &[&'static str]) -> Option<(&'static str, String)> {
        let (name, value) = names.iter().find_map(|name| {
            (self.env)(name)
                .filter(|value| !value.trim().is_empty())
                .map(|value| (*name, value))
        })?;
        self.from_env.push((name.to_owned(), value.clone()));
        Some((name, value))
    }

    /// The problems found, with anything the environment supplied taken out of them.
    pub(super) fn into_errors(self) -> Vec<ConfigError> {
        let from_env = self.from_env;
        self.errors
            .into_iter()
            .map(|error| ConfigError {
                message: redact_environment(error.message, &from_env),
                ..error
            })
            .collect()
    }

    /// 1-based line of a byte offset in the source.
    pub(super) fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count()
            + 1
    }

    pub(super) fn error(&mut self, key: &str, line: Option<usize>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            line,
            key: key.to_owned(),
            message: redact_credentials(message.into()),
        });
    }

    /// `value` when `check` passed; else the problem is recorded against `entry`.
    pub(super) fn checked<T>(
        &mut self,
        entry: &Entry,
        value: T,
        check: Result<(), String>,
    ) -> Option<T> {
        match check {
            Ok(()) => Some(value),
            Err(problem) => {
                self.error(&entry.key, entry.line, problem);
                None
            }
        }
    }

    /// A string value after `${VAR}` substitution. `secret` keeps the value out of the error.
    fn string_value(&mut self, entry: &Entry, secret: bool) -> Option<String> {
        let Some(raw) = entry.item.as_str() else {
            let found = describe(entry.item, secret);
            self.error(
                &entry.key,
                entry.line,
                format!("expected a string, found {found}"),
            );
            return None;
        };
        self.substituted(entry, raw)
    }

    fn substituted(&mut self, entry: &Entry, raw: &str) -> Option<String> {
        let env = self.env;
        let answered = std::cell::RefCell::new(Vec::new());
        let recording = |name: &str| {
            let value = env(name);
            if let Some(value) = &value {
                answered.borrow_mut().push((name.to_owned(), value.clone()));
            }
            value
        };
        let substituted = substitute(raw, &recording);
        self.from_env.extend(answered.into_inner());
        match substituted {
            Ok(value) => Some(value),
            Err(messages) => {
                for message in messages {
                    self.error(&entry.key, entry.line, message);
                }
                None
            }
        }
    }

    pub(super) fn string(&mut self, entry: &Entry) -> Option<String> {
        self.string_value(entry, false)
    }

    /// A non-empty string that names something (a hub, a container, a tenant).
    pub(super) fn name(&mut self, entry: &Entry) -> Option<String> {
        let value = self.string(entry)?;
        if value.trim().is_empty() {
            self.error(&entry.key, entry.line, "must not be empty");
            return None;
        }
        Some(value)
    }

    pub(super) fn secret(&mut self, entry: &Entry) -> Option<Secret> {
        let value = self.string_value(entry, true)?;
        if value.is_empty() {
            self.error(&entry.key, entry.line, "must not be empty");
            return None;
        }
        Some(Secret::new(value))
    }

    pub(super) fn path(&mut self, entry: &Entry) -> Option<PathBuf> {
        self.name(entry).map(PathBuf::from)
    }

    /// An integer; a string is accepted only when it came from `${VAR}` substitution, so
    /// `prefetch = "${PREFETCH:-300}"` works while `prefetch = "300"` is flagged.
    pub(super) fn integer(&mut self, entry: &Entry, range: RangeInclusive<i64>) -> Option<i64> {
        let expected = if *range.end() == i64::MAX {
            format!("expected an integer of at least {}", range.start())
        } else {
            format!(
                "expected an integer from {} to {}",
                range.start(),
                range.end()
            )
        };
        let (value, found) = match entry.item.as_value() {
            Some(Value::Integer(value)) => (Some(*value.value()), value.value().to_string()),
            Some(Value::String(raw)) => {
                let raw = raw.value();
                let value = self.substituted(entry, raw)?;
                let parsed = value.trim().parse::<i64>().ok();
                match parsed {
                    Some(_) if raw.contains("${") => (parsed, value),
                    Some(_) => (None, format!("{value:?} (write it without quotes)")),
                    None => (None, format!("{value:?}")),
                }
            }
            _ => (None, describe(entry.item, false)),
        };
        match value {
            Some(value) if range.contains(&value) => Some(value),
            _ => {
                self.error(&entry.key, entry.line, format!("{expected}, found {found}"));
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, entry: &Entry) -> Option<bool> {
        let found = match entry.item.as_value() {
            Some(Value::Boolean(value)) => return Some(*value.value()),
            Some(Value::String(raw)) if raw.value().contains("${") => {
                let value = self.substituted(entry, raw.value())?;
                match value.trim() {
                    "true" => return Some(true),
                    "false" => return Some(false),
                    _ => format!("{value:?}"),
                }
            }
            _ => describe(entry.item, false),
        };
        let message = format!("expected true or false, found {found}");
        self.error(&entry.key, entry.line, message);
        None
    }

    pub(super) fn duration(
        &mut self,
        entry: &Entry,
        range: RangeInclusive<Duration>,
    ) -> Option<Duration> {
        let Some(raw) = entry.item.as_str() else {
            let found = describe(entry.item, false);
            let unit_hint = if entry.item.is_integer() {
                " (a number needs a unit: ms, s, m, h or d)"
            } else {
                ""
            };
            let message = format!("expected a duration such as \"30s\", found {found}{unit_hint}");
            self.error(&entry.key, entry.line, message);
            return None;
        };
        let value = self.substituted(entry, raw)?;
        let message = match parse_duration(&value) {
            Ok(duration) if range.contains(&duration) => return Some(duration),
            Ok(_) => format!(
                "expected a duration from {} to {}, found {value:?}",
                format_duration(*range.start()),
                format_duration(*range.end())
            ),
            Err(reason) => format!("invalid duration {value:?}: {reason}"),
        };
        self.error(&entry.key, entry.line, message);
        None
    }

    /// A size in bytes: an integer, or a string with a unit (`"300MiB"`, `"10MB"`).
    pub(super) fn size(&mut self, entry: &Entry, range: RangeInclusive<u64>) -> Option<u64> {
        let (parsed, found) = match entry.item.as_value() {
            Some(Value::Integer(value)) => {
                let value = *value.value();
                let parsed =
                    u64::try_from(value).map_err(|_| "negative sizes are not allowed".to_owned());
                (parsed, value.to_string())
            }
            Some(Value::String(raw)) => {
                let value = self.substituted(entry, raw.value())?;
                (parse_size(&value), format!("{value:?}"))
            }
            _ => {
                let found = describe(entry.item, false);
                let message = format!("expected a size such as \"300MiB\", found {found}");
                self.error(&entry.key, entry.line, message);
                return None;
            }
        };
        let message = match parsed {
            Ok(bytes) if range.contains(&bytes) => return Some(bytes),
            Ok(_) => format!(
                "expected a size from {} to {}, found {found}",
                format_size(*range.start()),
                format_size(*range.end())
            ),
            Err(reason) => format!("invalid size {found}: {reason}"),
        };
        self.error(&entry.key, entry.line, message);
        None
    }

    /// One of a fixed set of words; `what` names the set in the error (`unknown codec "x"`).
    pub(super) fn choice<T: Copy>(
        &mut self,
        entry: &Entry,
        what: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let value = self.string(entry)?;
        if let Some((_, choice)) = options.iter().find(|(name, _)| *name == value) {
            return Some(*choice);
        }
        let names: Vec<&str> = options.iter().map(|(name, _)| *name).collect();
        let message = match did_you_mean(&value, &names) {
            Some(near) => format!("unknown {what} {value:?}; did you mean \"{near}\"?"),
            None => format!("unknown {what} {value:?}; expected {}", one_of(&names)),
        };
        self.error(&entry.key, entry.line, message);
        None
    }
}

/// Shortest run of an environment value's bytes that [`redact_environment`] takes out.
const ENV_RUN: usize = 6;

/// Inside a quoted value of a message, replaces every run of at least [`ENV_RUN`] bytes that
/// also occurs in a value the environment supplied with `<from ${NAME}>`. Validators quote the
/// value they refuse (`{value:?}`), and a substituted value may be a secret or hold one (a SAS
/// URL in the wrong variable); the credential markers of [`redact_credentials`] miss a fragment
/// that a validator split off (a log filter's level after its last `=`). Runs, not whole
/// values, so that a fragment is caught too; quoted text only, so that the message's own words
/// ("window", "endpoint") stay even where a connection string holds them.
fn redact_environment(message: String, from_env: &[(String, String)]) -> String {
    let mut covered: Vec<Option<&str>> = vec![None; message.len()];
    let bytes = message.as_bytes();
    let quoted = quoted_bytes(bytes);
    for (name, value) in from_env {
        if value.len() < ENV_RUN || bytes.len() < ENV_RUN {
            continue;
        }
        let runs: std::collections::HashSet<&[u8]> = value.as_bytes().windows(ENV_RUN).collect();
        for (at, window) in bytes.windows(ENV_RUN).enumerate() {
            if quoted[at..at + ENV_RUN].iter().all(|&q| q) && runs.contains(window) {
                covered[at..at + ENV_RUN].fill(Some(name.as_str()));
            }
        }
    }
    if covered.iter().all(Option::is_none) {
        return message;
    }
    // A character is taken out when any of its bytes is covered; a run of them becomes one
    // placeholder.
    let mut out = String::with_capacity(message.len());
    let mut in_run = false;
    for (at, c) in message.char_indices() {
        match covered[at..at + c.len_utf8()].iter().find_map(|name| *name) {
            Some(name) if !in_run => {
                out.push_str(&format!("<from ${{{name}}}>"));
                in_run = true;
            }
            Some(_) => {}
            None => {
                out.push(c);
                in_run = false;
            }
        }
    }
    out
}

/// Which bytes of `text` lie inside a `"..."` (as `{:?}` writes a string: `\"` and `\\` are
/// escapes); an unterminated quote runs to the end.
fn quoted_bytes(text: &[u8]) -> Vec<bool> {
    let mut quoted = vec![false; text.len()];
    let (mut inside, mut escaped) = (false, false);
    for (at, &byte) in text.iter().enumerate() {
        if inside && escaped {
            escaped = false;
            quoted[at] = true;
        } else if byte == b'"' {
            inside = !inside;
        } else {
            escaped = inside && byte == b'\\';
            quoted[at] = inside;
        }
    }
    quoted
}

/// Replaces what follows a credential marker with `<redacted>`. Secret keys never quote their
/// values, but a secret pasted into the wrong key (`name = "Endpoint=...;SharedAccessKey=..."`)
/// would be quoted as that key's value; this is the last line of defence.
fn redact_credentials(mut message: String) -> String {
    const MARKERS: [&str; 4] = [
        "sharedaccesskey=",
        "accountkey=",
        "sharedaccesssignature=",
        "sig=",
    ];
    for marker in MARKERS {
        let mut from = 0;
        while let Some(found) = message[from..].to_ascii_lowercase().find(marker) {
            let start = from + found + marker.len();
            let length = message[start..]
                .find([';', '&', '"', '\'', ' ', '\\'])
                .unwrap_or(message.len() - start);
            message.replace_range(start..start + length, "<redacted>");
            from = start + "<redacted>".len();
        }
    }
    message
}

/// `"a", "b" or "c"`.
pub(super) fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("\"{name}\"")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// How a found value is shown in an error: the literal for scalars, the kind for the rest, and
/// only the kind for secrets.
fn describe(item: &Item, secret: bool) -> String {
    let kind = match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(value) => match value {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "a table",
        },
    };
    if secret {
        return kind.to_owned();
    }
    match item.as_value() {
        Some(Value::String(value)) => format!("{:?}", value.value()),
        Some(Value::Integer(value)) => value.value().to_string(),
        Some(Value::Float(value)) => format!("{:?}", value.value()),
        Some(Value::Boolean(value)) => value.value().to_string(),
        Some(Value::Datetime(value)) => value.value().to_string(),
        _ => kind.to_owned(),
    }
}

/// Byte offset where an item starts: its key, else its own span, else (for tables made only of
/// dotted keys or sub-tables, which have no span) its first child.
fn item_start(table: &dyn TableLike, name: &str) -> Option<usize> {
    let (key, item) = table.get_key_value(name)?;
    key.span()
        .or_else(|| item.span())
        .map(|span| span.start)
        .or_else(|| {
            let child = item.as_table_like()?;
            child
                .iter()
                .filter_map(|(name, _)| item_start(child, name))
                .min()
        })
}

/// A table of the config being read: keys are taken as they are understood, and whatever is
/// left at [`Section::finish`] is reported.
pub(super) struct Section<'d> {
    /// Dotted path, `eventhub` or `eventhub.credential`.
    pub path: String,
    /// Line of the header (or first key); `None` when the section is absent.
    pub line: Option<usize>,
    entries: Vec<(&'d str, Entry<'d>, bool)>,
}

impl<'d> Section<'d> {
    /// The document root, whose keys are the sections.
    pub(super) fn root(ctx: &Ctx, table: &'d dyn TableLike) -> Self {
        Self::from_table(ctx, String::new(), table, Some(1))
    }

    /// A section that is not in the file: every key takes its default.
    pub(super) fn absent(path: &str) -> Self {
        Self {
            path: path.to_owned(),
            line: None,
            entries: Vec::new(),
        }
    }

    fn from_table(ctx: &Ctx, path: String, table: &'d dyn TableLike, line: Option<usize>) -> Self {
        let entries = table
            .iter()
            .filter(|(_, item)| !item.is_none())
            .map(|(name, item)| {
                let key = if path.is_empty() {
                    name.to_owned()
                } else {
                    format!("{path}.{name}")
                };
                let line = item_start(table, name).map(|offset| ctx.line_at(offset));
                (name, Entry { key, line, item }, false)
            })
            .collect();
        Self {
            path,
            line,
            entries,
        }
    }

    /// The table an entry holds (a `[section]`, `[a.b]` or inline `{ ... }`), or an error.
    pub(super) fn from_entry(ctx: &mut Ctx, entry: &Entry<'d>) -> Option<Self> {
        match entry.item.as_table_like() {
            Some(table) => Some(Self::from_table(ctx, entry.key.clone(), table, entry.line)),
            None => {
                let found = describe(entry.item, false);
                let message = format!("expected a table, found {found}");
                ctx.error(&entry.key, entry.line, message);
                None
            }
        }
    }

    /// Takes a key: it counts as understood from now on.
    pub(super) fn take(&mut self, name: &str) -> Option<Entry<'d>> {
        let (_, entry, used) = self.entries.iter_mut().find(|(key, ..)| *key == name)?;
        *used = true;
        Some(entry.clone())
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.entries.iter().any(|(key, ..)| *key == name)
    }

    /// The line of a key if present, else of the section: where a problem about it is reported.
    pub(super) fn line_of(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .find(|(key, ..)| *key == name)
            .and_then(|(_, entry, _)| entry.line)
            .or(self.line)
    }

    /// The full dotted key of `name` in this section.
    pub(super) fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.path)
    }

    /// The keys never taken, in document order.
    pub(super) fn unused(self) -> impl Iterator<Item = (&'d str, Entry<'d>)> {
        self.entries
            .into_iter()
            .filter(|(_, _, used)| !used)
            .map(|(name, entry, _)| (name, entry))
    }

    /// Reports every key not taken: a key of `other_keys` is "not used by `owner`" (it belongs
    /// to another type), anything else is unknown, with a did-you-mean over both lists.
    pub(super) fn finish(self, ctx: &mut Ctx, allowed: &[&str], other_keys: &[&str], owner: &str) {
        for (name, entry) in self.unused() {
            if allowed.contains(&name) {
                continue;
            }
            let message = if other_keys.contains(&name) {
                format!("not used by {owner}")
            } else {
                let near = did_you_mean(name, allowed)
                    .or_else(|| did_you_mean(name, other_keys))
                    .map(|near| format!("; did you mean \"{near}\"?"))
                    .unwrap_or_default();
                format!("unknown key \"{name}\"{near}")
            };
            ctx.error(&entry.key, entry.line, message);
        }
    }

    pub(super) fn integer(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        default: i64,
        range: RangeInclusive<i64>,
    ) -> i64 {
        self.take(name)
            .and_then(|entry| ctx.integer(&entry, range))
            .unwrap_or(default)
    }

    pub(super) fn boolean(&mut self, ctx: &mut Ctx, name: &str, default: bool) -> bool {
        self.take(name)
            .and_then(|entry| ctx.boolean(&entry))
            .unwrap_or(default)
    }

    pub(super) fn duration(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        default: Duration,
        range: RangeInclusive<Duration>,
    ) -> Duration {
        self.take(name)
            .and_then(|entry| ctx.duration(&entry, range))
            .unwrap_or(default)
    }

    pub(super) fn size(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> u64 {
        self.take(name)
            .and_then(|entry| ctx.size(&entry, range))
            .unwrap_or(default)
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
        what: &str,
        options: &[(&str, T)],
        default: T,
    ) -> Lookup<T> {
        match self.take(name) {
            None => Lookup::Present(default),
            Some(entry) => match ctx.choice(&entry, what, options) {
                Some(choice) => Lookup::Present(choice),
                None => Lookup::Invalid,
            },
        }
    }

    /// A secret given inline (`name`) or as a file (`name_file`); both at once is an error.
    pub(super) fn secret_or_file(
        &mut self,
        ctx: &mut Ctx,
        name: &str,
    ) -> Lookup<(Secret, Entry<'d>)> {
        let file_name = format!("{name}_file");
        match (self.take(name), self.take(&file_name)) {
            (None, None) => Lookup::Absent,
            (Some(_), Some(file)) => {
                let message = format!("{name} and {file_name} are exclusive; set one");
                ctx.error(&file.key, file.line, message);
                Lookup::Invalid
            }
            (Some(entry), None) => match ctx.secret(&entry) {
                Some(secret) => Lookup::Present((secret, entry)),
                None => Lookup::Invalid,
            },
            (None, Some(entry)) => {
                let Some(path) = ctx.path(&entry) else {
                    return Lookup::Invalid;
                };
                match read_secret_file(&path) {
                    Ok(secret) => Lookup::Present((Secret::new(secret), entry)),
                    Err(message) => {
                        ctx.error(&entry.key, entry.line, message);
                        Lookup::Invalid
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_messages_are_redacted() {
        let message = "invalid hub name \"Endpoint=sb://x/;SharedAccessKey=LEAK1;EntityPath=h\"";
        assert_eq!(
            redact_credentials(message.to_owned()),
            "invalid hub name \"Endpoint=sb://x/;SharedAccessKey=<redacted>;EntityPath=h\""
        );
        let message = "found \"AccountName=a;accountkey=LEAK2\" and \"?sv=1&sig=LEAK3&se=2\"";
        let redacted = redact_credentials(message.to_owned());
        assert!(!redacted.contains("LEAK"), "{redacted}");
        assert_eq!(redact_credentials("sig=".to_owned()), "sig=<redacted>");
        assert_eq!(redact_credentials("no secrets".to_owned()), "no secrets");
    }

    #[test]
    fn runs_of_environment_values_are_taken_out_of_messages() {
        let from_env = [
            ("KEY".to_owned(), "s3cretValue".to_owned()),
            ("SHORT".to_owned(), "abc".to_owned()),
        ];
        let redact = |message: &str| redact_environment(message.to_owned(), &from_env);
        assert_eq!(redact("bad \"s3cretValue\""), "bad \"<from ${KEY}>\"");
        // A fragment split off the value, and a value with text around it.
        assert_eq!(redact("level \"retVal\""), "level \"<from ${KEY}>\"");
        assert_eq!(redact("in \"x=s3cretValue-y\""), "in \"x=<from ${KEY}>-y\"");
        // The message's own words are not quoted values.
        assert_eq!(redact("s3cretValue is not"), "s3cretValue is not");
        // Escapes inside a quoted value do not end it.
        assert_eq!(
            redact("\"a\\\"s3cretValue\" ok"),
            "\"a\\\"<from ${KEY}>\" ok"
        );
        // Runs shorter than ENV_RUN, and short values, are not secrets worth the confusion.
        assert_eq!(redact("\"s3cre abc\""), "\"s3cre abc\"");
        // Multi-byte characters next to a run stay whole.
        let from_env = [("V".to_owned(), "ünïcødé-valüe".to_owned())];
        assert_eq!(
            redact_environment("é\"«ünïcødé-valüe»\"".to_owned(), &from_env),
            "é\"«<from ${V}>»\""
        );
    }
}
