//! Count-based retention: old events expire and readers start at the oldest retained one.

mod common;

use common::*;
use hubcap_emulator::EmulatorConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_newest_ten_events_are_kept_and_readers_start_at_the_oldest() {
    let emulator = start(EmulatorConfig {
        retention_events: Some(10),
        ..config()
    })
    .await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/0")).await;
    for i in 0..25 {
        publish(&mut sender, event_message(format!("event {i}").as_bytes())).await;
    }

    let partition = client.partition_properties(&emulator, HUB, "0").await;
    assert_eq!(partition.begin_sequence_number, 15);
    assert_eq!(partition.last_enqueued_sequence_number, 24);
    assert!(!partition.is_partition_empty);

    let mut from_start = client
        .receiver(&ReceiverOptions::partition("0").selector("amqp.annotation.x-opt-offset > '-1'"))
        .await;
    let events = next_events(&mut from_start, 10).await;
    let sequence_numbers: Vec<i64> = events.iter().map(|e| e.sequence_number).collect();
    assert_eq!(sequence_numbers, (15..25).collect::<Vec<_>>());
    assert_eq!(events[0].data(), b"event 15");
    assert_no_event_within(&mut from_start, std::time::Duration::from_millis(100)).await;

    // A position that has expired is a gap, not an error: reading resumes at the oldest event.
    let mut expired_position = client
        .receiver(
            &ReceiverOptions::partition("0")
                .selector("amqp.annotation.x-opt-sequence-number >= '3'"),
        )
        .await;
    assert_eq!(next_event(&mut expired_position).await.sequence_number, 15);

    // Other partitions keep their own window.
    let other = client.partition_properties(&emulator, HUB, "1").await;
    assert!(other.is_partition_empty);
    client.close().await;
    emulator.shutdown().await;
}
