//! One AMQP connection to the namespace, shared by every partition receiver and the management
//! link, reopened on demand after it breaks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use amqp_frame_guard::FrameGuard;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::Connection;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::auth::{renewal_time, CbsLink, Credential};
use super::error::{reason, EventHubsError};
use super::transport::{self, Route, Transport};
use crate::proxy::ProxyRoute;
use crate::recovery::Retry;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Namespace host, e.g. `myns.servicebus.windows.net`.
    pub host: String,
    /// TCP port: 5671 for TLS, 5672 for plain AMQP, unless configured.
    pub port: u16,
    /// amqps (TLS first, as the service speaks it) or plain AMQP (the emulator).
    pub tls: bool,
    /// An extra PEM trust root for TLS, besides the platform's.
    pub ca_file: Option<PathBuf>,
    pub event_hub: String,
    pub consumer_group: String,
    pub credential: Credential,
    /// Bound on TCP connect + proxy tunnel + TLS + WebSocket upgrade + AMQP open + first
    /// put-token.
    pub connect_timeout: Duration,
    /// AMQP on its own port, or over WebSockets on 443.
    pub transport: Transport,
    /// Where to open TCP instead of `host:port` (a private endpoint, an application gateway);
    /// TLS, the WebSocket `Host` and tokens still use `host`.
    pub custom_endpoint: Option<(String, u16)>,
    /// The HTTP proxy WebSockets go through, if any.
    pub proxy: ProxyRoute,
}

impl ClientSettings {
    /// The audience of the connection's token: the event hub, which covers every link below it.
    pub fn audience(&self) -> String {
        format!("sb://{}/{}", self.host, self.event_hub)
    }

    /// The endpoint as logs and errors show it: where it is, and how it is reached.
    pub fn endpoint(&self) -> String {
        let mut shown = match self.transport {
            Transport::Amqp => {
                let scheme = if self.tls { "amqps" } else { "amqp" };
                format!("{scheme}://{}:{}", self.host, self.port)
            }
            Transport::AmqpWebSockets => {
                let scheme = if self.tls { "wss" } else { "ws" };
                format!(
                    "{scheme}://{}:{}{}",
                    self.host,
                    self.port,
                    amqp_websocket::PATH
                )
            }
        };
        let (dial_host, dial_port) = self.dial_address();
        if self.custom_endpoint.is_some() {
            shown.push_str(&format!(" at {dial_host}:{dial_port}"));
        }
        if self.transport == Transport::AmqpWebSockets {
            if let Some(proxy) = self.proxy.for_host(dial_host) {
                shown.push_str(&format!(" through proxy {}", proxy.address()));
            }
        }
        shown
    }

    /// Where TCP connects: the custom endpoint if there is one, else the namespace.
    pub fn dial_address(&self) -> (&str, u16) {
        match &self.custom_endpoint {
            Some((host, port)) => (host.as_str(), *port),
            None => (self.host.as_str(), self.port),
        }
    }
}

/// An open connection: the fe2o3 handle, and the token that says it broke.
#[derive(Debug)]
pub(crate) struct LiveConnection {
    /// Needed to begin sessions; held only for that instant.
    pub(crate) handle: Mutex<ConnectionHandle<()>>,
    /// Cancelled when any user of the connection sees it fail, so the next caller reopens.
    pub(crate) broken: CancellationToken,
    /// Which connection this is (1, 2, ...), for logs.
    pub(crate) generation: u64,
}

impl LiveConnection {
    /// Marks the connection as unusable; the next `EventHubClient::connection` reopens.
    pub(crate) fn mark_broken(&self) {
        self.broken.cancel();
    }
}

/// The Event Hubs client of one hubcap process.
pub struct EventHubClient {
    pub(crate) settings: ClientSettings,
    tls: Option<tokio_rustls::TlsConnector>,
    current: Mutex<Option<Arc<LiveConnection>>>,
    generation: std::sync::atomic::AtomicU64,
    /// Cancelled by `close`; every connection's `broken` token is its child, so this also
    /// stops every token renewal.
    closed: CancellationToken,
    /// The token-renewal tasks, one per connection that needs one; `close` waits for them.
    renewals: TaskTracker,
}

impl std::fmt::Debug for EventHubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHubClient")
            .field("endpoint", &self.settings.endpoint())
            .field("event_hub", &self.settings.event_hub)
            .finish_non_exhaustive()
    }
}

impl EventHubClient {
    pub fn new(settings: ClientSettings) -> Result<Self, EventHubsError> {
        let tls = if settings.tls {
            Some(tls_connector(settings.ca_file.as_deref())?)
        } else {
            None
        };
        Ok(Self {
            settings,
            tls,
            current: Mutex::new(None),
            generation: Default::default(),
            closed: CancellationToken::new(),
            renewals: TaskTracker::new(),
        })
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Whether a connection is open and not known to be broken (false while one is being
    /// opened). For readiness: it never waits.
    pub fn is_connected(&self) -> bool {
        match self.current.try_lock() {
            Ok(current) => current
                .as_ref()
                .is_some_and(|live| !live.broken.is_cancelled()),
            Err(_) => false,
        }
    }

    /// The open connection, opening a new one if there is none or the last one broke.
    pub(crate) async fn connection(&self) -> Result<Arc<LiveConnection>, EventHubsError> {
        let mut current = self.current.lock().await;
        if let Some(live) = current.as_ref() {
            let usable = !live.broken.is_cancelled() && !live.handle.lock().await.is_closed();
            if usable {
                return Ok(Arc::clone(live));
            }
        }
        if let Some(old) = current.take() {
            old.broken.cancel();
        }
        let live = tokio::time::timeout(self.settings.connect_timeout, self.open())
            .await
            .map_err(|_| EventHubsError::Timeout {
                operation: "connect",
                seconds: self.settings.connect_timeout.as_secs(),
            })??;
        *current = Some(Arc::clone(&live));
        Ok(live)
    }

    async fn open(&self) -> Result<Arc<LiveConnection>, EventHubsError> {
        let endpoint = self.settings.endpoint();
        let connect_error = |reason: String| EventHubsError::Connect {
            endpoint: endpoint.clone(),
            reason,
        };
        let (dial_host, dial_port) = self.settings.dial_address();
        let stream = transport::open(Route {
            namespace: &self.settings.host,
            dial_host,
            dial_port,
            transport: self.settings.transport,
            proxy: &self.settings.proxy,
            tls: self.tls.as_ref(),
            timeout: self.settings.connect_timeout,
        })
        .await
        .map_err(connect_error)?;
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let container_id = format!("hubcap-{}-{generation}", uuid::Uuid::new_v4());
        let builder = Connection::builder()
            .container_id(container_id)
            .hostname(self.settings.host.as_str())
            .sasl_profile(SaslProfile::Anonymous)
            .max_frame_size(1024 * 1024)
            .scheme("amqp");
        // TLS first (and WebSockets inside it), then AMQP: what the service and the official
        // SDKs do. fe2o3 reads through a FrameGuard: fe2o3-amqp 0.18.4 panics on a frame whose
        // size is below its 8-byte header and allocates whatever size a value declares; the
        // guard fails the read instead (amqp-frame-guard says more).
        let mut handle = builder
            .open_with_stream(FrameGuard::new(stream))
            .await
            .map_err(|e| connect_error(reason(e)))?;
        let mut cbs = CbsLink::attach(&mut handle).await?;
        let audience = self.settings.audience();
        let (token, token_type) = self.settings.credential.token_for(&audience).await?;
        cbs.put_token(&audience, &token, token_type).await?;
        info!(%endpoint, generation, "connected to event hubs");
        let live = Arc::new(LiveConnection {
            handle: Mutex::new(handle),
            broken: self.closed.child_token(),
            generation,
        });
        if self.settings.credential.renewable() {
            // Ends when this connection breaks or the client closes; `close` awaits it.
            self.renewals.spawn(renew_tokens(
                cbs,
                self.settings.credential.clone(),
                audience,
                token.expires_at,
                Arc::clone(&live),
            ));
        }
        Ok(live)
    }

    /// Closes the current connection and waits for every token renewal to stop.
    pub async fn close(&self) {
        self.closed.cancel();
        if let Some(live) = self.current.lock().await.take() {
            let _ = live.handle.lock().await.close().await;
        }
        self.renewals.close();
        self.renewals.wait().await;
    }
}

/// Backoff between failed token renewals (the token's remaining lifetime caps it).
const RENEWAL_RETRY_MIN: Duration = Duration::from_secs(1);
const RENEWAL_RETRY_MAX: Duration = Duration::from_secs(30);

/// Renews the connection's token until the connection breaks or the client closes.
async fn renew_tokens(
    mut cbs: CbsLink,
    credential: Credential,
    audience: String,
    mut expires_at: SystemTime,
    live: Arc<LiveConnection>,
) {
    let until = |at: SystemTime| {
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    let mut wait = until(renewal_time(SystemTime::now(), expires_at));
    // A failed renewal is retried with the one backoff, never later than the token's expiry.
    let mut retry = Retry::new(RENEWAL_RETRY_MIN, RENEWAL_RETRY_MAX);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = live.broken.cancelled() => break,
        }
        let renewal = async {
            let (token, token_type) = credential.token_for(&audience).await?;
            cbs.put_token(&audience, &token, token_type).await?;
            Ok::<_, EventHubsError>(token.expires_at)
        };
        let renewed = tokio::select! {
            renewed = renewal => renewed,
            _ = live.broken.cancelled() => break,
        };
        match renewed {
            Ok(new_expiry) => {
                debug!(generation = live.generation, "token renewed");
                retry.reset();
                expires_at = new_expiry;
                wait = until(renewal_time(SystemTime::now(), expires_at));
            }
            Err(error) => {
                warn!(generation = live.generation, %error, "token renewal failed; retrying");
                let remaining = until(expires_at);
                if remaining.is_zero() {
                    live.mark_broken();
                    break;
                }
                wait = retry.next_delay().min(remaining);
            }
        }
    }
    cbs.close().await;
}

/// Reads the PEM certificates of `path` into `roots`.
fn add_ca_file(roots: &mut rustls::RootCertStore, path: &std::path::Path) -> Result<(), String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("a PEM block cannot be decoded ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a certificate cannot be used ({e})"))?;
    }
    Ok(())
}

/// Whether `path` holds PEM certificates the client can trust, as [`EventHubClient::new`]
/// will read them: config validation asks, so that `check-config` refuses what the daemon
/// would refuse at start.
pub fn check_ca_file(path: &std::path::Path) -> Result<(), String> {
    add_ca_file(&mut rustls::RootCertStore::empty(), path)
}

fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_rustls::TlsConnector, EventHubsError> {
    let settings_error = |reason: String| EventHubsError::Settings { reason };
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A platform certificate rustls cannot parse is skipped, as browsers do.
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        add_ca_file(&mut roots, path)
            .map_err(|e| settings_error(format!("ca_file {}: {e}", path.display())))?;
    }
    if roots.is_empty() {
        return Err(settings_error(
            "no TLS trust roots: the platform has none and no ca_file is configured".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| settings_error(reason(e)))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
