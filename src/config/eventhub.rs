//! `[eventhub]`: the connection (a connection string, or a namespace and an Entra ID
//! credential), the hub and consumer group, where to start, and link tuning.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::reader::{Ctx, Lookup, Section};
use super::units::{GIB, KIB, MIB};
use super::{credential, EventHubConfig, EventHubConnection};
use crate::eventhubs::{
    check_ca_file, expiry_of, ConnectionString, ConnectionStringAuth, EventPosition,
    FullyQualifiedNamespace, Transport,
};
use crate::proxy::{self, NoProxy, ProxyRoute, HTTPS_PROXY_VARS, NO_PROXY_VARS};
use crate::suggest::did_you_mean;

pub(super) const KEYS: &[&str] = &[
    "connection_string",
    "connection_string_file",
    "fully_qualified_namespace",
    "credential",
    "name",
    "consumer_group",
    "start_position",
    "prefetch",
    "prefetch_bytes",
    "owner_level",
    "token_lifetime",
    "ca_file",
    "connect_timeout",
    "retry_min_backoff",
    "retry_max_backoff",
    "stuck_partition_timeout",
    "transport",
    "custom_endpoint",
    "proxy",
];

const DEFAULT_CONSUMER_GROUP: &str = "$Default";
const DEFAULT_PREFETCH: u32 = 300;
/// Enough for 300 events of up to ~3 KiB; larger events get proportionally less credit.
const DEFAULT_PREFETCH_BYTES: u64 = MIB;
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_STUCK_PARTITION_TIMEOUT: Duration = Duration::from_secs(120);
const DEFAULT_RETRY_MIN_BACKOFF: Duration = Duration::from_millis(200);
const DEFAULT_RETRY_MAX_BACKOFF: Duration = Duration::from_secs(30);

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// What reading the connection keys told about the hub name.
enum EntityPath {
    /// The connection is known: the connection string's `EntityPath`, if it has one.
    Known(Option<String>),
    /// The connection string was unusable, so whether it names the hub is unknown.
    Unknown,
}

pub(super) fn parse(ctx: &mut Ctx, mut section: Section) -> Option<EventHubConfig> {
    let (connection, entity_path) = connection(ctx, &mut section);
    let name = hub_name(ctx, &mut section, entity_path);
    let consumer_group = match section.take("consumer_group") {
        Some(entry) => ctx.name(&entry).and_then(|group| {
            let check = check_consumer_group(&group);
            ctx.checked(&entry, group, check)
        }),
        None => Some(DEFAULT_CONSUMER_GROUP.to_owned()),
    };
    let start_position = match section.take("start_position") {
        Some(entry) => ctx.string(&entry).and_then(|text| {
            parse_start_position(&text)
                .map_err(|message| ctx.error(&entry.key, entry.line, message))
                .ok()
        }),
        None => Some(EventPosition::Earliest),
    };
    let prefetch = section.integer(ctx, "prefetch", DEFAULT_PREFETCH.into(), 1..=5000);
    let prefetch_bytes = section.size(
        ctx,
        "prefetch_bytes",
        DEFAULT_PREFETCH_BYTES,
        64 * KIB..=GIB,
    );
    let owner_level = section.integer(ctx, "owner_level", 0, 0..=i64::MAX);
    let token_lifetime = section.duration(
        ctx,
        "token_lifetime",
        DEFAULT_TOKEN_LIFETIME,
        5 * SECOND..=24 * HOUR,
    );
    let ca_file = section.take("ca_file").and_then(|entry| {
        let path = ctx.path(&entry)?;
        if !path.is_file() {
            let message = format!("file {path:?} does not exist");
            ctx.error(&entry.key, entry.line, message);
            return None;
        }
        // Read as the client will read it when it connects.
        let check = check_ca_file(&path)
            .map_err(|reason| format!("file {path:?} is not usable as PEM trust roots: {reason}"));
        ctx.checked(&entry, path, check)
    });
    let connect_timeout = section.duration(
        ctx,
        "connect_timeout",
        DEFAULT_CONNECT_TIMEOUT,
        SECOND..=10 * MINUTE,
    );
    let retry_min_backoff = section.duration(
        ctx,
        "retry_min_backoff",
        DEFAULT_RETRY_MIN_BACKOFF,
        Duration::from_millis(1)..=MINUTE,
    );
    let max_backoff_entry = section.take("retry_max_backoff");
    let retry_max_backoff = match &max_backoff_entry {
        Some(entry) => ctx.duration(entry, Duration::from_millis(1)..=HOUR),
        None => Some(DEFAULT_RETRY_MAX_BACKOFF),
    };
    if let Some(max) = retry_max_backoff.filter(|max| *max < retry_min_backoff) {
        let line = section
            .line_of("retry_max_backoff")
            .or(section.line_of("retry_min_backoff"));
        let message = format!(
            "retry_max_backoff ({}) must not be shorter than retry_min_backoff ({})",
            super::units::format_duration(max),
            super::units::format_duration(retry_min_backoff)
        );
        ctx.error(&section.key("retry_max_backoff"), line, message);
    }
    let stuck_partition_timeout = section.duration(
        ctx,
        "stuck_partition_timeout",
        DEFAULT_STUCK_PARTITION_TIMEOUT,
        SECOND..=HOUR,
    );
    let transport = section.choice(
        ctx,
        "transport",
        "transport",
        &[
            ("amqp", Transport::Amqp),
            ("amqp_websockets", Transport::AmqpWebSockets),
        ],
        Transport::Amqp,
    );
    let custom_endpoint = section.take("custom_endpoint").and_then(|entry| {
        let text = ctx.name(&entry)?;
        let parsed = parse_custom_endpoint(&text);
        parsed
            .map_err(|problem| ctx.error(&entry.key, entry.line, problem))
            .ok()
    });
    let (proxy, ignored_proxy_variable) = match transport {
        Lookup::Present(transport) => proxy_route(ctx, &mut section, transport),
        _ => (None, None),
    };
    section.finish(ctx, KEYS, &[], "");
    Some(EventHubConfig {
        transport: match transport {
            Lookup::Present(transport) => transport,
            _ => return None,
        },
        custom_endpoint,
        proxy: proxy?,
        ignored_proxy_variable,
        connection: connection?,
        name: name?,
        consumer_group: consumer_group?,
        start_position: start_position?,
        prefetch: u32::try_from(prefetch).ok()?,
        prefetch_bytes,
        owner_level,
        token_lifetime,
        ca_file,
        connect_timeout,
        retry_min_backoff,
        retry_max_backoff: retry_max_backoff?,
        stuck_partition_timeout,
    })
}

/// `host`, `host:port`, or a URL such as `sb://host:port/` (the SDKs' `custom_endpoint_address`
/// form): where TCP goes instead of the namespace.
fn parse_custom_endpoint(text: &str) -> Result<(String, Option<u16>), String> {
    let authority = match text.split_once("://") {
        Some((scheme, rest)) => {
            let known = ["sb", "amqps", "amqp", "https", "wss", "ws"];
            if !known.iter().any(|known| scheme.eq_ignore_ascii_case(known)) {
                return Err(format!(
                    "unknown scheme {scheme:?} in custom_endpoint; write host:port, or a URL \
                     such as sb://host:port"
                ));
            }
            rest
        }
        None => text,
    };
    let authority = authority.trim_end_matches('/');
    if authority.contains('/') || authority.contains('@') || authority.contains('?') {
        return Err(format!(
            "custom_endpoint {text:?} must be a host and optional port, without a path"
        ));
    }
    proxy::split_host_port(authority)
        .map_err(|problem| format!("custom_endpoint {text:?} {problem}"))
}

/// The proxy WebSockets go through: `proxy`, else `HTTPS_PROXY`; `NO_PROXY` bypasses either.
/// Plain AMQP cannot be tunnelled by the SDKs' convention: a configured proxy is an error with
/// it, and an environment one is ignored (named, for a log line at start).
fn proxy_route(
    ctx: &mut Ctx,
    section: &mut Section,
    transport: Transport,
) -> (Option<ProxyRoute>, Option<&'static str>) {
    let no_proxy = ctx
        .env_var(&NO_PROXY_VARS)
        .map(|(_, list)| NoProxy::parse(&list))
        .unwrap_or_default();
    if let Some(entry) = section.take("proxy") {
        let Some(url) = ctx.secret(&entry) else {
            return (None, None);
        };
        if transport == Transport::Amqp {
            let message = "a proxy needs transport = \"amqp_websockets\": plain AMQP (port \
                           5671) cannot go through an HTTP proxy";
            ctx.error(&entry.key, entry.line, message);
            return (None, None);
        }
        return match proxy::parse_proxy_url(url.expose(), &entry.key) {
            Ok(proxy) => (
                Some(ProxyRoute {
                    proxy: Some(proxy),
                    no_proxy,
                }),
                None,
            ),
            Err(problem) => {
                ctx.error(&entry.key, entry.line, problem);
                (None, None)
            }
        };
    }
    match ctx.env_var(&HTTPS_PROXY_VARS) {
        None => (Some(ProxyRoute::direct()), None),
        Some((variable, _)) if transport == Transport::Amqp => {
            (Some(ProxyRoute::direct()), Some(variable))
        }
        Some((variable, url)) => match proxy::parse_proxy_url(&url, variable) {
            Ok(proxy) => (
                Some(ProxyRoute {
                    proxy: Some(proxy),
                    no_proxy,
                }),
                None,
            ),
            Err(problem) => {
                let message = format!("{problem} (the proxy for transport = \"amqp_websockets\")");
                ctx.error(&format!("environment variable {variable}"), None, message);
                (None, None)
            }
        },
    }
}

/// Exactly one of: `connection_string`, `connection_string_file`, or
/// `fully_qualified_namespace` with `credential`.
fn connection(ctx: &mut Ctx, section: &mut Section) -> (Option<EventHubConnection>, EntityPath) {
    let connection_string = section.secret_or_file(ctx, "connection_string");
    let namespace = section.take("fully_qualified_namespace");
    let credential = section.take("credential");
    if !matches!(connection_string, Lookup::Absent) {
        if let Some(other) = namespace.as_ref().or(credential.as_ref()) {
            let message = "connection_string and fully_qualified_namespace/credential are \
                           exclusive; set one";
            ctx.error(&other.key, other.line, message);
            return (None, EntityPath::Unknown);
        }
    }
    match connection_string {
        Lookup::Present((secret, entry)) => match ConnectionString::parse(secret.expose()) {
            Ok(parsed) => {
                let entity_path = EntityPath::Known(parsed.entity_path.clone());
                let check = check_signature(&parsed.auth, SystemTime::now());
                let parsed = ctx.checked(&entry, parsed, check);
                (
                    parsed.map(EventHubConnection::ConnectionString),
                    entity_path,
                )
            }
            Err(error) => {
                ctx.error(&entry.key, entry.line, error.to_string());
                (None, EntityPath::Unknown)
            }
        },
        Lookup::Invalid => (None, EntityPath::Unknown),
        Lookup::Absent => match (namespace, credential) {
            (Some(namespace), Some(credential)) => {
                let host = ctx.name(&namespace).and_then(|host| {
                    FullyQualifiedNamespace::parse(&host)
                        .map_err(|problem| ctx.error(&namespace.key, namespace.line, problem))
                        .ok()
                });
                let credential = credential::parse(ctx, &credential);
                let connection =
                    host.zip(credential)
                        .map(|(host, credential)| EventHubConnection::Credential {
                            fully_qualified_namespace: host,
                            credential,
                        });
                (connection, EntityPath::Known(None))
            }
            (Some(namespace), None) => {
                let message = "fully_qualified_namespace needs a credential, such as \
                               credential = { type = \"workload_identity\" }";
                ctx.error(&namespace.key, namespace.line, message);
                (None, EntityPath::Known(None))
            }
            (None, Some(credential)) => {
                let message = "credential needs fully_qualified_namespace";
                ctx.error(&credential.key, credential.line, message);
                (None, EntityPath::Known(None))
            }
            (None, None) => {
                let message = "no connection: set connection_string, connection_string_file, \
                               or fully_qualified_namespace with credential";
                ctx.error(&section.path, section.line, message);
                (None, EntityPath::Known(None))
            }
        },
    }
}

/// The `name` key, else the connection string's `EntityPath`; both must agree.
fn hub_name(ctx: &mut Ctx, section: &mut Section, entity_path: EntityPath) -> Option<String> {
    let Some(entry) = section.take("name") else {
        return match entity_path {
            EntityPath::Known(Some(path)) => Some(path),
            EntityPath::Known(None) => {
                let message = "missing hub name: set name, or use a connection string with \
                               EntityPath";
                ctx.error(&section.key("name"), section.line, message);
                None
            }
            EntityPath::Unknown => None,
        };
    };
    let name = ctx.name(&entry)?;
    let check = check_entity_name("hub name", &name);
    let name = ctx.checked(&entry, name, check)?;
    match entity_path {
        EntityPath::Known(Some(path)) if path != name => {
            let message = format!(
                "name {name:?} differs from the connection string's EntityPath {path:?}; \
                 remove one"
            );
            ctx.error(&entry.key, entry.line, message);
            None
        }
        _ => Some(name),
    }
}

/// Event Hubs entity names: letters, digits, `.`, `-`, `_`, starting and ending with a letter or
/// digit, at most 256 characters.
fn check_entity_name(what: &str, name: &str) -> Result<(), String> {
    let alphanumeric_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let allowed = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if alphanumeric_ends && allowed && name.len() <= 256 {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} {name:?}: use letters, digits, '.', '-' and '_', starting and \
             ending with a letter or digit"
        ))
    }
}

fn check_consumer_group(group: &str) -> Result<(), String> {
    if group.eq_ignore_ascii_case(DEFAULT_CONSUMER_GROUP) {
        return Ok(());
    }
    check_entity_name("consumer group", group)
}

/// A pre-signed `SharedAccessSignature` must carry its expiry (`se=`) and not have reached it:
/// the connection's put-token refuses it otherwise, which stops hubcap at start.
fn check_signature(auth: &ConnectionStringAuth, now: SystemTime) -> Result<(), String> {
    let ConnectionStringAuth::SharedAccessSignature(token) = auth else {
        return Ok(());
    };
    match expiry_of(token) {
        None => Err("the connection string's SharedAccessSignature has no se= expiry".into()),
        Some(expiry) if expiry <= now => {
            let expired = OffsetDateTime::from(expiry)
                .format(&Rfc3339)
                .unwrap_or_else(|_| "the past".into());
            Err(format!(
                "the connection string's SharedAccessSignature expired at {expired}; sign a new \
                 one, or use SharedAccessKeyName and SharedAccessKey, whose tokens hubcap renews"
            ))
        }
        Some(_) => Ok(()),
    }
}

/// `earliest`, `latest`, `seq:<N>` or `time:<RFC 3339>`; the event named is included.
pub(super) fn parse_start_position(text: &str) -> Result<EventPosition, String> {
    match text {
        "earliest" => return Ok(EventPosition::Earliest),
        "latest" => return Ok(EventPosition::Latest),
        _ => {}
    }
    if let Some(number) = text.strip_prefix("seq:") {
        return match number.trim().parse::<i64>() {
            Ok(sequence_number) if sequence_number >= 0 => Ok(EventPosition::SequenceNumber {
                sequence_number,
                inclusive: true,
            }),
            _ => Err(format!(
                "invalid start_position {text:?}: expected seq:<sequence number>, a whole \
                 number of at least 0"
            )),
        };
    }
    if let Some(moment) = text.strip_prefix("time:") {
        return match OffsetDateTime::parse(moment.trim(), &Rfc3339) {
            Ok(moment) => Ok(EventPosition::EnqueuedTime {
                // The service counts from the Unix epoch; earlier times mean its start.
                enqueued_time_ms: SystemTime::from(moment)
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |since| {
                        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
                    }),
                inclusive: true,
            }),
            Err(_) => Err(format!(
                "invalid start_position {text:?}: expected time:<RFC 3339 time>, such as \
                 time:2024-05-01T00:00:00Z"
            )),
        };
    }
    let expected = "expected \"earliest\", \"latest\", \"seq:<sequence number>\" or \
                    \"time:<RFC 3339 time>\"";
    match did_you_mean(text, &["earliest", "latest"]) {
        Some(near) => Err(format!(
            "unknown start_position {text:?}; did you mean \"{near}\"? ({expected})"
        )),
        None => Err(format!("unknown start_position {text:?}; {expected}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_in_every_form() {
        assert_eq!(
            parse_start_position("earliest"),
            Ok(EventPosition::Earliest)
        );
        assert_eq!(parse_start_position("latest"), Ok(EventPosition::Latest));
        assert_eq!(
            parse_start_position("seq:42"),
            Ok(EventPosition::SequenceNumber {
                sequence_number: 42,
                inclusive: true
            })
        );
        let expected = EventPosition::EnqueuedTime {
            enqueued_time_ms: 1_714_521_600_000,
            inclusive: true,
        };
        assert_eq!(
            parse_start_position("time:2024-05-01T00:00:00Z"),
            Ok(expected.clone())
        );
        assert_eq!(
            parse_start_position("time:2024-05-01T02:00:00+02:00"),
            Ok(expected)
        );
    }

    #[test]
    fn bad_start_positions_say_what_is_expected() {
        let cases = [
            ("earlist", "did you mean \"earliest\"?"),
            ("seq:-1", "expected seq:<sequence number>"),
            ("seq:abc", "expected seq:<sequence number>"),
            ("time:yesterday", "expected time:<RFC 3339 time>"),
            ("time:2024-05-01", "expected time:<RFC 3339 time>"),
            ("beginning", "expected \"earliest\", \"latest\""),
        ];
        for (text, expected) in cases {
            let error = parse_start_position(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn entity_and_namespace_names() {
        assert!(check_entity_name("hub name", "telemetry-2.raw_x").is_ok());
        assert!(check_entity_name("hub name", "-telemetry").is_err());
        assert!(check_entity_name("hub name", "tele/metry").is_err());
        assert!(check_consumer_group("$Default").is_ok());
        assert!(check_consumer_group("$other").is_err());
    }

    #[test]
    fn pre_signed_tokens_need_an_expiry_still_to_come() {
        let now = UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let signed = |token: &str| {
            ConnectionStringAuth::SharedAccessSignature(crate::secret::Secret::new(token))
        };
        let valid = signed("SharedAccessSignature sr=a&sig=b&se=2000000001&skn=c");
        assert_eq!(check_signature(&valid, now), Ok(()));
        let expired = signed("SharedAccessSignature sr=a&sig=b&se=1999999999&skn=c");
        let problem = check_signature(&expired, now).unwrap_err();
        assert!(
            problem.contains("expired at 2033-05-18T03:33:19Z"),
            "{problem}"
        );
        let no_expiry = signed("SharedAccessSignature sr=a&sig=b&skn=c");
        let problem = check_signature(&no_expiry, now).unwrap_err();
        assert!(problem.contains("no se= expiry"), "{problem}");
    }
}
