//! AMQP 1.0 over WebSockets, as Azure Event Hubs serves it at `wss://<namespace>:443/$servicebus/websocket`.
//!
//! The service and the official SDKs negotiate the subprotocol `AMQPWSB10` (the AMQP WebSocket
//! Binding 1.0 draft's name); the OASIS binding's final name is `amqp`. `fe2o3-amqp-ws` sends and
//! accepts only `amqp`, so hubcap carries its own small binding: [`connect`] and [`accept`] do the
//! HTTP upgrade over a stream the caller opened (TCP, TLS, or a tunnel through a proxy), and
//! [`WsStream`] turns the binary messages back into the byte stream fe2o3 reads frames from.
//!
//! AMQP frames do not line up with WebSocket messages: a peer may split a frame across messages or
//! pack several into one, so reads are served from the current message until it is used up.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::client::{generate_key, Request};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// The subprotocol Event Hubs and its SDKs use (Python `AMQP_WS_SUBPROTOCOL`, .NET
/// `AmqpWebSocketTransport`'s `AMQPWSB10`).
pub const SUBPROTOCOL: &str = "AMQPWSB10";
/// The OASIS binding's name, also accepted by [`accept`] so generic AMQP WebSocket clients work.
pub const SUBPROTOCOL_OASIS: &str = "amqp";
/// The path Event Hubs serves WebSockets on.
pub const PATH: &str = "/$servicebus/websocket";

const PROTOCOL_HEADER: &str = "Sec-WebSocket-Protocol";

/// Why a WebSocket upgrade failed.
#[derive(Debug)]
pub enum Error {
    /// The HTTP upgrade failed: a transport error, or an answer other than 101.
    Handshake(String),
    /// The server switched protocols without choosing `AMQPWSB10`.
    Subprotocol(Option<String>),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Handshake(reason) => write!(f, "WebSocket upgrade failed: {reason}"),
            Error::Subprotocol(Some(chosen)) => write!(
                f,
                "the server chose WebSocket subprotocol {chosen:?}, not {SUBPROTOCOL}"
            ),
            Error::Subprotocol(None) => {
                write!(
                    f,
                    "the server chose no WebSocket subprotocol (asked for {SUBPROTOCOL})"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

fn handshake_error(error: tungstenite::Error) -> Error {
    match error {
        tungstenite::Error::Http(response) => Error::Handshake(format!(
            "the server answered HTTP {} instead of 101 Switching Protocols",
            response.status()
        )),
        // tungstenite checks the answer's subprotocol against the offer itself.
        tungstenite::Error::Protocol(
            tungstenite::error::ProtocolError::SecWebSocketSubProtocolError(_),
        ) => Error::Subprotocol(None),
        other => Error::Handshake(other.to_string()),
    }
}

/// Limits for both ends: an AMQP frame is bounded by the negotiated max-frame-size (1 MiB in
/// hubcap and its emulator), so a WebSocket message far larger than that is refused rather than
/// buffered.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// Upgrades `stream` to a WebSocket for AMQP, as a client. `host` is the name the server knows
/// itself by (the `Host` header, and the URL's authority): the namespace, also when `stream` goes
/// to a custom endpoint or through a proxy tunnel.
pub async fn connect<S>(stream: S, host: &str, tls: bool) -> Result<WsStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let scheme = if tls { "wss" } else { "ws" };
    let request = Request::builder()
        .method("GET")
        .uri(format!("{scheme}://{host}{PATH}"))
        .header("Host", host)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", generate_key())
        .header(PROTOCOL_HEADER, SUBPROTOCOL)
        .body(())
        .map_err(|e| Error::Handshake(e.to_string()))?;
    let (socket, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
            .await
            .map_err(handshake_error)?;
    let chosen = response
        .headers()
        .get(PROTOCOL_HEADER)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
    if chosen.as_deref() != Some(SUBPROTOCOL) {
        return Err(Error::Subprotocol(chosen));
    }
    Ok(WsStream::new(socket))
}

/// Accepts a WebSocket upgrade for AMQP on `stream`, as a server: the client must offer
/// `AMQPWSB10` (or the OASIS `amqp`); any other upgrade is answered 400 and refused.
pub async fn accept<S>(stream: S) -> Result<WsStream<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The callback's signature is tungstenite's; its error type is an HTTP response.
    #[allow(clippy::result_large_err)]
    let choose = |request: &Request, mut response: Response| {
        let offered = request
            .headers()
            .get_all(PROTOCOL_HEADER)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .find(|offer| offer.eq_ignore_ascii_case(SUBPROTOCOL) || *offer == SUBPROTOCOL_OASIS)
            .map(str::to_owned);
        match offered {
            Some(protocol) => {
                let value =
                    HeaderValue::from_str(&protocol).expect("a header value it was sent in");
                response.headers_mut().insert(PROTOCOL_HEADER, value);
                Ok(response)
            }
            None => {
                let mut refusal = ErrorResponse::new(Some(format!(
                    "offer the WebSocket subprotocol {SUBPROTOCOL}\n"
                )));
                *refusal.status_mut() = StatusCode::BAD_REQUEST;
                Err(refusal)
            }
        }
    };
    let socket = tokio_tungstenite::accept_hdr_async_with_config(stream, choose, Some(config()))
        .await
        .map_err(handshake_error)?;
    Ok(WsStream::new(socket))
}

/// AMQP bytes over WebSocket binary messages.
pub struct WsStream<S> {
    socket: WebSocketStream<S>,
    /// What is left of the last binary message read.
    pending: Bytes,
    /// The peer sent a close frame or the stream ended: reads return end of stream.
    ended: bool,
}

impl<S> std::fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsStream")
            .field("pending", &self.pending.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<S> WsStream<S> {
    fn new(socket: WebSocketStream<S>) -> Self {
        Self {
            socket,
            pending: Bytes::new(),
            ended: false,
        }
    }
}

fn io_error(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "the WebSocket is closed")
        }
        other => io::Error::other(other),
    }
}

impl<S> AsyncRead for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // tungstenite answers pings itself (queued, sent with the next write or flush).
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message where AMQP sends binary ones",
                    )))
                }
                Some(Ok(Message::Close(_))) | None => this.ended = true,
                Some(Err(error)) => return Poll::Ready(Err(io_error(error))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S> AsyncWrite for WsStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let socket = &mut self.socket;
        ready!(Pin::new(&mut *socket).poll_ready(cx)).map_err(io_error)?;
        // One message per write: a write holds at most what the AMQP framer had buffered.
        Pin::new(&mut *socket)
            .start_send(Message::Binary(Bytes::copy_from_slice(data)))
            .map_err(io_error)?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.socket).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(io_error(error))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_cross_in_both_directions_whatever_the_message_boundaries() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut server = accept(server_io).await.unwrap();
            let mut received = vec![0u8; 10_000];
            server.read_exact(&mut received).await.unwrap();
            server.write_all(&received).await.unwrap();
            server.flush().await.unwrap();
            received
        });
        let mut client = connect(client_io, "myns.servicebus.windows.net", true)
            .await
            .unwrap();
        let sent: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in sent.chunks(777) {
            client.write_all(chunk).await.unwrap();
        }
        client.flush().await.unwrap();
        let mut echoed = vec![0u8; sent.len()];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(server.await.unwrap(), sent);
        assert_eq!(echoed, sent);
    }

    #[tokio::test]
    async fn a_server_without_the_event_hubs_subprotocol_is_refused() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            // A plain WebSocket server that picks no subprotocol.
            let _ = tokio_tungstenite::accept_async(server_io).await;
        });
        let error = connect(client_io, "myns", false).await.unwrap_err();
        assert!(matches!(error, Error::Subprotocol(None)), "{error}");
        assert!(error.to_string().contains("AMQPWSB10"), "{error}");
    }

    #[tokio::test]
    async fn a_client_that_offers_no_amqp_subprotocol_gets_400() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move { accept(server_io).await.map(|_| ()) });
        let result =
            tokio_tungstenite::client_async("ws://myns/$servicebus/websocket", client_io).await;
        match result {
            Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
            other => panic!("expected a 400 answer, got {:?}", other.map(|_| ())),
        }
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_close_from_the_peer_reads_as_end_of_stream() {
        let (client_io, server_io) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut server = accept(server_io).await.unwrap();
            server.write_all(b"AMQP").await.unwrap();
            server.shutdown().await.unwrap();
        });
        let mut client = connect(client_io, "myns", false).await.unwrap();
        let mut all = Vec::new();
        client.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"AMQP");
        server.await.unwrap();
    }
}
