//! Micro-benchmark: the Capture Avro writer (`hubcap::sink::avro::CaptureWriter`), from a
//! `ReceivedEvent` to finished, compressed blocks, for 100 B, 1 KB and 64 KB bodies and every
//! codec. Events carry the annotations and properties the service and a typical producer set;
//! bodies are JSON-like text, so the compressing codecs have something to find. Output goes into
//! a reused `Vec` (cleared after each block), so no I/O is measured.
//!
//! `cargo run --release -p hubcap-bench --bin avro`

use std::hint::black_box;
use std::time::Instant;

use hubcap::eventhubs::{EventBody, PropertyValue, ReceivedEvent};
use hubcap::sink::avro::CaptureWriter;
use hubcap::sink::Codec;
use hubcap_bench::{allocations, CountingAllocator};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// About 100 MB of bodies per run, at least 20,000 events.
const BYTES_PER_RUN: usize = 100 << 20;

/// Bytes of distinct bodies the events cycle through.
const POOL_BYTES: usize = 16 << 20;

fn body(size: usize, seed: usize) -> Vec<u8> {
    let mut text = String::with_capacity(size + 64);
    let mut n = seed;
    while text.len() < size {
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let random = n >> 24;
        text.push_str(&format!(
            r#"{{"device":"sensor-{}","temperature":{}.{},"seq":{},"ok":true}},"#,
            random % 9973,
            random % 40,
            random % 10,
            random % 1_000_003
        ));
    }
    text.truncate(size);
    text.into_bytes()
}

fn events(body_size: usize, count: usize) -> Vec<ReceivedEvent> {
    (0..count)
        .map(|n| ReceivedEvent {
            sequence_number: 1_000_000 + n as i64,
            offset: (4_294_967_296 + n as u64 * 1100).to_string(),
            enqueued_time_ms: 1_700_000_000_000 + n as i64,
            partition_key: Some("device-42".into()),
            properties: vec![
                ("source".into(), PropertyValue::String("sensor".into())),
                ("reading".into(), PropertyValue::Long(17)),
            ],
            system_properties: vec![(
                "content-type".into(),
                PropertyValue::String("application/json".into()),
            )],
            body: EventBody::Data(vec![body(body_size, n)]),
        })
        .collect()
}

fn codec_name(codec: &Codec) -> String {
    match codec {
        Codec::Null => "null".into(),
        Codec::Deflate { level } => format!("deflate {level}"),
        Codec::Snappy => "snappy".into(),
        Codec::Gzip { level } => format!("gzip {level}"),
        Codec::Zstd { level } => format!("zstd {level}"),
    }
}

fn main() {
    let codecs = [
        Codec::Null,
        Codec::Deflate { level: 1 },
        Codec::Deflate { level: 6 },
        Codec::Snappy,
        Codec::Zstd { level: 3 },
    ];
    println!(
        "| body | codec | µs/event | events/s | MB/s (bodies) | output/input | allocations/event |"
    );
    println!("|---|---|---|---|---|---|---|");
    for size in [100, 1024, 64 * 1024] {
        // Distinct bodies, more of them than a compressor's window holds, so no codec is
        // flattered by finding the same body again.
        let pool = events(size, (POOL_BYTES / size).max(256));
        let count = (BYTES_PER_RUN / size).max(20_000);
        for codec in &codecs {
            let mut best = f64::MAX;
            let mut allocs_per_event = 0.0;
            let mut ratio = 0.0;
            for _ in 0..5 {
                let mut writer = CaptureWriter::new(Vec::with_capacity(4 << 20), codec)
                    .expect("the header writes");
                let mut output = 0u64;
                let allocs_before = allocations();
                let start = Instant::now();
                for n in 0..count {
                    writer
                        .append(black_box(&pool[n % pool.len()]))
                        .expect("encodes");
                    if !writer.inner_mut().is_empty() {
                        output += writer.inner_mut().len() as u64;
                        writer.inner_mut().clear();
                    }
                }
                let rest = writer.finish().expect("finishes");
                let elapsed = start.elapsed().as_secs_f64();
                allocs_per_event = (allocations() - allocs_before) as f64 / count as f64;
                output += rest.len() as u64;
                ratio = output as f64 / (count * size) as f64;
                best = best.min(elapsed);
            }
            let micros = best * 1e6 / count as f64;
            let events_per_second = count as f64 / best;
            let megabytes = (count * size) as f64 / best / 1e6;
            println!(
                "| {size} B | {} | {micros:.3} | {events_per_second:.0} | {megabytes:.0} | {ratio:.2} | {allocs_per_event:.2} |",
                codec_name(codec)
            );
        }
    }
}
