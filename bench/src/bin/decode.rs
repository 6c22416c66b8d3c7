//! Micro-benchmark: the per-event decode hot path, from the bytes of a transfer to a
//! `ReceivedEvent` (fe2o3's message decode + hubcap's `decode`), for 100 B, 1 KB and 64 KB
//! bodies with the annotations and properties the service and a typical producer set.
//!
//! `cargo run --release -p hubcap-bench --bin decode`

use std::hint::black_box;
use std::time::Instant;

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

fn main() {
    println!("| body | fe2o3 decode (ns/event) | + hubcap decode (ns/event) | allocations/event |");
    println!("|---|---|---|---|");
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
        println!("| {size} B | {best_fe2o3:.0} | {best_full:.0} | {allocs_per_event:.1} |");
    }
}
