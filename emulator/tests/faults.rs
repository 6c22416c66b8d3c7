//! Fault injection as clients see it, and a large preload read back in order.

mod common;

use std::time::Duration;

use common::*;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use hubcap_emulator::LinkFault;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_fail_the_clients_receiver_promptly() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
    assert_eq!(emulator.drop_connections(), 1);

    let result = within(
        "the receiver sees the dropped connection",
        Duration::from_secs(3),
        receiver.recv::<Body<Value>>(),
    )
    .await;
    assert!(result.is_err(), "a receive after the drop must fail");
    drop(receiver);
    client.close().await;
    assert_emulator_serves(&emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_fail_until_the_window_ends() {
    let emulator = start_default().await;
    let mut existing = Client::authorized(&emulator, HUB).await;
    let window = Duration::from_secs(2);
    let started = Instant::now();
    emulator.refuse_connections(window);

    let refused = Client::try_connect(&emulator).await;
    assert!(refused.is_err(), "a connect during the window must fail");
    // Connections opened before the window are untouched.
    existing.hub_properties(&emulator, HUB).await;

    let deadline = started + window + STEP;
    let client = loop {
        match Client::try_connect(&emulator).await {
            Ok(client) => break client,
            Err(_) => {
                assert!(Instant::now() < deadline, "connections are still refused");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(
        started.elapsed() >= window,
        "a connect succeeded {:?} into a {window:?} refusal",
        started.elapsed()
    );
    client.close().await;
    existing.close().await;
    assert_emulator_serves(&emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_receivers_see_the_injected_error_condition() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut partition_0 = client.receiver(&ReceiverOptions::partition("0")).await;
    let mut partition_1 = client.receiver(&ReceiverOptions::partition("1")).await;

    let busy = LinkFault::new("com.microsoft:server-busy", "the emulator is busy");
    assert_eq!(emulator.detach_receivers(HUB, Some("0"), None, &busy), 1);
    let error = detach_error(&mut partition_0).await;
    assert_eq!(error.condition, "com.microsoft:server-busy");
    assert_eq!(error.description, "the emulator is busy");

    // Partition 1 was not told and keeps receiving.
    preload(&emulator, 1, 1, 8);
    assert_eq!(next_event(&mut partition_1).await.sequence_number, 0);

    // A detached link leaves the registry once its detach handshake is done ...
    eventually("the detached link is deregistered", STEP, || {
        emulator.detach_receivers(HUB, Some("0"), None, &busy) == 0
    })
    .await;
    // ... and a hub-wide fault reaches every live receiver of the hub.
    let mut partition_2 = client.receiver(&ReceiverOptions::partition("2")).await;
    let timeout = LinkFault::new("com.microsoft:timeout", "injected timeout");
    let told = emulator.detach_receivers(HUB, None, None, &timeout);
    assert_eq!(told, 2);
    for receiver in [&mut partition_1, &mut partition_2] {
        assert_eq!(
            detach_error(receiver).await.condition,
            "com.microsoft:timeout"
        );
    }
    // Another consumer group's filter matches nobody.
    assert_eq!(
        emulator.detach_receivers(HUB, None, Some("cg-none"), &timeout),
        0
    );
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_preloaded_events_arrive_complete_and_in_order() {
    let emulator = start_default().await;
    preload(&emulator, 0, 1000, 1024);
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
    let mut previous_offset = None;
    for expected in 0..1000 {
        let event = next_event(&mut receiver).await;
        assert_eq!(event.sequence_number, expected);
        assert_eq!(event.data().len(), 1024);
        let offset: u64 = event
            .offset
            .parse()
            .expect("the emulator's offsets are numeric");
        assert!(previous_offset < Some(offset), "offsets must grow");
        previous_offset = Some(offset);
    }
    assert_no_event_within(&mut receiver, Duration::from_millis(100)).await;
    let properties = client.partition_properties(&emulator, HUB, "0").await;
    assert_eq!(properties.last_enqueued_sequence_number, 999);
    client.close().await;
    emulator.shutdown().await;
}
