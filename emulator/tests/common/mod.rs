//! Shared code for the emulator's integration tests: an emulator with known keys and a small
//! Event Hubs client on fe2o3-amqp.
//!
//! - this file: the emulator under test, tokens, clocks and deadlines;
//! - [`client`]: connect, put-token, `$management` READ, receivers with filters and epochs;
//! - [`properties`]: hub and partition properties, each AMQP type checked;
//! - [`events`]: received events and link errors, messages and batches to publish;
//! - [`raw`]: byte-level AMQP for malformed input.
//!
//! Every network step runs under [`STEP`], so a hang fails its test instead of stalling the
//! suite, and nothing waits on a bare sleep: tests poll with deadlines.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

pub mod client;
pub mod events;
pub mod properties;
pub mod raw;

pub use client::*;
pub use events::*;
pub use properties::*;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hubcap_emulator::config::{HubConfig, SasKeyConfig};
use hubcap_emulator::{Emulator, EmulatorConfig};

pub const HUB: &str = "hub1";
pub const OTHER_HUB: &str = "hub2";
pub const PARTITIONS: usize = 4;
pub const KEY_NAME: &str = "RootManageSharedAccessKey";
pub const KEY: &str = "test-key";
pub const DEFAULT_CONSUMER_GROUP: &str = "$Default";
pub const SAS_TOKEN_TYPE: &str = "servicebus.windows.net:sastoken";
pub const SELECTOR_FILTER: &str = "apache.org:selector-filter:string";
/// The selector filter's descriptor code, as the Rust SDK sends it.
pub const SELECTOR_FILTER_CODE: u64 = 0x0000_468C_0000_0004;
pub const EPOCH_PROPERTY: &str = "com.microsoft:epoch";
pub const BATCH_MESSAGE_FORMAT: u32 = 0x8001_3700;

/// Upper bound for one network step (connect, attach, request, one delivery).
pub const STEP: Duration = Duration::from_secs(10);

/// hub1 with 4 partitions, hub2 with 2, and one SAS key.
pub fn config() -> EmulatorConfig {
    EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        hubs: vec![
            HubConfig {
                name: HUB.into(),
                partitions: PARTITIONS,
            },
            HubConfig {
                name: OTHER_HUB.into(),
                partitions: 2,
            },
        ],
        sas_keys: vec![SasKeyConfig {
            name: KEY_NAME.into(),
            key: KEY.into(),
        }],
        ..Default::default()
    }
}

pub async fn start(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.expect("the emulator starts")
}

pub async fn start_default() -> Emulator {
    start(config()).await
}

/// Awaits `future`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(what: &str, limit: Duration, future: F) -> F::Output {
    match tokio::time::timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what}: nothing within {limit:?}"),
    }
}

/// Polls `check` every 20 ms until it holds, failing the test after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The CBS audience (and SAS resource) the Python producer uses for a hub.
pub fn audience(emulator: &Emulator, hub: &str) -> String {
    format!("sb://{}/{hub}", emulator.amqp_addr())
}

/// A SAS token for `hub` signed with the emulator's key, valid for an hour.
pub fn sas_token(emulator: &Emulator, hub: &str) -> String {
    hubcap_emulator::token::generate_sas_token(
        &audience(emulator, hub),
        KEY_NAME,
        KEY,
        unix_now() + 3600,
    )
}

/// The partition's consumer address under a consumer group.
pub fn consumer_address(hub: &str, consumer_group: &str, partition: &str) -> String {
    format!("{hub}/ConsumerGroups/{consumer_group}/Partitions/{partition}")
}

/// Appends `count` synthetic events of `size` bytes to a partition of hub1, bypassing AMQP.
pub fn preload(emulator: &Emulator, partition: usize, count: u64, size: usize) {
    emulator
        .namespace()
        .hub(HUB)
        .expect("hub1 exists")
        .partitions[partition]
        .preload(count, size)
        .expect("preload succeeds");
}

/// Proves the emulator still serves a whole round trip on a fresh connection: put-token,
/// `$management` READ, publish to a partition and receive that event.
pub async fn assert_emulator_serves(emulator: &Emulator) {
    let mut client = Client::authorized(emulator, HUB).await;
    let hub = client.hub_properties(emulator, HUB).await;
    assert_eq!(hub.partition_count as usize, PARTITIONS);
    let mut receiver = client
        .receiver(
            &ReceiverOptions::partition("3").selector("amqp.annotation.x-opt-offset > '@latest'"),
        )
        .await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/3")).await;
    let body = format!("still-serving-{}", now_ms());
    publish(&mut sender, event_message(body.as_bytes())).await;
    let event = next_event(&mut receiver).await;
    assert_eq!(event.data(), body.as_bytes());
    client.close().await;
}
