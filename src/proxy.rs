//! HTTP proxies: where a proxy comes from (a config key or `HTTPS_PROXY`), which hosts bypass it
//! (`NO_PROXY`), and the CONNECT tunnel AMQP over WebSockets goes through.
//!
//! The rules are curl's, which the Azure SDKs and most tools follow: `HTTPS_PROXY` (or
//! `https_proxy`) for HTTPS destinations, `NO_PROXY` (or `no_proxy`) a comma-separated list of
//! host names (matching the name and its subdomains; a leading `.` is ignored), IP addresses, or
//! `*` for every host. A proxy from a config key is bypassed for `NO_PROXY` hosts too. The
//! proxy's password is a [`Secret`]: no `Debug`, log line or error shows it.

use std::time::Duration;

use base64::Engine;
use percent_encoding::percent_decode_str;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::secret::Secret;

/// The environment variables, in the order they are read (the upper-case form wins, as in curl
/// for `HTTPS_PROXY`).
pub const HTTPS_PROXY_VARS: [&str; 2] = ["HTTPS_PROXY", "https_proxy"];
pub const NO_PROXY_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// An HTTP proxy, spoken to in plain HTTP (CONNECT for tunnels).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpProxy {
    pub host: String,
    pub port: u16,
    /// Basic credentials from the URL's user info, percent-decoded.
    pub credentials: Option<(String, Secret)>,
    /// Where it was set (`eventhub.proxy`, `HTTPS_PROXY`), for messages.
    pub source: String,
}

impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProxy")
            .field("address", &self.address())
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl HttpProxy {
    /// `host:port`, safe to show.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `http://host:port`, without credentials.
    pub fn url(&self) -> String {
        format!("http://{}", self.address())
    }

    /// The `Proxy-Authorization` header's value, if the proxy has credentials.
    fn authorization(&self) -> Option<String> {
        self.credentials.as_ref().map(|(user, password)| {
            let pair = format!("{user}:{}", password.expose());
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        })
    }
}

/// Parses `http://[user[:password]@]host[:port][/]` (the scheme may be left out, as curl
/// allows). Errors never repeat the URL: it may carry a password.
pub fn parse_proxy_url(text: &str, source: &str) -> Result<HttpProxy, String> {
    let text = text.trim();
    let rest = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(
                "an https:// proxy (TLS to the proxy itself) is not supported; use the \
                 proxy's http:// address, through which hubcap tunnels TLS with CONNECT"
                    .into(),
            )
        }
        Some((scheme, _)) => {
            return Err(format!(
                "unsupported proxy scheme {scheme:?}: use http://host:port"
            ))
        }
        None => text,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(
            "a proxy URL has no path or query: use http://[user:password@]host:port".into(),
        );
    }
    let (user_info, authority) = match rest.rsplit_once('@') {
        Some((user_info, authority)) => (Some(user_info), authority),
        None => (None, rest),
    };
    let credentials = match user_info {
        None => None,
        Some(user_info) => {
            let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
            let decode = |part: &str| {
                percent_decode_str(part)
                    .decode_utf8()
                    .map(|decoded| decoded.into_owned())
                    .map_err(|_| {
                        "the proxy's user or password is not UTF-8 once decoded".to_owned()
                    })
            };
            let user = decode(user)?;
            if user.is_empty() {
                return Err("the proxy URL has credentials without a user name".into());
            }
            Some((user, Secret::new(decode(password)?)))
        }
    };
    let (host, port) =
        split_host_port(authority).map_err(|problem| format!("the proxy address {problem}"))?;
    Ok(HttpProxy {
        host,
        port: port.unwrap_or(80),
        credentials,
        source: source.to_owned(),
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
pub fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| "has an unclosed '['".to_owned())?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err("has text after ']' that is not :port".into()),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => Some(port),
            _ => return Err(format!("has an invalid port {port:?} (expected 1-65535)")),
        },
    };
    Ok((host.to_owned(), port))
}

/// The `NO_PROXY` list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    entries: Vec<String>,
}

impl NoProxy {
    pub fn parse(text: &str) -> Self {
        let entries = text
            .split(',')
            .map(|entry| entry.trim().trim_start_matches('.').to_ascii_lowercase())
            .map(|entry| {
                // `[::1]` and `::1` name the same host; `host:port` entries match the host.
                let entry = entry
                    .strip_prefix('[')
                    .and_then(|inner| inner.split_once(']').map(|(host, _)| host.to_owned()))
                    .unwrap_or(entry);
                match entry.rsplit_once(':') {
                    Some((host, port))
                        if !host.contains(':') && port.chars().all(|c| c.is_ascii_digit()) =>
                    {
                        host.to_owned()
                    }
                    _ => entry,
                }
            })
            .filter(|entry| !entry.is_empty())
            .collect();
        Self { entries }
    }

    /// Whether `host` goes direct: `*`, the host itself, or a domain it is under.
    pub fn bypasses(&self, host: &str) -> bool {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.entries.iter().any(|entry| {
            entry == "*"
                || host == *entry
                || (host.len() > entry.len()
                    && host.ends_with(entry.as_str())
                    && host.as_bytes()[host.len() - entry.len() - 1] == b'.')
        })
    }
}

/// How traffic of one kind (the Event Hubs connection, Blob Storage) reaches its endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRoute {
    pub proxy: Option<HttpProxy>,
    pub no_proxy: NoProxy,
}

impl ProxyRoute {
    /// Straight to every endpoint.
    pub fn direct() -> Self {
        Self::default()
    }

    /// The proxy to reach `host` through, or `None` to connect directly.
    pub fn for_host(&self, host: &str) -> Option<&HttpProxy> {
        self.proxy
            .as_ref()
            .filter(|_| !self.no_proxy.bypasses(host))
    }
}

/// A proxy's answer to CONNECT is a few short header lines; anything longer is not a proxy.
const MAX_CONNECT_RESPONSE: usize = 16 * 1024;

/// Opens a TCP connection to `proxy` and asks it, with CONNECT, for a tunnel to
/// `target_host:target_port`. The stream returned carries the tunnel: TLS and the WebSocket
/// upgrade go inside it. Errors say whether the proxy, or the destination behind it, failed.
pub async fn tunnel(
    proxy: &HttpProxy,
    target_host: &str,
    target_port: u16,
    timeout: Duration,
) -> Result<TcpStream, String> {
    let work = async {
        let mut stream = TcpStream::connect((proxy.host.as_str(), proxy.port))
            .await
            .map_err(|e| {
                format!(
                    "cannot reach proxy {} ({}): {e}",
                    proxy.address(),
                    proxy.source
                )
            })?;
        let _ = stream.set_nodelay(true);
        let target = if target_host.contains(':') {
            format!("[{target_host}]:{target_port}")
        } else {
            format!("{target_host}:{target_port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = proxy.authorization() {
            request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("proxy {} closed the connection: {e}", proxy.address()))?;
        // Read byte by byte up to the blank line: whatever follows belongs to the tunnel, and
        // the answer is a few dozen bytes, once per connection.
        let mut response = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !response.ends_with(b"\r\n\r\n") {
            if response.len() >= MAX_CONNECT_RESPONSE {
                return Err(format!(
                    "proxy {} answered CONNECT with more than {MAX_CONNECT_RESPONSE} bytes of \
                     headers",
                    proxy.address()
                ));
            }
            match stream.read(&mut byte).await {
                Ok(0) => {
                    return Err(format!(
                        "proxy {} closed the connection before answering CONNECT",
                        proxy.address()
                    ))
                }
                Ok(_) => response.push(byte[0]),
                Err(e) => return Err(format!("proxy {}: {e}", proxy.address())),
            }
        }
        let status_line = response
            .split(|&b| b == b'\n')
            .next()
            .map(|line| String::from_utf8_lossy(line).trim().to_owned())
            .unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok());
        match status {
            Some(200..=299) => Ok(stream),
            Some(407) => Err(format!(
                "proxy {} requires authentication (407){}",
                proxy.address(),
                if proxy.credentials.is_some() {
                    ": it refused the user and password given"
                } else {
                    ": give user:password in the proxy URL"
                }
            )),
            Some(code) => Err(format!(
                "proxy {} refused the tunnel to {target} ({code}: {})",
                proxy.address(),
                status_line
                    .splitn(3, ' ')
                    .nth(2)
                    .unwrap_or("no reason given")
            )),
            None => Err(format!(
                "proxy {} answered CONNECT with something that is not HTTP",
                proxy.address()
            )),
        }
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        format!(
            "proxy {} did not open a tunnel to {target_host}:{target_port} within {}s",
            proxy.address(),
            timeout.as_secs()
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_in_the_forms_people_write() {
        let proxy = parse_proxy_url("http://proxy.corp:3128", "HTTPS_PROXY").unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port), ("proxy.corp", 3128));
        assert!(proxy.credentials.is_none());
        let proxy = parse_proxy_url("proxy.corp:8080/", "x").unwrap();
        assert_eq!((proxy.host.as_str(), proxy.port), ("proxy.corp", 8080));
        let proxy = parse_proxy_url("http://proxy.corp", "x").unwrap();
        assert_eq!(proxy.port, 80);
        let proxy = parse_proxy_url("http://[::1]:3128", "x").unwrap();
        assert_eq!(
            (proxy.host.as_str(), proxy.address()),
            ("::1", "[::1]:3128".into())
        );
        let proxy = parse_proxy_url("http://al%40ice:p%3Ass@10.0.0.1:3128", "x").unwrap();
        let (user, password) = proxy.credentials.clone().unwrap();
        assert_eq!((user.as_str(), password.expose()), ("al@ice", "p:ss"));
        assert_eq!(
            proxy.authorization().unwrap(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("al@ice:p:ss")
            )
        );
    }

    #[test]
    fn bad_proxy_urls_say_why_without_repeating_the_password() {
        let cases = [
            ("https://proxy:3128", "https:// proxy"),
            ("socks5://proxy:1080", "unsupported proxy scheme \"socks5\""),
            ("http://proxy:99999", "invalid port \"99999\""),
            ("http://proxy:3128/path", "no path or query"),
            ("http://:3128", "has no host"),
            ("http://:hunter2@proxy:3128", "without a user name"),
        ];
        for (url, expected) in cases {
            let error = parse_proxy_url(url, "x").unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }

    #[test]
    fn debug_shows_the_address_and_user_but_never_the_password() {
        let proxy = parse_proxy_url("http://alice:hunter2@proxy:3128", "eventhub.proxy").unwrap();
        let shown = format!("{proxy:?}");
        assert!(
            shown.contains("proxy:3128") && shown.contains("alice"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn no_proxy_matches_hosts_their_subdomains_addresses_and_star() {
        let list =
            NoProxy::parse(" .corp.example, 127.0.0.1,[::1]:443, blob.core.windows.net:443 ,");
        assert!(list.bypasses("corp.example"));
        assert!(list.bypasses("ns.Corp.Example"));
        assert!(!list.bypasses("notcorp.example"));
        assert!(list.bypasses("127.0.0.1"));
        assert!(list.bypasses("[::1]"));
        assert!(list.bypasses("acct.blob.core.windows.net"));
        assert!(!list.bypasses("ns.servicebus.windows.net"));
        assert!(NoProxy::parse("*").bypasses("anything"));
        assert!(!NoProxy::parse("").bypasses("anything"));
    }

    #[test]
    fn a_route_bypasses_no_proxy_hosts() {
        let route = ProxyRoute {
            proxy: Some(parse_proxy_url("http://proxy:3128", "x").unwrap()),
            no_proxy: NoProxy::parse("internal.example"),
        };
        assert!(route.for_host("ns.servicebus.windows.net").is_some());
        assert!(route.for_host("ns.internal.example").is_none());
        assert!(ProxyRoute::direct().for_host("anything").is_none());
    }

    #[tokio::test]
    async fn a_tunnel_sends_connect_with_credentials_and_hands_over_the_stream() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !seen.ends_with(b"\r\n\r\n") {
                socket.read_exact(&mut byte).await.unwrap();
                seen.push(byte[0]);
            }
            // The answer and the first tunnelled bytes in one write: none may be lost.
            socket
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\nAMQP")
                .await
                .unwrap();
            String::from_utf8(seen).unwrap()
        });
        let proxy = parse_proxy_url(&format!("http://u:p@127.0.0.1:{port}"), "x").unwrap();
        let mut stream = tunnel(&proxy, "ns.example", 443, Duration::from_secs(5))
            .await
            .unwrap();
        let mut first = [0u8; 4];
        stream.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"AMQP");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("CONNECT ns.example:443 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("Proxy-Authorization: Basic dTpw\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_refused_tunnel_names_the_status() {
        for (answer, expected) in [
            (
                &b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"[..],
                "requires authentication",
            ),
            (&b"HTTP/1.0 403 Forbidden\r\n\r\n"[..], "(403: Forbidden)"),
            (&b"SSH-2.0-OpenSSH\r\n\r\n"[..], "not HTTP"),
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = socket.read(&mut buf).await;
                socket.write_all(answer).await.unwrap();
            });
            let proxy = parse_proxy_url(&format!("127.0.0.1:{port}"), "x").unwrap();
            let error = tunnel(&proxy, "ns.example", 443, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
    }
}
