//! Micro-benchmark: the per-event decode hot path, from the bytes of a transfer to a
//! `ReceivedEvent` (fe2o3's message decode + hubcap's `decode`), for 100 B, 1 KB and 64 KB
//! bodies with the annotations and properties the service and a typical producer set; and what
//! the frame guard (`amqp-frame-guard`, which checks every frame before fe2o3 decodes it) adds
//! per event, reading the event's transfer frames from memory through it.
//!
//! `cargo run --release -p hubcap-bench --bin decode`

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use amqp_frame_guard::FrameGuard;
use tokio::io::{AsyncRead, ReadBuf};

use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::message::__private::{Deserializable, Serializable};
use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Body, Data, Message, MessageAnnotations,
};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Value};
use hubcap_bench::{allocations, CountingAllocator};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn encoded_event(body_size: usize) -> Vec<u8> {
    let key = |s: &str| OwnedKey::Symbol(Symbol::from(s));
    let mut annotations = OrderedMap::new();
    annotations.insert(key("x-opt-sequence-number"), Value::Long(123_456));
    annotations.insert(key("x-opt-offset"), Value::String("987654321".into()));
    annotations.insert(
        key("x-opt-enqueued-time"),
        Value::Timestamp(Timestamp::from_milliseconds(1_700_000_000_000)),
    );
    annotations.insert(
        key("x-opt-partition-key"),
        Value::String("device-42".into()),
    );
    let mut properties = OrderedMap::new();
    properties.insert("source".to_owned(), SimpleValue::String("sensor".into()));
    properties.insert("reading".to_owned(), SimpleValue::Long(17));
    let message = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: Some(MessageAnnotations(annotations)),
        properties: None,
        application_properties: Some(ApplicationProperties(properties)),
        body: Body::<Value>::Data(vec![Data(Binary::from(vec![b'x'; body_size]))].into()),
        footer: None,
    };
    serde_amqp::to_vec(&Serializable(&message)).expect("a valid message encodes")
}

/// `message` as the service sends it: one transfer frame (settled, handle 1).
fn transfer_frame(message: &[u8]) -> Vec<u8> {
    // transfer: handle, delivery-id, delivery-tag (16 bytes), message-format, settled.
    let mut fields = vec![0x52, 1, 0x70, 0, 0, 0x30, 0x39, 0xa0, 16];
    fields.extend([0x5a; 16]);
    fields.extend([0x43, 0x41]);
    let mut body = vec![0x00, 0x53, 0x14, 0xc0, fields.len() as u8 + 1, 5];
    body.extend(fields);
    body.extend(message);
    let mut frame = ((body.len() + 8) as u32).to_be_bytes().to_vec();
    frame.extend([2, 0, 0, 0]);
    frame.extend(body);
    frame
}

/// Nanoseconds per frame to read `iterations` copies of `frame` back to back, in the 64 KiB
/// reads fe2o3's transport makes (best of 5): through the guard, and straight from memory.
fn read_ns(frame: &[u8], iterations: usize) -> (f64, f64) {
    let stream = frame.repeat(iterations);
    let mut cx = Context::from_waker(Waker::noop());
    let mut buffer = vec![0u8; 64 * 1024];
    let mut best = [f64::MAX; 2];
    for _ in 0..5 {
        for (guarded, best) in [true, false].into_iter().zip(&mut best) {
            let mut guard = FrameGuard::new(&stream[..]);
            let mut plain = &stream[..];
            let start = Instant::now();
            let mut total = 0;
            loop {
                let mut read = ReadBuf::new(&mut buffer);
                let polled = if guarded {
                    Pin::new(&mut guard).poll_read(&mut cx, &mut read)
                } else {
                    Pin::new(&mut plain).poll_read(&mut cx, &mut read)
                };
                match polled {
                    Poll::Ready(Ok(())) if read.filled().is_empty() => break,
                    Poll::Ready(Ok(())) => total += black_box(read.filled()).len(),
                    other => panic!("the guard refused a valid stream: {other:?}"),
                }
            }
            assert_eq!(total, stream.len());
            *best = best.min(start.elapsed().as_nanos() as f64 / iterations as f64);
        }
    }
    (best[0], best[1])
}

fn main() {
    println!(
        "| body | fe2o3 decode (ns/event) | + hubcap decode (ns/event) | allocations/event \
         | frame guard adds (ns/event) |"
    );
    println!("|---|---|---|---|---|");
    for size in [100, 1024, 64 * 1024] {
        let bytes = encoded_event(size);
        let iterations = if size > 10_000 { 20_000 } else { 300_000 };
        let mut best_fe2o3 = f64::MAX;
        let mut best_full = f64::MAX;
        let mut allocs_per_event = 0.0;
        for _ in 0..5 {
            let start = Instant::now();
            for _ in 0..iterations {
                let message: Deserializable<Message<Body<Value>>> =
                    serde_amqp::from_slice(black_box(&bytes)).expect("decodes");
                black_box(message);
            }
            best_fe2o3 = best_fe2o3.min(start.elapsed().as_nanos() as f64 / iterations as f64);
            let allocs_before = allocations();
            let start = Instant::now();
            for _ in 0..iterations {
                let message: Deserializable<Message<Body<Value>>> =
                    serde_amqp::from_slice(black_box(&bytes)).expect("decodes");
                let event = hubcap::eventhubs::testing::decode(message.0).expect("has annotations");
                black_box(event);
            }
            best_full = best_full.min(start.elapsed().as_nanos() as f64 / iterations as f64);
            allocs_per_event = (allocations() - allocs_before) as f64 / iterations as f64;
        }
        let (guarded, plain) = read_ns(&transfer_frame(&bytes), iterations.min(100_000));
        let guard = guarded - plain;
        println!(
            "| {size} B | {best_fe2o3:.0} | {best_full:.0} | {allocs_per_event:.1} | {guard:.0} |"
        );
    }
}
