//! `$management` READ: hub and partition properties with the exact AMQP types the SDKs need.

mod common;

use common::*;
use fe2o3_amqp::types::messaging::MessageId;
use fe2o3_amqp::types::primitives::{Uuid, Value};

/// 0001-01-01T00:00:00Z in Unix milliseconds: the service's "never" for an empty partition.
const NEVER_MS: i64 = -62_135_596_800_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_properties_have_the_exact_amqp_types() {
    let emulator = start_default().await;
    let before_start = now_ms();
    let mut client = Client::authorized(&emulator, HUB).await;
    // `HubProperties::from_body` fails on any other type: name String, created_at Timestamp,
    // partition_count Int, partition_ids Array of String, every key a String.
    let hub = client.hub_properties(&emulator, HUB).await;
    assert_eq!(hub.name, HUB);
    assert_eq!(hub.partition_count, 4);
    assert_eq!(hub.partition_ids, ["0", "1", "2", "3"]);
    assert!(
        (before_start - 60_000..=now_ms()).contains(&hub.created_at_ms),
        "created_at {} is not about now",
        hub.created_at_ms
    );
    let other = client.hub_properties(&emulator, OTHER_HUB).await;
    assert_eq!(other.partition_ids, ["0", "1"]);
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_properties_of_an_empty_partition() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let partition = client.partition_properties(&emulator, HUB, "1").await;
    assert_eq!(partition.hub, HUB);
    assert_eq!(partition.partition, "1");
    assert!(partition.is_partition_empty);
    assert_eq!(partition.last_enqueued_sequence_number, -1);
    assert_eq!(partition.begin_sequence_number, 0);
    assert_eq!(partition.last_enqueued_offset, "-1");
    assert_eq!(partition.last_enqueued_time_ms, NEVER_MS);
    assert_eq!(partition.last_enqueued_sequence_number_epoch, 0);
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partition_properties_agree_with_the_published_events() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/2")).await;
    for i in 0..7 {
        publish(&mut sender, event_message(format!("event {i}").as_bytes())).await;
    }
    let mut receiver = client.receiver(&ReceiverOptions::partition("2")).await;
    let events = next_events(&mut receiver, 7).await;
    let last = events.last().unwrap();

    let partition = client.partition_properties(&emulator, HUB, "2").await;
    assert!(!partition.is_partition_empty);
    assert_eq!(partition.begin_sequence_number, 0);
    assert_eq!(partition.last_enqueued_sequence_number, 6);
    assert_eq!(
        partition.last_enqueued_sequence_number,
        last.sequence_number
    );
    assert_eq!(partition.last_enqueued_offset, last.offset);
    assert_eq!(partition.last_enqueued_time_ms, last.enqueued_time_ms);
    // Offsets are opaque strings, but the emulator's grow with every event.
    let offsets: Vec<u64> = events.iter().map(|e| e.offset.parse().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    // The other partitions saw nothing.
    for id in ["0", "1", "3"] {
        assert!(
            client
                .partition_properties(&emulator, HUB, id)
                .await
                .is_partition_empty
        );
    }
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hub_and_unknown_partition_are_404() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let hub = client
        .management_read(&emulator, "com.microsoft:eventhub", "nohub", None)
        .await;
    assert_eq!(hub.status_code, 404, "{}", hub.description);
    let partition = client
        .management_read(&emulator, "com.microsoft:partition", "nohub", Some("0"))
        .await;
    assert_eq!(partition.status_code, 404, "{}", partition.description);
    let partition = client
        .management_read(&emulator, "com.microsoft:partition", HUB, Some("99"))
        .await;
    assert_eq!(partition.status_code, 404, "{}", partition.description);
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_correlate_with_the_request_message_id_in_its_own_type() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let token = sas_token(&emulator, HUB);
    let read = [
        ("operation", "READ"),
        ("type", "com.microsoft:eventhub"),
        ("name", HUB),
        ("security_token", token.as_str()),
    ];
    for message_id in [
        MessageId::Ulong(42),
        MessageId::Uuid(Uuid::from([7u8; 16])),
        MessageId::String("request-1".into()),
    ] {
        let response = client
            .management_request(Some(message_id.clone()), &read)
            .await;
        assert_eq!(response.status_code, 200);
        assert_eq!(response.correlation_id, Some(message_id));
    }
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_any_token_is_401_and_a_bad_one_is_400() {
    let emulator = start_default().await;
    let mut client = Client::connect(&emulator).await;
    let anonymous = client
        .management_request(
            None,
            &[
                ("operation", "READ"),
                ("type", "com.microsoft:eventhub"),
                ("name", HUB),
            ],
        )
        .await;
    assert_eq!(anonymous.status_code, 401, "{}", anonymous.description);
    assert_eq!(anonymous.body, Value::Null);

    let token = sas_token(&emulator, HUB);
    let unknown_operation = client
        .management_request(
            None,
            &[
                ("operation", "DELETE"),
                ("type", "com.microsoft:eventhub"),
                ("name", HUB),
                ("security_token", token.as_str()),
            ],
        )
        .await;
    assert_eq!(
        unknown_operation.status_code, 400,
        "{}",
        unknown_operation.description
    );
    let unknown_type = client
        .management_request(
            None,
            &[
                ("operation", "READ"),
                ("type", "com.microsoft:consumergroup"),
                ("name", HUB),
                ("security_token", token.as_str()),
            ],
        )
        .await;
    assert_eq!(
        unknown_type.status_code, 400,
        "{}",
        unknown_type.description
    );
    client.close().await;
    emulator.shutdown().await;
}
