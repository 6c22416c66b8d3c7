//! Byte-level AMQP for malformed input, and a stream that hides the server's
//! `max-message-size` from a client so the server's own limit can be exercised.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::Symbol;
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::{within, STEP};

pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
const AMQP_FRAME: u8 = 0;
const SASL_FRAME: u8 = 1;
/// The described-list prefix of an Attach performative: descriptor smallulong 0x12.
const ATTACH_DESCRIPTOR: [u8; 3] = [0x00, 0x53, 0x12];

pub async fn connect(addr: SocketAddr) -> TcpStream {
    within("raw connect", STEP, TcpStream::connect(addr))
        .await
        .expect("tcp connect")
}

/// A frame with a 2-word header: size, data offset 2, type, channel, body.
pub fn frame(frame_type: u8, channel: u16, body: &[u8]) -> Vec<u8> {
    let size = (8 + body.len()) as u32;
    let mut bytes = Vec::with_capacity(size as usize);
    bytes.extend_from_slice(&size.to_be_bytes());
    bytes.push(2);
    bytes.push(frame_type);
    bytes.extend_from_slice(&channel.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

pub fn amqp_frame(body: &[u8]) -> Vec<u8> {
    frame(AMQP_FRAME, 0, body)
}

async fn read_header(stream: &mut TcpStream) -> [u8; 8] {
    let mut header = [0u8; 8];
    within(
        "read a protocol header",
        STEP,
        stream.read_exact(&mut header),
    )
    .await
    .expect("a protocol header");
    header
}

/// Reads one frame and returns its type and body.
async fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    within("read a frame", STEP, async {
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).await.expect("a frame size");
        let size = u32::from_be_bytes(size) as usize;
        let mut rest = vec![0u8; size - 4];
        stream.read_exact(&mut rest).await.expect("a frame");
        let data_offset = rest[0] as usize * 4;
        (rest[1], rest[data_offset - 4..].to_vec())
    })
    .await
}

/// SASL ANONYMOUS by hand, then the AMQP protocol header exchange: the socket is ready for an
/// Open frame.
pub async fn negotiate_to_open(stream: &mut TcpStream) {
    stream.write_all(&SASL_HEADER).await.unwrap();
    assert_eq!(read_header(stream).await, SASL_HEADER);
    let (frame_type, _mechanisms) = read_frame(stream).await;
    assert_eq!(frame_type, SASL_FRAME);
    let init = SaslInit {
        mechanism: Symbol::from("ANONYMOUS"),
        initial_response: None,
        hostname: Some("127.0.0.1".into()),
    };
    let init = serde_amqp::to_vec(&init).unwrap();
    stream
        .write_all(&frame(SASL_FRAME, 0, &init))
        .await
        .unwrap();
    let (frame_type, outcome) = read_frame(stream).await;
    assert_eq!(frame_type, SASL_FRAME);
    let outcome: SaslOutcome = serde_amqp::from_slice(&outcome).expect("a sasl-outcome");
    assert_eq!(outcome.code, SaslCode::Ok);
    stream.write_all(&AMQP_HEADER).await.unwrap();
    assert_eq!(read_header(stream).await, AMQP_HEADER);
}

/// Whether the server closes the socket within `limit` (reading and discarding what it sends).
pub async fn closed_by_server_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut sink = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// Deterministic pseudo-random bytes (xorshift), so a failure can be replayed.
pub fn garbage(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Wraps a client socket and removes `max-message-size` from every Attach the server sends,
/// so fe2o3's client does not adopt the server's limit and lets an oversized message reach
/// the server.
#[derive(Debug)]
pub struct HideMaxMessageSize<S> {
    inner: S,
    /// Bytes read from the socket that do not yet form a whole header or frame.
    pending: Vec<u8>,
    /// Whole headers and frames, rewritten, waiting to be read by the client.
    ready: Vec<u8>,
}

impl<S> HideMaxMessageSize<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Moves every complete protocol header and frame from `pending` to `ready`.
    fn rewrite_complete_units(&mut self) {
        loop {
            if self.pending.len() >= 8 && self.pending.starts_with(b"AMQP") {
                self.ready.extend(self.pending.drain(..8));
                continue;
            }
            if self.pending.len() < 8 {
                return;
            }
            let size = u32::from_be_bytes(self.pending[..4].try_into().unwrap()) as usize;
            if self.pending.len() < size {
                return;
            }
            let frame: Vec<u8> = self.pending.drain(..size).collect();
            self.ready.extend(strip_attach_max_message_size(frame));
        }
    }
}

fn strip_attach_max_message_size(frame: Vec<u8>) -> Vec<u8> {
    let data_offset = frame[4] as usize * 4;
    let body = &frame[data_offset..];
    if frame[5] != AMQP_FRAME || !body.starts_with(&ATTACH_DESCRIPTOR) {
        return frame;
    }
    let mut attach: Attach = serde_amqp::from_slice(body).expect("an attach decodes");
    attach.max_message_size = None;
    let body = serde_amqp::to_vec(&attach).expect("an attach encodes");
    let channel = u16::from_be_bytes([frame[6], frame[7]]);
    self::frame(AMQP_FRAME, channel, &body)
}

impl<S: AsyncRead + Unpin> AsyncRead for HideMaxMessageSize<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.ready.is_empty() {
                let n = self.ready.len().min(buf.remaining());
                buf.put_slice(&self.ready[..n]);
                self.ready.drain(..n);
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut chunk_buf = ReadBuf::new(&mut chunk);
            let this = &mut *self;
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf) {
                Poll::Ready(Ok(())) => {
                    let filled = chunk_buf.filled();
                    if filled.is_empty() {
                        // End of stream: hand over whatever is left as it is.
                        let rest = std::mem::take(&mut this.pending);
                        if rest.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                        this.ready = rest;
                        continue;
                    }
                    this.pending.extend_from_slice(filled);
                    this.rewrite_complete_units();
                }
                other => return other,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HideMaxMessageSize<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
