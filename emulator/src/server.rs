//! The emulator as a whole: the AMQP listener, optional TLS, and the handle tests hold.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amqp_frame_guard::FrameGuard;
use fe2o3_amqp::acceptor::ConnectionAcceptor;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use crate::config::{ConfigError, EmulatorConfig, TlsConfig};
use crate::connection::{self, ConnectionContext, EventHubsSasl};
use crate::faults::{ConnectionFaults, KillableStream, LinkFault};
use crate::receivers::{PartitionKey, ReceiverRegistry};
use crate::store::{Hub, Namespace};
use crate::token::SasKey;

/// State every connection and link task reads.
#[derive(Debug)]
pub struct Shared {
    pub namespace: Namespace,
    pub keys: Vec<SasKey>,
    pub accept_jwt: bool,
    pub max_message_size: u64,
    pub receivers: Arc<ReceiverRegistry>,
    pub connection_faults: ConnectionFaults,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot load TLS certificate or key: {0}")]
    Tls(String),
}

/// A running emulator. Dropping it does not stop it; call [`Emulator::shutdown`].
#[derive(Debug)]
pub struct Emulator {
    shared: Arc<Shared>,
    amqp_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    tls: bool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Emulator {
    pub async fn start(config: EmulatorConfig) -> Result<Self, StartError> {
        config.validate()?;
        let mut namespace = Namespace::new(config.namespace.clone());
        for hub in &config.hubs {
            namespace.add_hub(Hub::new(
                hub.name.clone(),
                hub.partitions,
                &config.consumer_groups,
                config.retention(),
            ));
        }
        let shared = Arc::new(Shared {
            namespace,
            keys: config.keys(),
            accept_jwt: config.accept_jwt,
            max_message_size: config.max_message_size,
            receivers: Arc::new(ReceiverRegistry::default()),
            connection_faults: ConnectionFaults::default(),
        });
        let tls = match &config.tls {
            Some(files) => Some(tls_acceptor(files)?),
            None => None,
        };
        let listener = bind_listener(config.listen).map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let amqp_addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let admin_addr = match config.admin_listen {
            Some(addr) => Some(
                crate::admin::start(addr, Arc::clone(&shared), shutdown.clone(), &tasks)
                    .await
                    .map_err(|source| StartError::Listen { addr, source })?,
            ),
            None => None,
        };
        tasks.spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            tls.clone(),
            shutdown.clone(),
            tasks.clone(),
        ));
        info!(%amqp_addr, ?admin_addr, tls = tls.is_some(), namespace = %config.namespace, "emulator listening");
        Ok(Self {
            shared,
            amqp_addr,
            admin_addr,
            tls: tls.is_some(),
            shutdown,
            tasks,
        })
    }

    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn namespace(&self) -> &Namespace {
        &self.shared.namespace
    }

    /// An Event Hubs connection string for this emulator, signed with its first SAS key.
    pub fn connection_string(&self, hub: Option<&str>) -> String {
        let key = &self.shared.keys[0];
        let mut s = format!(
            "Endpoint=sb://{}/;SharedAccessKeyName={};SharedAccessKey={}",
            self.amqp_addr,
            key.key_name,
            key.expose_key()
        );
        if !self.tls {
            s.push_str(";UseDevelopmentEmulator=true");
        }
        if let Some(hub) = hub {
            s.push_str(";EntityPath=");
            s.push_str(hub);
        }
        s
    }

    /// Fails every open connection abruptly; returns how many there were.
    pub fn drop_connections(&self) -> usize {
        drop_connections(&self.shared)
    }

    /// Closes new connections at once for `duration`.
    pub fn refuse_connections(&self, duration: Duration) {
        self.shared.connection_faults.refuse_for(duration);
    }

    /// Detaches the consumers of a hub's partition (all partitions if `None`, all consumer
    /// groups if `None`) with `fault`; returns how many links were told.
    pub fn detach_receivers(
        &self,
        hub: &str,
        partition: Option<&str>,
        consumer_group: Option<&str>,
        fault: &LinkFault,
    ) -> usize {
        detach_receivers(&self.shared, hub, partition, consumer_group, fault)
    }

    /// Freezes the consumer links attached now to a hub's partition (all partitions if
    /// `None`): they stay attached but deliver nothing, like a stuck link. Links attached later
    /// work normally. Returns how many were frozen.
    pub fn stall_receivers(&self, hub: &str, partition: Option<&str>) -> usize {
        let hub = hub.to_lowercase();
        let stalled = self
            .shared
            .receivers
            .stall(|key| key.hub == hub && partition.is_none_or(|p| key.partition == p));
        info!(stalled, %hub, ?partition, "fault: stalled receivers");
        stalled
    }

    /// Stops listening, drops every connection and waits for all tasks.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.shared.connection_faults.drop_all();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

pub fn drop_connections(shared: &Shared) -> usize {
    let dropped = shared.connection_faults.drop_all();
    info!(dropped, "fault: dropped every connection");
    dropped
}

pub fn detach_receivers(
    shared: &Shared,
    hub: &str,
    partition: Option<&str>,
    consumer_group: Option<&str>,
    fault: &LinkFault,
) -> usize {
    let hub = hub.to_lowercase();
    let consumer_group = consumer_group.map(str::to_lowercase);
    let matches = |key: &PartitionKey| {
        key.hub == hub
            && partition.is_none_or(|p| key.partition == p)
            && consumer_group
                .as_deref()
                .is_none_or(|cg| key.consumer_group == cg)
    };
    let detached = shared.receivers.kick(matches, fault);
    info!(detached, %hub, ?partition, condition = %fault.condition, "fault: detached receivers");
    detached
}

/// A peer that has not finished TLS + SASL + Open by then is hung up on, so a silent or broken
/// client cannot hold a task and a socket forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(4);

/// Loopback's 64 KiB MTU makes clients see an MSS above 32767, which pyamqp then writes back
/// with `setsockopt(TCP_MAXSEG)` and fails with EINVAL on some connects. Advertising an MSS
/// like a real network path's keeps the official SDK's connects reliable.
const ADVERTISED_MSS: u32 = 16 * 1024;

fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_mss(ADVERTISED_MSS)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let next_id = AtomicU64::new(1);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    debug!(%error, "accept failed");
                    continue;
                }
            },
            _ = shutdown.cancelled() => return,
        };
        if shared.connection_faults.refusing() {
            debug!(%peer, "fault: refusing connection");
            drop(stream);
            continue;
        }
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(handle_stream(Arc::clone(&shared), stream, tls.clone(), id));
    }
}

async fn handle_stream(
    shared: Arc<Shared>,
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    id: u64,
) {
    let _ = stream.set_nodelay(true);
    let killed = shared.connection_faults.current();
    let open_guard = Arc::clone(&shared);
    let _open = open_guard.connection_faults.track();
    let stream = KillableStream::new(stream, killed.clone());
    match tls {
        Some(acceptor) => {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => open_amqp(shared, stream, id, killed).await,
                Ok(Err(error)) => debug!(connection = id, %error, "TLS handshake failed"),
                Err(_) => debug!(connection = id, "TLS handshake timed out"),
            }
        }
        None => open_amqp(shared, stream, id, killed).await,
    }
}

async fn open_amqp<Io>(shared: Arc<Shared>, stream: Io, id: u64, killed: CancellationToken)
where
    Io: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let acceptor = ConnectionAcceptor::builder()
        .container_id(format!("hubcap-emulator-{id}"))
        .max_frame_size(1024 * 1024)
        .channel_max(8191u16)
        .properties(connection::server_properties(&shared))
        .sasl_acceptor(EventHubsSasl)
        .build();
    let connection = tokio::select! {
        // FrameGuard: fe2o3-amqp 0.18.4 panics on a frame whose size is below its 8-byte
        // header and allocates whatever size a value declares; the guard fails the read
        // instead (amqp-frame-guard says more).
        connection = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(FrameGuard::new(stream))) => match connection {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                debug!(connection = id, %error, "AMQP open failed");
                return;
            }
            Err(_) => {
                debug!(connection = id, "AMQP open timed out; hanging up");
                return;
            }
        },
        _ = killed.cancelled() => return,
    };
    let context = Arc::new(ConnectionContext::new(id));
    connection::serve(shared, connection, context, killed).await;
}

fn tls_acceptor(files: &TlsConfig) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| StartError::Tls(format!("{}: {e}", path.display())))
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::Tls(format!("{}: {e}", files.cert.display())))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| StartError::Tls(format!("{}: {e}", files.key.display())))?
        .ok_or_else(|| StartError::Tls(format!("{}: no private key", files.key.display())))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| StartError::Tls(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
