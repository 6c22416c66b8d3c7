//! The storage keys shared by `[checkpoint_store]` (type `azure_blob`) and `[sink]` (type
//! `avro_blob`): exactly one of a connection string, a container SAS URL, or an account URL with
//! a credential, plus the container. Nothing here repeats a connection string or a SAS URL in an
//! error: they carry keys and signatures.
//!
//! The checks here name every problem in the config's terms; once they pass,
//! [`StorageAccount::check`] runs what the blob client itself would refuse at start, so the two
//! cannot disagree.

use super::credential;
use super::reader::{Ctx, Entry, Lookup, Section};
use crate::proxy::{self, NoProxy, ProxyRoute, HTTPS_PROXY_VARS, NO_PROXY_VARS};
use crate::storage::{StorageAccount, StorageError};

/// Storage keys, in the order they are documented.
pub(super) const KEYS: &[&str] = &[
    "connection_string",
    "connection_string_file",
    "container_url",
    "container_url_file",
    "account_url",
    "credential",
    "container",
    "proxy",
];

/// Reads the storage keys of `section`; returns the storage, the container name, and the proxy
/// its requests go through.
pub(super) fn parse(
    ctx: &mut Ctx,
    section: &mut Section,
) -> Option<(StorageAccount, String, ProxyRoute)> {
    let proxy = proxy_route(ctx, section);
    let (storage, container, entry) = account(ctx, section)?;
    if let Err(error) = storage.check(&container) {
        let message = match error {
            StorageError::Config { reason } => reason,
            other => other.to_string(),
        };
        ctx.error(&entry.key, entry.line, message);
        return None;
    }
    Some((storage, container, proxy?))
}

/// The HTTP proxy for Blob Storage requests: `proxy`, else `HTTPS_PROXY`; `NO_PROXY` bypasses
/// either (as curl and the Azure SDKs do). Applied per account host when the client is built.
fn proxy_route(ctx: &mut Ctx, section: &mut Section) -> Option<ProxyRoute> {
    let no_proxy = ctx
        .env_var(&NO_PROXY_VARS)
        .map(|(_, list)| NoProxy::parse(&list))
        .unwrap_or_default();
    let (text, source, key, line) = match section.take("proxy") {
        Some(entry) => {
            let url = ctx.secret(&entry)?;
            (
                url.expose().to_owned(),
                entry.key.clone(),
                entry.key,
                entry.line,
            )
        }
        None => match ctx.env_var(&HTTPS_PROXY_VARS) {
            Some((variable, url)) => (
                url,
                variable.to_owned(),
                format!("environment variable {variable}"),
                None,
            ),
            None => return Some(ProxyRoute::direct()),
        },
    };
    match proxy::parse_proxy_url(&text, &source) {
        Ok(proxy) => Some(ProxyRoute {
            proxy: Some(proxy),
            no_proxy,
        }),
        Err(problem) => {
            ctx.error(&key, line, problem);
            None
        }
    }
}

/// The storage account, its container, and the key that chose the account.
fn account<'d>(
    ctx: &mut Ctx,
    section: &mut Section<'d>,
) -> Option<(StorageAccount, String, Entry<'d>)> {
    let connection_string = section.secret_or_file(ctx, "connection_string");
    let container_url = section.secret_or_file(ctx, "container_url");
    let account_url = section.take("account_url");
    let credential = section.take("credential");
    let container = section.take("container");

    let given: Vec<&str> = [
        (
            "connection_string",
            !matches!(connection_string, Lookup::Absent),
        ),
        ("container_url", !matches!(container_url, Lookup::Absent)),
        ("account_url", account_url.is_some() || credential.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    if given.len() > 1 {
        let later = given[1];
        let line = [later, &format!("{later}_file"), "credential"]
            .into_iter()
            .find(|name| section.has(name))
            .and_then(|name| section.line_of(name));
        let message = format!("{} are exclusive; set one", given.join(" and "));
        ctx.error(&section.key(later), line, message);
        return None;
    }

    match (connection_string, container_url) {
        (Lookup::Invalid, _) | (_, Lookup::Invalid) => None,
        (Lookup::Present((secret, entry)), _) => {
            let checked = check_connection_string(secret.expose());
            let valid = checked.is_ok();
            if let Err(problems) = checked {
                for problem in problems {
                    ctx.error(&entry.key, entry.line, problem);
                }
            }
            let container = required_container(ctx, section, container)?;
            valid.then_some((StorageAccount::ConnectionString(secret), container, entry))
        }
        (_, Lookup::Present((secret, entry))) => {
            if let Some(container) = &container {
                let message = "must not be set with container_url (the URL names the container)";
                ctx.error(&container.key, container.line, message);
            }
            match container_from_url(secret.expose()) {
                Ok(name) => Some((StorageAccount::ContainerUrl(secret), name, entry)),
                Err(problem) => {
                    ctx.error(&entry.key, entry.line, problem);
                    None
                }
            }
        }
        (Lookup::Absent, Lookup::Absent) => match (account_url, credential) {
            (Some(entry), Some(credential)) => {
                let url = ctx.name(&entry).and_then(|url| {
                    let check = check_account_url(&url);
                    ctx.checked(&entry, url, check)
                });
                let credential = credential::parse(ctx, &credential);
                let container = required_container(ctx, section, container);
                let storage = url.zip(credential).map(|(account_url, credential)| {
                    StorageAccount::AccountUrl {
                        account_url,
                        credential,
                    }
                });
                let (storage, container) = storage.zip(container)?;
                Some((storage, container, entry))
            }
            (Some(account_url), None) => {
                let message = "account_url needs a credential, such as \
                               credential = { type = \"workload_identity\" }";
                ctx.error(&account_url.key, account_url.line, message);
                None
            }
            (None, Some(credential)) => {
                let message = "credential needs account_url";
                ctx.error(&credential.key, credential.line, message);
                None
            }
            (None, None) => {
                let message = "no storage account: set connection_string, \
                               connection_string_file, container_url, container_url_file, or \
                               account_url with credential";
                ctx.error(&section.path, section.line, message);
                None
            }
        },
    }
}

fn required_container(
    ctx: &mut Ctx,
    section: &Section,
    container: Option<Entry>,
) -> Option<String> {
    let Some(entry) = container else {
        let message = "required: the name of the blob container";
        ctx.error(&section.key("container"), section.line, message);
        return None;
    };
    let name = ctx.name(&entry)?;
    let check = check_container_name(&name);
    ctx.checked(&entry, name, check)
}

/// Azure container names: 3 to 63 lowercase letters, digits and single hyphens, starting and
/// ending with a letter or digit.
pub(super) fn check_container_name(name: &str) -> Result<(), String> {
    let valid = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "invalid container name {name:?}: use 3 to 63 lowercase letters, digits and single \
             hyphens, starting and ending with a letter or digit"
        ))
    }
}

/// An Azure Storage connection string names an account (`AccountName`, or a `BlobEndpoint`
/// with a SAS) and a credential (`AccountKey` or `SharedAccessSignature`);
/// `UseDevelopmentStorage=true` stands for the local emulator's well-known account. Every
/// problem is named; no value is repeated.
pub(super) fn check_connection_string(text: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut present = Vec::new();
    let mut development = false;
    for (index, part) in text
        .split(';')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .enumerate()
    {
        let Some((name, value)) = part.split_once('=') else {
            problems.push(format!(
                "storage connection string part {} (counting from 1) is not Key=Value",
                index + 1
            ));
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        match name.as_str() {
            "usedevelopmentstorage" => development = value.eq_ignore_ascii_case("true"),
            "endpoint" if value.starts_with("sb://") => problems.push(
                "this is an Event Hubs connection string (Endpoint=sb://...); a storage \
                 connection string has AccountName and AccountKey"
                    .into(),
            ),
            "defaultendpointsprotocol" if value != "https" && value != "http" => problems.push(
                "storage connection string DefaultEndpointsProtocol must be https or http".into(),
            ),
            "blobendpoint" if !value.starts_with("https://") && !value.starts_with("http://") => {
                problems
                    .push("storage connection string BlobEndpoint must be an http(s) URL".into());
            }
            "accountkey" if !is_base64(value) => {
                problems.push("storage connection string AccountKey is not base64".into());
            }
            _ => {}
        }
        if !value.is_empty() {
            present.push(name);
        }
    }
    let has = |name: &str| present.iter().any(|present| present == name);
    if !development && problems.is_empty() {
        if !has("accountname") && !has("blobendpoint") {
            problems.push("storage connection string has no AccountName".into());
        }
        match (has("accountkey"), has("sharedaccesssignature")) {
            (false, false) => problems.push(
                "storage connection string has neither AccountKey nor SharedAccessSignature".into(),
            ),
            (true, true) => problems.push(
                "storage connection string has both AccountKey and SharedAccessSignature; use \
                 one"
                .into(),
            ),
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn is_base64(value: &str) -> bool {
    let body = value.trim_end_matches('=');
    !body.is_empty()
        && value.len() - body.len() <= 2
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
}

/// Scheme and host of an http(s) URL; plain http only for a local emulator (Azurite), and only
/// when `local_http` (a SAS may travel in the clear to localhost, an Entra ID token may not).
fn check_scheme(url: &str, key: &str, local_http: bool) -> Result<(), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{key} must be an https URL"))?;
    let host = rest.split(['/', '?']).next().unwrap_or_default();
    let host = host.rsplit_once(':').map_or(host, |(host, _)| host);
    let local = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    match scheme {
        "https" if !host.is_empty() => Ok(()),
        "http" if local && local_http => Ok(()),
        "http" if !local_http => Err(format!(
            "{key} must be https: an Entra ID credential is never sent over plain http"
        )),
        "http" => Err(format!(
            "{key} must be https (plain http only for a local emulator on localhost)"
        )),
        _ => Err(format!("{key} must be an https URL")),
    }
}

/// A container SAS URL: `https://<account>.blob.core.windows.net/<container>?<SAS>`, or
/// `http://127.0.0.1:10000/<account>/<container>?<SAS>` for Azurite. Returns the container.
pub(super) fn container_from_url(url: &str) -> Result<String, String> {
    check_scheme(url, "container_url", true)?;
    let (address, query) = url.split_once('?').unwrap_or((url, ""));
    let has_signature = query
        .split('&')
        .any(|pair| pair.starts_with("sig=") && pair.len() > 4);
    if !has_signature {
        return Err(
            "container_url has no SAS token: append the container's SAS query (?sv=...&sig=...)"
                .into(),
        );
    }
    let path = address.split_once("://").map_or("", |(_, rest)| {
        rest.split_once('/').map_or("", |(_, path)| path)
    });
    let container = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if container.is_empty() {
        return Err("container_url names no container: expected \
                    https://<account>.blob.core.windows.net/<container>?<SAS>"
            .into());
    }
    check_container_name(container)?;
    Ok(container.to_owned())
}

/// The account's blob endpoint, for use with a credential; a SAS belongs in `container_url`.
fn check_account_url(url: &str) -> Result<(), String> {
    check_scheme(url, "account_url", false)?;
    if url.contains('?') {
        return Err("account_url must not carry a query; for a SAS use container_url".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_connection_strings_in_their_usual_forms() {
        let accepted = [
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
            "AccountName=devstoreaccount1;AccountKey=a2V5a2V5==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;",
            "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=sv=2022&sig=abc",
            "UseDevelopmentStorage=true",
        ];
        for text in accepted {
            assert_eq!(check_connection_string(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn storage_connection_string_problems_are_named_without_the_key() {
        let cases = [
            ("AccountKey=S3CRETKEYVALUE", "has no AccountName"),
            (
                "AccountName=acct",
                "neither AccountKey nor SharedAccessSignature",
            ),
            (
                "AccountName=acct;AccountKey=a2V5;SharedAccessSignature=sig=x",
                "both AccountKey",
            ),
            (
                "AccountName=acct;S3CRETKEYVALUE",
                "part 2 (counting from 1) is not Key=Value",
            ),
            (
                "AccountName=acct;AccountKey=S3CRET!KEY",
                "AccountKey is not base64",
            ),
            (
                "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKey=S3CRET",
                "Event Hubs",
            ),
            (
                "DefaultEndpointsProtocol=ftp;AccountName=a;AccountKey=a2V5",
                "https or http",
            ),
        ];
        for (text, expected) in cases {
            let problems = check_connection_string(text).unwrap_err();
            let joined = problems.join("\n");
            assert!(joined.contains(expected), "{text}: {joined}");
            assert!(!joined.contains("S3CRET"), "{joined}");
        }
    }

    #[test]
    fn container_urls_name_their_container() {
        assert_eq!(
            container_from_url("https://acct.blob.core.windows.net/archive?sv=2022&sig=abc"),
            Ok("archive".to_owned())
        );
        assert_eq!(
            container_from_url("http://127.0.0.1:10000/devstoreaccount1/ckpt?sv=1&sig=abc"),
            Ok("ckpt".to_owned())
        );
        let cases = [
            (
                "http://acct.blob.core.windows.net/a?sig=S3CRET",
                "must be https",
            ),
            ("ftp://acct/a?sig=S3CRET", "must be an https URL"),
            ("https://acct.blob.core.windows.net/archive", "no SAS token"),
            (
                "https://acct.blob.core.windows.net/?sv=1&sig=S3CRET",
                "names no container",
            ),
            (
                "https://acct.blob.core.windows.net/Archive?sig=S3CRET",
                "invalid container name",
            ),
        ];
        for (url, expected) in cases {
            let problem = container_from_url(url).unwrap_err();
            assert!(problem.contains(expected), "{url}: {problem}");
            assert!(!problem.contains("S3CRET"), "{problem}");
        }
    }

    #[test]
    fn container_names_follow_azure_rules() {
        for good in ["abc", "checkpoints", "a-b-c", "x1y2z3"] {
            assert!(check_container_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Checkpoints",
            "-abc",
            "abc-",
            "a--b",
            "a_b",
            &"a".repeat(64),
        ] {
            assert!(check_container_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn account_urls_are_https_without_a_query() {
        assert!(check_account_url("https://acct.blob.core.windows.net").is_ok());
        let local = check_account_url("http://localhost:10000/devstoreaccount1").unwrap_err();
        assert!(local.contains("never sent over plain http"), "{local}");
        assert!(check_account_url("https://acct.blob.core.windows.net/?sig=x").is_err());
        assert!(check_account_url("acct.blob.core.windows.net").is_err());
    }
}
