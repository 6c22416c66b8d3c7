//! What can go wrong talking to Blob Storage, sorted by what the caller does about it.
//!
//! Messages name the operation and the blob, never a key or a SAS signature: HTTP errors keep
//! only the status and the service's error code (the service's own message can quote the
//! string it signed), and transport errors have every URL's query cut off (reqwest prints the
//! request URL, which carries the SAS).

use std::fmt;

use azure_core::error::ErrorKind;
use azure_core::http::headers::HeaderName;

/// A failed Blob Storage operation.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A conditional write found the blob changed (412): someone else wrote it first.
    #[error("{operation} {target}: condition not met, the blob was changed by another writer")]
    ConditionNotMet {
        /// What was attempted, e.g. "set metadata".
        operation: &'static str,
        /// The blob (or container) it was attempted on.
        target: String,
    },
    /// A create-only write found the blob (409 BlobAlreadyExists).
    #[error("{operation} {target}: the blob already exists")]
    AlreadyExists {
        /// What was attempted.
        operation: &'static str,
        /// The blob it was attempted on.
        target: String,
    },
    /// The blob or its container does not exist (404).
    #[error("{operation} {target}: not found ({code})")]
    NotFound {
        /// What was attempted.
        operation: &'static str,
        /// The blob it was attempted on.
        target: String,
        /// The service's error code: `BlobNotFound`, `ContainerNotFound`, ...
        code: String,
    },
    /// The account could not be reached or failed transiently (connect errors, timeouts, 408,
    /// 429, 5xx) after the client's bounded retries: try again later.
    #[error("{operation} {target}: storage unavailable: {reason}")]
    Unavailable {
        /// What was attempted.
        operation: &'static str,
        /// The blob it was attempted on.
        target: String,
        /// Why, with no secret in it.
        reason: String,
        /// How long the service asked the client to wait (`Retry-After` on a 429 or 503).
        retry_after: Option<std::time::Duration>,
    },
    /// The account refused the request (401, 403, other 4xx): a credential, permission or
    /// configuration problem that retrying will not fix.
    #[error("{operation} {target}: refused by storage: {reason}")]
    Refused {
        /// What was attempted.
        operation: &'static str,
        /// The blob it was attempted on.
        target: String,
        /// Status and error code, e.g. `403 AuthenticationFailed`.
        reason: String,
    },
    /// The storage configuration cannot be turned into a client (bad connection string, URL).
    #[error("storage configuration: {reason}")]
    Config {
        /// What is wrong, without repeating the secret it was found in.
        reason: String,
    },
}

impl StorageError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StorageError::Unavailable { .. })
    }

    /// How long the service asked to be left alone before the next try, if it said.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            StorageError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Sorts an azure_core error from `operation` on `target`.
    pub(super) fn from_azure(
        operation: &'static str,
        target: &str,
        error: &azure_core::Error,
    ) -> Self {
        let target = target.to_owned();
        let ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } = error.kind()
        else {
            return StorageError::Unavailable {
                operation,
                target,
                reason: transport_reason(error),
                retry_after: None,
            };
        };
        let status = u16::from(*status);
        let code = error_code.clone().unwrap_or_default();
        match status {
            412 => StorageError::ConditionNotMet { operation, target },
            409 if code == "BlobAlreadyExists" || code == "ContainerAlreadyExists" => {
                StorageError::AlreadyExists { operation, target }
            }
            404 => StorageError::NotFound {
                operation,
                target,
                code: if code.is_empty() { "404".into() } else { code },
            },
            408 | 429 | 500..=599 => StorageError::Unavailable {
                operation,
                target,
                reason: status_reason(status, &code),
                retry_after: raw_response
                    .as_deref()
                    .and_then(|response| retry_after(response.headers())),
            },
            _ => StorageError::Refused {
                operation,
                target,
                reason: status_reason(status, &code),
            },
        }
    }

    /// An operation that did not finish within its deadline.
    pub(super) fn timed_out(
        operation: &'static str,
        target: &str,
        after: std::time::Duration,
    ) -> Self {
        StorageError::Unavailable {
            operation,
            target: target.to_owned(),
            reason: format!("no answer within {after:?}"),
            retry_after: None,
        }
    }
}

/// The wait a throttled answer asks for: `x-ms-retry-after-ms`, `retry-after-ms`, or
/// `Retry-After` in seconds (the HTTP-date form is not used by Storage). Capped, so a
/// misbehaving service cannot park a partition for hours.
fn retry_after(headers: &azure_core::http::headers::Headers) -> Option<std::time::Duration> {
    const LONGEST: std::time::Duration = std::time::Duration::from_secs(60);
    let value = |name: &'static str| headers.get_optional_str(&HeaderName::from_static(name));
    let wait = if let Some(ms) = value("x-ms-retry-after-ms").or_else(|| value("retry-after-ms")) {
        std::time::Duration::from_millis(ms.trim().parse().ok()?)
    } else {
        std::time::Duration::try_from_secs_f64(value("retry-after")?.trim().parse().ok()?).ok()?
    };
    Some(wait.min(LONGEST))
}

fn status_reason(status: u16, code: &str) -> String {
    if code.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {code}")
    }
}

/// The error and its causes, one line, every URL cut at its query.
fn transport_reason(error: &azure_core::Error) -> String {
    let mut reason = String::new();
    let mut current: Option<&dyn std::error::Error> = Some(error);
    while let Some(err) = current {
        let text = redact_queries(&err.to_string());
        // Wrappers often repeat their cause's text; say each thing once.
        if !text.is_empty() && !reason.contains(&text) {
            if !reason.is_empty() {
                reason.push_str(": ");
            }
            reason.push_str(&text);
        }
        current = err.source();
    }
    if reason.is_empty() {
        reason = Kind(error.kind()).to_string();
    }
    reason
}

/// `http(s)://host/path?query` -> `http(s)://host/path?<redacted>` wherever it appears.
pub(super) fn redact_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("http") {
        let (before, candidate) = rest.split_at(start);
        out.push_str(before);
        let is_url = candidate.starts_with("http://") || candidate.starts_with("https://");
        let end = if is_url {
            candidate
                .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>'))
                .unwrap_or(candidate.len())
        } else {
            "http".len()
        };
        let (url, after) = candidate.split_at(end);
        match url.split_once('?') {
            Some((address, _)) if is_url => {
                out.push_str(address);
                out.push_str("?<redacted>");
            }
            _ => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Display for an error kind without a message.
struct Kind<'a>(&'a ErrorKind);

impl fmt::Display for Kind<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ErrorKind::Connection => f.write_str("connection failed"),
            ErrorKind::Io => f.write_str("i/o error"),
            ErrorKind::Credential => f.write_str("no token from the credential"),
            other => write!(f, "{other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_cut_from_every_url_in_a_message() {
        let text = "error sending request for url (http://127.0.0.1:1/acct/c/b?comp=metadata&sv=2022&sig=SECRET): \
                    see https://x/y?sig=OTHER and http-ish words";
        let redacted = redact_queries(text);
        assert!(
            !redacted.contains("SECRET") && !redacted.contains("OTHER"),
            "{redacted}"
        );
        assert_eq!(
            redacted,
            "error sending request for url (http://127.0.0.1:1/acct/c/b?<redacted>): \
             see https://x/y?<redacted> and http-ish words"
        );
    }

    #[test]
    fn a_throttled_answer_says_how_long_to_wait_in_any_of_its_headers() {
        use std::time::Duration;
        let wait = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = azure_core::http::headers::Headers::new();
            for (name, value) in pairs {
                headers.insert(HeaderName::from_static(name), *value);
            }
            retry_after(&headers)
        };
        assert_eq!(wait(&[("retry-after", "2")]), Some(Duration::from_secs(2)));
        assert_eq!(
            wait(&[("retry-after", "0.5")]),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            wait(&[("retry-after", "9"), ("x-ms-retry-after-ms", "1500")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            wait(&[("retry-after-ms", "20")]),
            Some(Duration::from_millis(20))
        );
        assert_eq!(
            wait(&[("retry-after", "86400")]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            wait(&[("retry-after", "Fri, 01 Jan 2021 00:00:00 GMT")]),
            None
        );
        assert_eq!(wait(&[("retry-after", "-1")]), None);
        assert_eq!(wait(&[]), None);
    }

    #[test]
    fn statuses_sort_into_what_the_caller_does() {
        let error = |status: u16, code: &str| {
            let error = azure_core::Error::new(
                ErrorKind::HttpResponse {
                    status: status.into(),
                    error_code: Some(code.into()),
                    raw_response: None,
                },
                "failed",
            );
            StorageError::from_azure("set metadata", "c/b", &error)
        };
        assert!(matches!(
            error(412, "ConditionNotMet"),
            StorageError::ConditionNotMet { .. }
        ));
        assert!(matches!(
            error(409, "BlobAlreadyExists"),
            StorageError::AlreadyExists { .. }
        ));
        assert!(matches!(
            error(409, "LeaseIdMissing"),
            StorageError::Refused { .. }
        ));
        assert!(matches!(
            error(404, "BlobNotFound"),
            StorageError::NotFound { .. }
        ));
        for status in [408, 429, 500, 503] {
            assert!(error(status, "ServerBusy").is_transient(), "{status}");
        }
        let refused = error(403, "AuthenticationFailed");
        assert_eq!(
            refused.to_string(),
            "set metadata c/b: refused by storage: HTTP 403 AuthenticationFailed"
        );
        let connect = azure_core::Error::new(ErrorKind::Connection, "connection refused");
        assert!(StorageError::from_azure("list", "c", &connect).is_transient());
    }
}
