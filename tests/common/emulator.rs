//! The emulator under test: one hub with known keys, what it holds, and publishers that append
//! to it (through hubcap's own sender, or straight into its log).

// Each test binary compiles this module and uses a subset of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hubcap::eventhubs::{ClientSettings, Credential, EventHubClient, OutgoingEvent, SendTarget};
use hubcap::secret::Secret;
use hubcap_emulator::config::{HubConfig, SasKeyConfig};
use hubcap_emulator::store::Partition;
use hubcap_emulator::{Emulator, EmulatorConfig};
use tokio_util::sync::CancellationToken;

use super::{within, EventId, CONSUMER_GROUP, HUB, KEY, KEY_NAME, STEP};

/// One hub, [`HUB`], with `partitions` partitions and the key [`KEY`], on a free port.
pub fn emulator_config(partitions: usize) -> EmulatorConfig {
    EmulatorConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        hubs: vec![HubConfig {
            name: HUB.into(),
            partitions,
        }],
        sas_keys: vec![SasKeyConfig {
            name: KEY_NAME.into(),
            key: KEY.into(),
        }],
        ..Default::default()
    }
}

pub async fn start_emulator(partitions: usize) -> Emulator {
    start_emulator_with(emulator_config(partitions)).await
}

pub async fn start_emulator_with(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.expect("the emulator starts")
}

/// A connection string for the emulator (or a proxy in front of it) at `addr`, signed with `key`.
pub fn connection_string(addr: SocketAddr, key: &str) -> String {
    format!(
        "Endpoint=sb://{addr}/;SharedAccessKeyName={KEY_NAME};SharedAccessKey={key};\
         UseDevelopmentEmulator=true;EntityPath={HUB}"
    )
}

pub fn partitions(emulator: &Emulator) -> Vec<Arc<Partition>> {
    emulator
        .namespace()
        .hub(HUB)
        .expect("the test hub exists")
        .partitions
        .clone()
}

pub fn partition_ids(emulator: &Emulator) -> Vec<String> {
    partitions(emulator).iter().map(|p| p.id.clone()).collect()
}

/// Appends `count` synthetic events of `size` body bytes to every partition.
pub fn preload_each(emulator: &Emulator, count: u64, size: usize) {
    for partition in partitions(emulator) {
        partition.preload(count, size).expect("preload");
    }
}

/// The last enqueued sequence number of every partition (-1 when empty).
pub fn last_sequence_numbers(emulator: &Emulator) -> BTreeMap<String, i64> {
    partitions(emulator)
        .iter()
        .map(|p| (p.id.clone(), p.properties().last_enqueued_sequence_number))
        .collect()
}

/// Every event the hub holds now, as (partition, sequence number).
pub fn all_event_ids(emulator: &Emulator) -> BTreeSet<EventId> {
    partitions(emulator)
        .iter()
        .flat_map(|p| {
            let props = p.properties();
            (props.begin_sequence_number..=props.last_enqueued_sequence_number)
                .map(|n| EventId::new(&p.id, n))
        })
        .collect()
}

/// Library client settings for the emulator at `addr`.
pub fn client_settings(addr: SocketAddr, credential: Credential) -> ClientSettings {
    ClientSettings {
        host: addr.ip().to_string(),
        port: addr.port(),
        tls: false,
        ca_file: None,
        event_hub: HUB.into(),
        consumer_group: CONSUMER_GROUP.into(),
        credential,
        connect_timeout: STEP,
        transport: hubcap::eventhubs::Transport::Amqp,
        custom_endpoint: None,
        proxy: hubcap::proxy::ProxyRoute::direct(),
    }
}

pub fn sas_credential() -> Credential {
    Credential::SharedAccessKey {
        key_name: KEY_NAME.into(),
        key: Secret::new(KEY),
        token_lifetime: Duration::from_secs(3600),
    }
}

/// Publishes `events` to one partition through hubcap's own sender.
pub async fn publish(emulator: &Emulator, partition_id: &str, events: &[OutgoingEvent]) {
    let client = EventHubClient::new(client_settings(emulator.amqp_addr(), sas_credential()))
        .expect("client settings are valid");
    let mut sender = within(
        "open a sender",
        STEP,
        client.open_sender(&SendTarget::Partition(partition_id.into())),
    )
    .await
    .expect("the sender attaches");
    within("publish", STEP, sender.send(events))
        .await
        .expect("the emulator accepts the events");
    sender.close().await;
    client.close().await;
}

/// A task appending synthetic events at a steady rate, round-robin over the partitions,
/// straight into the emulator's log: the publisher must not itself suffer the faults a test
/// injects into connections.
pub struct Stream {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<u64>,
}

/// Streams `per_second` events of `size` body bytes until [`Stream::stop`].
pub fn stream(emulator: &Emulator, per_second: u64, size: usize) -> Stream {
    const TICK: Duration = Duration::from_millis(50);
    let partitions = partitions(emulator);
    let per_tick = (per_second / 20).max(1);
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(TICK);
        let mut next = 0usize;
        let mut total = 0u64;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopped.cancelled() => return total,
            }
            let mut counts = vec![0u64; partitions.len()];
            for _ in 0..per_tick {
                counts[next % partitions.len()] += 1;
                next += 1;
            }
            for (partition, count) in partitions.iter().zip(counts) {
                if count > 0 {
                    partition.preload(count, size).expect("append");
                }
            }
            total += per_tick;
        }
    });
    Stream { stop, task }
}

impl Stream {
    /// Stops publishing; returns how many events were appended.
    pub async fn stop(self) -> u64 {
        self.stop.cancel();
        self.task.await.expect("the publishing task ends")
    }

    /// Stops publishing on a hub that holds nothing but this stream's events; returns them
    /// all, after checking the hub holds as many as were appended.
    pub async fn stop_and_list(self, emulator: &Emulator) -> BTreeSet<EventId> {
        let published = self.stop().await;
        let held = all_event_ids(emulator);
        assert_eq!(
            held.len() as u64,
            published,
            "the hub holds what was published"
        );
        held
    }
}
