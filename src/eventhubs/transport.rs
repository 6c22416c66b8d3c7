//! The byte stream an AMQP connection runs over: TCP to the namespace (or a custom endpoint),
//! TLS for the namespace's name, and for `amqp_websockets` a WebSocket upgrade, through an HTTP
//! proxy's CONNECT tunnel when one applies.
//!
//! Whatever the path, the namespace's own name is what the server is asked for: TLS verifies its
//! certificate against it, the WebSocket `Host` header and the AMQP open carry it, and tokens are
//! signed for it. Only the TCP destination changes with `custom_endpoint` and proxies, as the
//! SDKs' `custom_endpoint_address` does.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::error::reason;
use crate::proxy::{self, ProxyRoute};

/// `[eventhub] transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// AMQP on 5671 (TLS) or 5672 (the emulator's plain AMQP).
    #[default]
    Amqp,
    /// AMQP over WebSockets on 443 (`wss://<namespace>/$servicebus/websocket`): crosses
    /// firewalls that allow only HTTPS, and HTTP proxies.
    AmqpWebSockets,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Amqp => "amqp",
            Transport::AmqpWebSockets => "amqp_websockets",
        }
    }
}

/// What the stream is opened with.
pub(crate) struct Route<'a> {
    /// The namespace: TLS name, WebSocket `Host`.
    pub(crate) namespace: &'a str,
    /// Where TCP goes: the namespace, or `custom_endpoint`.
    pub(crate) dial_host: &'a str,
    pub(crate) dial_port: u16,
    pub(crate) transport: Transport,
    pub(crate) proxy: &'a ProxyRoute,
    pub(crate) tls: Option<&'a tokio_rustls::TlsConnector>,
    pub(crate) timeout: Duration,
}

/// A connection's byte stream, whichever layers it has.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + std::fmt::Debug> Io for T {}

/// Opens the stream; an error is the reason, for [`super::EventHubsError::Connect`].
pub(crate) async fn open(route: Route<'_>) -> Result<Box<dyn Io>, String> {
    // Plain AMQP cannot be tunnelled by the SDKs' convention, so only WebSockets use a proxy
    // (config refuses a configured proxy with `amqp`).
    let proxy = match route.transport {
        Transport::AmqpWebSockets => route
            .proxy
            .for_host(route.dial_host)
            .filter(|_| !route.proxy.no_proxy.bypasses(route.namespace)),
        Transport::Amqp => None,
    };
    let tcp = match proxy {
        Some(proxy) => {
            proxy::tunnel(proxy, route.dial_host, route.dial_port, route.timeout).await?
        }
        None => TcpStream::connect((route.dial_host, route.dial_port))
            .await
            .map_err(reason)?,
    };
    let _ = tcp.set_nodelay(true);
    let stream: Box<dyn Io> = match route.tls {
        Some(connector) => {
            let server_name = rustls::pki_types::ServerName::try_from(route.namespace.to_owned())
                .map_err(reason)?;
            let stream = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Box::new(stream)
        }
        None => Box::new(tcp),
    };
    match route.transport {
        Transport::Amqp => Ok(stream),
        Transport::AmqpWebSockets => {
            let socket = amqp_websocket::connect(stream, route.namespace, route.tls.is_some())
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(socket))
        }
    }
}
