//! Event Hubs connection strings in the official format:
//! `Endpoint=sb://<host>[:port]/;SharedAccessKeyName=..;SharedAccessKey=..[;EntityPath=..]`, or
//! `SharedAccessSignature=SharedAccessSignature sr=..&sig=..&se=..&skn=..` instead of the key
//! pair, and `UseDevelopmentEmulator=true` for plain AMQP (port 5672 unless given).

use crate::secret::Secret;

/// A parsed connection string. Keys are matched case-insensitively, as the .NET and Rust SDKs do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// Host of the `Endpoint`, without scheme, port or path.
    pub host: String,
    /// Port given in the `Endpoint`, if any.
    pub port: Option<u16>,
    pub auth: ConnectionStringAuth,
    /// `EntityPath`: the event hub name, when the string is scoped to one hub.
    pub entity_path: Option<String>,
    /// `UseDevelopmentEmulator=true`: plain AMQP instead of TLS.
    pub use_development_emulator: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionStringAuth {
    /// A key the client signs its own (refreshable) SAS tokens with.
    SharedAccessKey { key_name: String, key: Secret },
    /// A pre-signed token; it cannot be refreshed and stops working when it expires.
    SharedAccessSignature(Secret),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    #[error("connection string has no Endpoint")]
    MissingEndpoint,
    #[error("connection string Endpoint '{endpoint}' is not sb://<host>[:port]/")]
    BadEndpoint { endpoint: String },
    #[error(
        "connection string needs SharedAccessKeyName and SharedAccessKey, or SharedAccessSignature"
    )]
    MissingCredentials,
    #[error("connection string has both SharedAccessKey and SharedAccessSignature; use one")]
    ConflictingCredentials,
    #[error("connection string part {position} (counting from 1) is not Key=Value")]
    MalformedPart { position: usize },
    #[error("connection string UseDevelopmentEmulator must be true or false, not '{value}'")]
    BadEmulatorFlag { value: String },
}

impl ConnectionString {
    pub fn parse(text: &str) -> Result<Self, ConnectionStringError> {
        let mut endpoint = None;
        let mut key_name = None;
        let mut key = None;
        let mut signature = None;
        let mut entity_path = None;
        let mut emulator = false;
        let parts = text.split(';').map(str::trim).filter(|p| !p.is_empty());
        for (index, part) in parts.enumerate() {
            // Never echo a malformed part: it may hold a key.
            let Some((name, value)) = part.split_once('=') else {
                return Err(ConnectionStringError::MalformedPart {
                    position: index + 1,
                });
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "endpoint" => endpoint = Some(value.to_owned()),
                "sharedaccesskeyname" => key_name = Some(value.to_owned()),
                "sharedaccesskey" => key = Some(Secret::new(value)),
                "sharedaccesssignature" => signature = Some(Secret::new(value)),
                "entitypath" if !value.is_empty() => entity_path = Some(value.to_owned()),
                "usedevelopmentemulator" => {
                    emulator = match value.to_ascii_lowercase().as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(ConnectionStringError::BadEmulatorFlag {
                                value: value.to_owned(),
                            })
                        }
                    }
                }
                // Other keys (TransportType, ...) are accepted and ignored, as the SDKs do.
                _ => {}
            }
        }
        let endpoint = endpoint.ok_or(ConnectionStringError::MissingEndpoint)?;
        let (host, port) = parse_endpoint(&endpoint)?;
        let auth = match (key_name, key, signature) {
            (_, Some(_), Some(_)) => return Err(ConnectionStringError::ConflictingCredentials),
            (Some(key_name), Some(key), None) if !key_name.is_empty() && !key.is_empty() => {
                ConnectionStringAuth::SharedAccessKey { key_name, key }
            }
            (_, None, Some(signature)) if !signature.is_empty() => {
                ConnectionStringAuth::SharedAccessSignature(signature)
            }
            _ => return Err(ConnectionStringError::MissingCredentials),
        };
        Ok(Self {
            host,
            port,
            auth,
            entity_path,
            use_development_emulator: emulator,
        })
    }

    /// Namespace host as the Python SDK and its checkpoint store name it: with `:port` when the
    /// endpoint had one. Checkpoint blob names start with this.
    pub fn fully_qualified_namespace(&self) -> String {
        match self.port {
            Some(port) => format!("{}:{port}", self.host),
            None => self.host.clone(),
        }
    }
}

/// A namespace host with an optional port, as `fully_qualified_namespace` names it for Entra ID:
/// `mynamespace.servicebus.windows.net`, or `localhost:5671` for a proxy or emulator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullyQualifiedNamespace {
    /// Host name, without scheme, port or path.
    pub host: String,
    /// The port, when one is given; amqps' 5671 otherwise.
    pub port: Option<u16>,
}

impl FullyQualifiedNamespace {
    /// A host name (letters, digits, `.` and `-`), optionally with `:port`, without scheme or
    /// path. The message names what is expected, with the text as found.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected a host name such as \"mynamespace.servicebus.windows.net\"";
        if text.contains("://") || text.contains('/') {
            return Err(format!(
                "{expected}, without scheme or path; found {text:?}"
            ));
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse::<u16>())),
            None => (text, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        match port {
            Some(Ok(port)) if host_ok => Ok(Self {
                host: host.to_owned(),
                port: Some(port),
            }),
            None if host_ok => Ok(Self {
                host: host.to_owned(),
                port: None,
            }),
            _ => Err(format!("{expected}, found {text:?}")),
        }
    }
}

impl std::fmt::Display for FullyQualifiedNamespace {
    /// `host` or `host:port`, the form checkpoint records start with.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => write!(f, "{}:{port}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

fn parse_endpoint(endpoint: &str) -> Result<(String, Option<u16>), ConnectionStringError> {
    let bad = || ConnectionStringError::BadEndpoint {
        endpoint: endpoint.to_owned(),
    };
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad());
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => {
            let port = port.parse().map_err(|_| bad())?;
            Ok((host.to_owned(), Some(port)))
        }
        Some(_) => Err(bad()),
        None => Ok((authority.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn azure_connection_string_with_entity_path() {
        let cs = ConnectionString::parse(
            "Endpoint=sb://myns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=abc+def=;EntityPath=telemetry",
        )
        .unwrap();
        assert_eq!(cs.host, "myns.servicebus.windows.net");
        assert_eq!(cs.port, None);
        assert_eq!(cs.entity_path.as_deref(), Some("telemetry"));
        assert!(!cs.use_development_emulator);
        assert_eq!(
            cs.auth,
            ConnectionStringAuth::SharedAccessKey {
                key_name: "listen".into(),
                key: Secret::new("abc+def=")
            }
        );
        assert_eq!(
            cs.fully_qualified_namespace(),
            "myns.servicebus.windows.net"
        );
    }

    #[test]
    fn emulator_connection_string_keeps_the_port_and_any_key_case() {
        let cs = ConnectionString::parse(
            "endpoint=sb://127.0.0.1:5673;sharedaccesskeyname=Root;SHAREDACCESSKEY=k;UseDevelopmentEmulator=true;",
        )
        .unwrap();
        assert_eq!(cs.port, Some(5673));
        assert!(cs.use_development_emulator);
        assert_eq!(cs.fully_qualified_namespace(), "127.0.0.1:5673");
    }

    #[test]
    fn pre_signed_token() {
        let cs = ConnectionString::parse(
            "Endpoint=sb://h/;SharedAccessSignature=SharedAccessSignature sr=a&sig=b&se=1&skn=c",
        )
        .unwrap();
        assert!(matches!(
            cs.auth,
            ConnectionStringAuth::SharedAccessSignature(_)
        ));
    }

    #[test]
    fn errors_name_the_problem_without_the_key() {
        let cases = [
            ("SharedAccessKeyName=a;SharedAccessKey=b", ConnectionStringError::MissingEndpoint),
            ("Endpoint=sb://h/", ConnectionStringError::MissingCredentials),
            (
                "Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey=b;SharedAccessSignature=s",
                ConnectionStringError::ConflictingCredentials,
            ),
            (
                "Endpoint=sb://h:x/;SharedAccessKeyName=a;SharedAccessKey=b",
                ConnectionStringError::BadEndpoint { endpoint: "sb://h:x/".into() },
            ),
            (
                "Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=yes",
                ConnectionStringError::BadEmulatorFlag { value: "yes".into() },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                ConnectionString::parse(text).unwrap_err(),
                expected,
                "{text}"
            );
        }
        let err = ConnectionString::parse("Endpoint=sb://h/;SharedAccessKeysupersecretvalue")
            .unwrap_err();
        assert_eq!(err, ConnectionStringError::MalformedPart { position: 2 });
        assert!(!err.to_string().contains("supersecret"), "{err}");
    }

    #[test]
    fn namespaces_are_host_names_with_an_optional_port() {
        let parsed = FullyQualifiedNamespace::parse("ns.servicebus.windows.net").unwrap();
        assert_eq!(parsed.to_string(), "ns.servicebus.windows.net");
        assert_eq!(parsed.port, None);
        let parsed = FullyQualifiedNamespace::parse("localhost:5672").unwrap();
        assert_eq!(
            (parsed.host.as_str(), parsed.port),
            ("localhost", Some(5672))
        );
        let scheme = FullyQualifiedNamespace::parse("sb://ns.servicebus.windows.net/").unwrap_err();
        assert!(scheme.contains("without scheme"), "{scheme}");
        for bad in [
            "ns:port",
            "ns:",
            ":5671",
            "ns_1.servicebus.windows.net",
            "ns:70000",
        ] {
            assert!(FullyQualifiedNamespace::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let cs = ConnectionString::parse(
            "Endpoint=sb://h/;SharedAccessKeyName=a;SharedAccessKey=topsecret",
        )
        .unwrap();
        assert!(!format!("{cs:?}").contains("topsecret"));
    }
}
