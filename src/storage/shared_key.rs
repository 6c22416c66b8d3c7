//! Shared Key authorization for an account key: azure_storage_blob 1.x has only token
//! credentials, so hubcap signs each request itself in a per-try pipeline policy.
//!
//! The string to sign is the documented one (service version 2015-02-21 and later): the verb,
//! eleven standard headers (Content-Length empty when zero), the `x-ms-*` headers lower-cased
//! and sorted, then `/<account><path>` and the query parameters lower-cased, decoded and sorted.
//! The path is taken exactly as it goes on the wire: the crate sends `/` inside a blob name as
//! `%2F`, and the service signs the path as it received it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use azure_core::http::headers::HeaderName;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{Context, Request};
use azure_core::time::{to_rfc7231, OffsetDateTime};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The standard headers in string-to-sign order, after the verb.
const SIGNED_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// Signs every try of a request with the account key (each try gets a fresh `x-ms-date`).
#[derive(Clone)]
pub(super) struct SharedKeyPolicy {
    /// The storage account name, as in `AccountName=`.
    account: String,
    /// The account key, base64-decoded: the HMAC key.
    key: Arc<[u8]>,
}

impl fmt::Debug for SharedKeyPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedKeyPolicy")
            .field("account", &self.account)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SharedKeyPolicy {
    /// `key` is the account key as given (base64). The error never repeats it.
    pub(super) fn new(account: &str, key: &str) -> Result<Self, String> {
        let key = BASE64
            .decode(key.trim())
            .map_err(|_| "AccountKey is not valid base64".to_owned())?;
        if key.is_empty() {
            return Err("AccountKey is empty".into());
        }
        Ok(Self {
            account: account.to_owned(),
            key: key.into(),
        })
    }

    fn sign(&self, request: &Request) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(string_to_sign(&self.account, request).as_bytes());
        BASE64.encode(mac.finalize().into_bytes())
    }
}

#[async_trait::async_trait]
impl Policy for SharedKeyPolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        request.insert_header("x-ms-date", to_rfc7231(&OffsetDateTime::now_utc()));
        let signature = self.sign(request);
        request.insert_header(
            "authorization",
            format!("SharedKey {}:{signature}", self.account),
        );
        next[0].send(ctx, request, &next[1..]).await
    }
}

/// The Shared Key string to sign for `request` as it will be sent.
fn string_to_sign(account: &str, request: &Request) -> String {
    let headers = request.headers();
    let header = |name: &'static str| {
        headers
            .get_optional_str(&HeaderName::from_static(name))
            .unwrap_or_default()
            .to_owned()
    };
    let mut text = String::with_capacity(512);
    text.push_str(request.method().as_ref());
    text.push('\n');
    for name in SIGNED_HEADERS {
        let value = match name {
            // The transport sets Content-Length from the body when the client did not.
            "content-length" => {
                let length = match headers.get_optional_str(&HeaderName::from_static(name)) {
                    Some(value) => value.to_owned(),
                    None => request.body().len().unwrap_or(0).to_string(),
                };
                if length == "0" {
                    String::new()
                } else {
                    length
                }
            }
            _ => header(name),
        };
        text.push_str(&value);
        text.push('\n');
    }

    let mut storage_headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .filter(|(name, _)| name.starts_with("x-ms-"))
        .collect();
    storage_headers.sort_unstable_by_key(|(name, _)| *name);
    for (name, value) in storage_headers {
        text.push_str(name);
        text.push(':');
        text.push_str(&value.split_whitespace().collect::<Vec<_>>().join(" "));
        text.push('\n');
    }

    let url = request.url();
    text.push('/');
    text.push_str(account);
    text.push_str(url.path());
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in url.query_pairs() {
        query
            .entry(name.to_lowercase())
            .or_default()
            .push(value.into_owned());
    }
    for (name, mut values) in query {
        values.sort();
        text.push('\n');
        text.push_str(&name);
        text.push(':');
        text.push_str(&values.join(","));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::http::{Method, Url};

    #[test]
    fn string_to_sign_follows_the_documented_layout_with_the_encoded_path() {
        let url = Url::parse(
            "http://127.0.0.1:10000/devstoreaccount1/checkpoints/ns%2Fhub%2F$default%2Fownership%2F0?comp=metadata&timeout=30",
        )
        .unwrap();
        let mut request = Request::new(url, Method::Put);
        request.insert_header("x-ms-version", "2026-02-06");
        request.insert_header("x-ms-date", "Tue, 01 Jan 2030 00:00:00 GMT");
        request.insert_header("x-ms-meta-ownerid", "  owner   a ");
        request.insert_header("if-match", "\"0x1\"");
        request.insert_header("x-ms-client-request-id", "id-1");
        request.insert_header("user-agent", "not signed");

        assert_eq!(
            string_to_sign("devstoreaccount1", &request),
            "PUT\n\n\n\n\n\n\n\n\"0x1\"\n\n\n\n\
             x-ms-client-request-id:id-1\n\
             x-ms-date:Tue, 01 Jan 2030 00:00:00 GMT\n\
             x-ms-meta-ownerid:owner a\n\
             x-ms-version:2026-02-06\n\
             /devstoreaccount1/devstoreaccount1/checkpoints/ns%2Fhub%2F$default%2Fownership%2F0\n\
             comp:metadata\n\
             timeout:30"
        );
    }

    #[test]
    fn content_length_comes_from_the_body_and_is_empty_when_zero() {
        let url = Url::parse("https://acct.blob.core.windows.net/c/b?comp=blocklist").unwrap();
        let mut request = Request::new(url, Method::Put);
        request.set_body(b"<BlockList/>".to_vec());
        let text = string_to_sign("acct", &request);
        assert!(text.starts_with("PUT\n\n\n12\n"), "{text:?}");

        let url = Url::parse("https://acct.blob.core.windows.net/c/b").unwrap();
        let request = Request::new(url, Method::Put);
        assert!(string_to_sign("acct", &request).starts_with("PUT\n\n\n\n"));
    }

    #[test]
    fn a_bad_key_is_refused_without_repeating_it_and_debug_hides_the_key() {
        let error = SharedKeyPolicy::new("acct", "not base64!!").unwrap_err();
        assert!(!error.contains("not base64!!"), "{error}");
        let policy = SharedKeyPolicy::new("acct", "a2V5").unwrap();
        assert_eq!(
            format!("{policy:?}"),
            "SharedKeyPolicy { account: \"acct\", key: \"<redacted>\" }"
        );
    }
}
