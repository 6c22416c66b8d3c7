//! Start positions: the `apache.org:selector-filter:string` filter in each SDK's spelling.

mod common;

use std::time::Duration;

use common::*;
use fe2o3_amqp::link::CreditMode;
use fe2o3_amqp::types::primitives::Value;

const OFFSET: &str = "amqp.annotation.x-opt-offset";
const SEQUENCE_NUMBER: &str = "amqp.annotation.x-opt-sequence-number";
const ENQUEUED_TIME: &str = "amqp.annotation.x-opt-enqueued-time";

/// Ten preloaded events on partition 0, and a client authorized for hub1.
async fn ten_events() -> (hubcap_emulator::Emulator, Client) {
    let emulator = start_default().await;
    preload(&emulator, 0, 10, 32);
    let client = Client::authorized(&emulator, HUB).await;
    (emulator, client)
}

/// The first event a receiver with these options gets. One credit only, so that no transfer is
/// in flight when the probe closes its link (see `link_lifecycle.rs` for why that matters).
async fn first_sequence_number(client: &mut Client, options: ReceiverOptions) -> i64 {
    let mut receiver = client.receiver(&options.credit(CreditMode::Manual)).await;
    receiver.set_credit(1).await.expect("credit is granted");
    let first = next_event(&mut receiver).await.sequence_number;
    receiver.close().await.expect("receiver closes");
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_filter_is_inclusive_with_ge_and_exclusive_with_gt() {
    let (emulator, mut client) = ten_events().await;
    let mut all = client.receiver(&ReceiverOptions::partition("0")).await;
    let events = next_events(&mut all, 10).await;
    let offset_of_4 = &events[4].offset;

    let inclusive =
        ReceiverOptions::partition("0").selector(&format!("{OFFSET} >= '{offset_of_4}'"));
    assert_eq!(first_sequence_number(&mut client, inclusive).await, 4);
    let exclusive =
        ReceiverOptions::partition("0").selector(&format!("{OFFSET} > '{offset_of_4}'"));
    assert_eq!(first_sequence_number(&mut client, exclusive).await, 5);

    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_number_filter_is_inclusive_with_ge_and_exclusive_with_gt() {
    let (emulator, mut client) = ten_events().await;
    let inclusive = ReceiverOptions::partition("0").selector(&format!("{SEQUENCE_NUMBER} >= '4'"));
    assert_eq!(first_sequence_number(&mut client, inclusive).await, 4);
    let exclusive = ReceiverOptions::partition("0").selector(&format!("{SEQUENCE_NUMBER} > '4'"));
    assert_eq!(first_sequence_number(&mut client, exclusive).await, 5);
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueued_time_filter_starts_after_the_given_time() {
    let emulator = start_default().await;
    preload(&emulator, 0, 3, 32);
    let first_batch_time = emulator.namespace().hub(HUB).unwrap().partitions[0]
        .properties()
        .last_enqueued_time_ms;
    // The next batch must be stamped with a later millisecond.
    eventually("the clock moves on", Duration::from_secs(1), || {
        now_ms() > first_batch_time
    })
    .await;
    preload(&emulator, 0, 3, 32);
    let mut client = Client::authorized(&emulator, HUB).await;

    let after = ReceiverOptions::partition("0")
        .selector(&format!("{ENQUEUED_TIME} > '{first_batch_time}'"));
    assert_eq!(first_sequence_number(&mut client, after).await, 3);
    let at = ReceiverOptions::partition("0")
        .selector(&format!("{ENQUEUED_TIME} >= '{first_batch_time}'"));
    assert_eq!(first_sequence_number(&mut client, at).await, 0);
    let before = ReceiverOptions::partition("0")
        .selector(&format!("{ENQUEUED_TIME} > '{}'", first_batch_time - 1));
    assert_eq!(first_sequence_number(&mut client, before).await, 0);

    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_minus_one_starts_at_the_beginning_of_the_stream() {
    let (emulator, mut client) = ten_events().await;
    let mut receiver = client
        .receiver(&ReceiverOptions::partition("0").selector(&format!("{OFFSET} > '-1'")))
        .await;
    let sequence_numbers: Vec<i64> = next_events(&mut receiver, 10)
        .await
        .iter()
        .map(|e| e.sequence_number)
        .collect();
    assert_eq!(sequence_numbers, (0..10).collect::<Vec<_>>());
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_delivers_only_events_published_after_the_attach() {
    let (emulator, mut client) = ten_events().await;
    let mut receiver = client
        .receiver(&ReceiverOptions::partition("0").selector(&format!("{OFFSET} > '@latest'")))
        .await;
    assert_no_event_within(&mut receiver, Duration::from_millis(200)).await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/0")).await;
    publish(&mut sender, event_message(b"after attach")).await;
    let event = next_event(&mut receiver).await;
    assert_eq!(event.sequence_number, 10);
    assert_eq!(event.data(), b"after attach");
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quoted_and_unquoted_values_in_every_sdk_spelling_agree() {
    let (emulator, mut client) = ten_events().await;
    for expression in [
        format!("{SEQUENCE_NUMBER} > '3'"), // Python
        format!("{SEQUENCE_NUMBER} >'3'"),  // Rust
        format!("{SEQUENCE_NUMBER} > 3"),   // .NET
        format!("{SEQUENCE_NUMBER}>3"),
    ] {
        let options = ReceiverOptions::partition("0").selector(&expression);
        assert_eq!(
            first_sequence_number(&mut client, options).await,
            4,
            "{expression}"
        );
    }
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbol_and_ulong_descriptors_are_both_accepted() {
    let (emulator, mut client) = ten_events().await;
    let expression = format!("{SEQUENCE_NUMBER} >= '7'");
    let by_code = ReceiverOptions::partition("0").selector(&expression);
    assert_eq!(first_sequence_number(&mut client, by_code).await, 7);
    let by_name = ReceiverOptions::partition("0").named_selector(&expression);
    assert_eq!(first_sequence_number(&mut client, by_name).await, 7);
    let legacy_bare_string =
        ReceiverOptions::partition("0").raw_filter(Value::String(expression.clone()));
    assert_eq!(
        first_sequence_number(&mut client, legacy_bare_string).await,
        7
    );
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_filter_starts_at_the_beginning_of_the_stream() {
    let (emulator, mut client) = ten_events().await;
    assert_eq!(
        first_sequence_number(&mut client, ReceiverOptions::partition("0")).await,
        0
    );
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_past_the_end_are_refused_with_argument_out_of_range() {
    let (emulator, mut client) = ten_events().await;
    for expression in [
        format!("{SEQUENCE_NUMBER} > '10'"),
        format!("{SEQUENCE_NUMBER} >= '11'"),
        format!("{OFFSET} > '99999999'"),
    ] {
        let mut receiver = client
            .receiver(&ReceiverOptions::partition("0").selector(&expression))
            .await;
        let error = refusal(&mut receiver).await;
        assert_eq!(
            error.condition, "com.microsoft:argument-out-of-range",
            "{expression}: {error:?}"
        );
    }
    // The position right after the last event is the end of the stream, not past it.
    let at_end = ReceiverOptions::partition("0").selector(&format!("{SEQUENCE_NUMBER} > '9'"));
    let mut receiver = client.receiver(&at_end).await;
    assert_no_event_within(&mut receiver, Duration::from_millis(200)).await;
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_filters_are_refused_and_the_connection_stays_usable() {
    let (emulator, mut client) = ten_events().await;
    let garbage = [
        ReceiverOptions::partition("0").selector("1=1"),
        ReceiverOptions::partition("0").selector(&format!("{OFFSET} > 'abc'")),
        ReceiverOptions::partition("0").selector("amqp.annotation.x-opt-partition-key > 'a'"),
        ReceiverOptions::partition("0").selector(""),
        ReceiverOptions::partition("0").raw_filter(Value::Long(5)),
    ];
    for options in garbage {
        let mut receiver = client.receiver(&options).await;
        let error = refusal(&mut receiver).await;
        assert_eq!(
            error.condition, "com.microsoft:argument-error",
            "{:?}: {error:?}",
            options.filter
        );
    }
    // Same connection and session: a valid receiver still works.
    let mut receiver = client
        .receiver(&ReceiverOptions::partition("0").selector(&format!("{SEQUENCE_NUMBER} >= '9'")))
        .await;
    assert_eq!(next_event(&mut receiver).await.sequence_number, 9);
    client.close().await;
    emulator.shutdown().await;
}
