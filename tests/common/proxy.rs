//! An AMQP-aware loopback proxy: forwards bytes both ways and counts the performatives it sees,
//! so a test can observe on the wire what it cannot see inside hubcap (credit, deliveries).

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A loopback TCP proxy in front of the emulator that parses the AMQP frames going each way
/// and counts performatives: what a test cannot see inside hubcap, it can see on the wire.
pub struct AmqpProxy {
    addr: SocketAddr,
    counts: Arc<FrameCounts>,
    stop: CancellationToken,
}

/// The `link-credit`s a client granted one link.
#[derive(Debug, Default, Clone, Copy)]
struct Granted {
    largest: u64,
    last: u64,
}

/// Performative counts: `open` is 0x10 ... `close` 0x18.
#[derive(Debug, Default)]
pub struct FrameCounts {
    to_client: [AtomicU64; 9],
    from_client: [AtomicU64; 9],
    /// The highest `delivery-count` in a link `flow` the client sent.
    client_flow_delivery_count: AtomicU64,
    /// The credit the client granted in its link flows, by the name it attached the link with.
    client_link_credit: Mutex<BTreeMap<String, Granted>>,
}

pub const ATTACH: u8 = 0x12;
pub const FLOW: u8 = 0x13;
pub const TRANSFER: u8 = 0x14;

impl AmqpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let counts = Arc::new(FrameCounts::default());
        let stop = CancellationToken::new();
        let (accept_counts, accept_stop) = (Arc::clone(&counts), stop.clone());
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                    _ = accept_stop.cancelled() => return,
                };
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pump(
                    server_read,
                    client_write,
                    Arc::clone(&accept_counts),
                    true,
                    accept_stop.clone(),
                ));
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    Arc::clone(&accept_counts),
                    false,
                    accept_stop.clone(),
                ));
            }
        });
        Self { addr, counts, stop }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Frames with `performative` the emulator sent to hubcap.
    pub fn sent_to_client(&self, performative: u8) -> u64 {
        self.counts.to_client[usize::from(performative - 0x10)].load(Ordering::SeqCst)
    }

    /// Frames with `performative` hubcap sent to the emulator.
    pub fn sent_by_client(&self, performative: u8) -> u64 {
        self.counts.from_client[usize::from(performative - 0x10)].load(Ordering::SeqCst)
    }

    /// The highest `delivery-count` hubcap has granted credit at: a receiver sends a link
    /// `flow` with the deliveries it has seen whenever it tops up its credit, and hubcap tops
    /// up only after taking events off the link into its window.
    pub fn client_flow_delivery_count(&self) -> u64 {
        self.counts
            .client_flow_delivery_count
            .load(Ordering::SeqCst)
    }

    /// The largest credit hubcap has granted in one `flow` to a link whose name starts with
    /// `prefix` (0 before any).
    pub fn max_link_credit(&self, prefix: &str) -> u64 {
        self.link_credits(prefix)
            .iter()
            .map(|granted| granted.largest)
            .max()
            .unwrap_or(0)
    }

    /// The credit of the latest `flow` hubcap sent a link whose name starts with `prefix`
    /// (the largest such, if several links match; 0 before any).
    pub fn last_link_credit(&self, prefix: &str) -> u64 {
        self.link_credits(prefix)
            .iter()
            .map(|granted| granted.last)
            .max()
            .unwrap_or(0)
    }

    fn link_credits(&self, prefix: &str) -> Vec<Granted> {
        let credits = self.counts.client_link_credit.lock().expect("credit map");
        credits
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(_, granted)| *granted)
            .collect()
    }
}

impl Drop for AmqpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counts: Arc<FrameCounts>,
    to_client: bool,
    stop: CancellationToken,
) {
    let mut parser = FrameParser::default();
    // The client's links by (channel, handle), from its attaches.
    let mut link_names: BTreeMap<(u16, u64), String> = BTreeMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stop.cancelled() => break,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        // Counted once written on, so a count means the bytes are on their way to the peer.
        parser.feed(&buf[..n], |channel, code, body| {
            if !(0x10..=0x18).contains(&code) {
                return;
            }
            let table = if to_client {
                &counts.to_client
            } else {
                &counts.from_client
            };
            table[usize::from(code - 0x10)].fetch_add(1, Ordering::SeqCst);
            if to_client {
                return;
            }
            if code == ATTACH {
                if let Some((name, handle)) = attach_fields(body) {
                    link_names.insert((channel, handle), name);
                }
            }
            if code == FLOW {
                if let Some(flow) = link_flow_fields(body) {
                    counts
                        .client_flow_delivery_count
                        .fetch_max(flow.delivery_count, Ordering::SeqCst);
                    if let Some(name) = link_names.get(&(channel, flow.handle)) {
                        let mut credits = counts.client_link_credit.lock().expect("credit map");
                        let granted = credits.entry(name.clone()).or_default();
                        granted.largest = flow.link_credit.max(granted.largest);
                        granted.last = flow.link_credit;
                    }
                }
            }
        });
    }
    let _ = to.shutdown().await;
}

/// Splits a byte stream into AMQP frames (skipping the protocol headers).
#[derive(Debug, Default)]
struct FrameParser {
    buffer: Vec<u8>,
    /// Set on bytes that are not AMQP framing: counting stops, forwarding goes on, and the
    /// waits on the counts fail by their deadlines.
    lost_track: bool,
}

impl FrameParser {
    /// Calls `on_performative(channel, code, body)` for every complete AMQP frame.
    fn feed(&mut self, bytes: &[u8], mut on_performative: impl FnMut(u16, u8, &[u8])) {
        if self.lost_track {
            return;
        }
        self.buffer.extend_from_slice(bytes);
        let mut at = 0;
        loop {
            let rest = &self.buffer[at..];
            if rest.len() < 8 {
                break;
            }
            if rest.starts_with(b"AMQP") {
                at += 8;
                continue;
            }
            let size = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            if size < 8 {
                eprintln!("proxy: frame size {size} is not AMQP framing; no longer counting");
                self.lost_track = true;
                self.buffer.clear();
                return;
            }
            if rest.len() < size {
                break;
            }
            let data_offset = usize::from(rest[4]) * 4;
            // Type 0 is an AMQP frame (1 is SASL); an empty body is a heartbeat.
            if rest[5] == 0 && size > data_offset {
                let body = &rest[data_offset..size];
                let channel = u16::from_be_bytes([rest[6], rest[7]]);
                if let Some(code) = performative(body) {
                    on_performative(channel, code, body);
                }
            }
            at += size;
        }
        self.buffer.drain(..at);
    }
}

/// The descriptor code of a frame body: `0x00 0x53 <code>` or `0x00 0x80 <u64 code>`.
fn performative(body: &[u8]) -> Option<u8> {
    match body {
        [0x00, 0x53, code, ..] => Some(*code),
        [0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, code, ..] => Some(*code),
        _ => None,
    }
}

/// What the tests read from a link `flow`.
struct LinkFlow {
    handle: u64,
    delivery_count: u64,
    link_credit: u64,
}

/// The handle, `delivery-count` and `link-credit` of a link `flow` frame body; `None` for a
/// session flow (no handle).
///
/// flow = list [next-incoming-id, incoming-window, next-outgoing-id, outgoing-window, handle,
/// delivery-count, link-credit, ...], every one of these a uint or null.
fn link_flow_fields(body: &[u8]) -> Option<LinkFlow> {
    let fields = performative_fields(body, FLOW, 7)?;
    let uint = |index: usize| match fields.get(index) {
        Some(Field::Uint(value)) => Some(*value),
        _ => None,
    };
    Some(LinkFlow {
        handle: uint(4)?,
        delivery_count: uint(5)?,
        link_credit: uint(6).unwrap_or(0),
    })
}

/// The name and handle of an `attach` frame body: list [name, handle, role, ...].
fn attach_fields(body: &[u8]) -> Option<(String, u64)> {
    match performative_fields(body, ATTACH, 2)?.as_slice() {
        [Field::Str(name), Field::Uint(handle)] => Some((name.clone(), *handle)),
        _ => None,
    }
}

/// A performative field, as far as the proxy reads them.
enum Field {
    Null,
    Uint(u64),
    Str(String),
}

/// The first `wanted` fields of performative `code`'s list (fewer if the list is shorter);
/// `None` for another performative or a field type the proxy does not read.
fn performative_fields(body: &[u8], code: u8, wanted: usize) -> Option<Vec<Field>> {
    let list = match body {
        [0x00, 0x53, c, rest @ ..] if *c == code => rest,
        [0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, c, rest @ ..] if *c == code => rest,
        _ => return None,
    };
    let (count, mut items) = match list {
        [0xc0, _size, count, rest @ ..] => (usize::from(*count), rest),
        [0xd0, _, _, _, _, a, b, c, d, rest @ ..] => {
            (u32::from_be_bytes([*a, *b, *c, *d]) as usize, rest)
        }
        _ => return None,
    };
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut fields = Vec::with_capacity(wanted);
    for _ in 0..count.min(wanted) {
        let (field, rest) = match items {
            [0x40, rest @ ..] => (Field::Null, rest),
            [0x43 | 0x44, rest @ ..] => (Field::Uint(0), rest),
            [0x52 | 0x53, v, rest @ ..] => (Field::Uint(u64::from(*v)), rest),
            [0x70, rest @ ..] if rest.len() >= 4 => {
                (Field::Uint(u64::from(be32(rest))), &rest[4..])
            }
            [0xa1, len, rest @ ..] if rest.len() >= usize::from(*len) => {
                let (text, rest) = rest.split_at(usize::from(*len));
                (Field::Str(String::from_utf8_lossy(text).into_owned()), rest)
            }
            [0xb1, rest @ ..] if rest.len() >= 4 && rest.len() - 4 >= be32(rest) as usize => {
                let (text, rest) = rest[4..].split_at(be32(rest) as usize);
                (Field::Str(String::from_utf8_lossy(text).into_owned()), rest)
            }
            _ => return None,
        };
        fields.push(field);
        items = rest;
    }
    Some(fields)
}
