//! Links that come and go on one session while others stay.

mod common;

use std::time::Duration;

use common::*;
use fe2o3_amqp::link::CreditMode;

/// A consumer that closes its link while the emulator still has transfers queued for it must not
/// take the session down: the emulator may send transfers up to its detach reply, never after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "emulator bug: transfers queued for a consumer link are sent after the emulator's \
            detach reply, so a fe2o3 client ends the whole session with \
            amqp:session:unattached-handle"]
async fn closing_a_receiver_mid_stream_keeps_the_session_usable() {
    let emulator = start_default().await;
    preload(&emulator, 0, 2000, 64);
    let mut client = Client::authorized(&emulator, HUB).await;
    for _ in 0..5 {
        let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
        next_event(&mut receiver).await;
        // Up to 300 credits' worth of transfers are in flight when the client detaches.
        receiver.close().await.expect("the receiver closes");
    }
    // The session is still up: a new link on it works.
    let mut receiver = client
        .receiver(&ReceiverOptions::partition("1").credit(CreditMode::Auto(10)))
        .await;
    preload(&emulator, 1, 1, 8);
    assert_eq!(next_event(&mut receiver).await.sequence_number, 0);
    assert_no_event_within(&mut receiver, Duration::from_millis(100)).await;
    client.close().await;
    emulator.shutdown().await;
}

/// The same open/close churn is fine when nothing is in flight at the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_closed_with_nothing_in_flight_leave_the_session_usable() {
    let emulator = start_default().await;
    preload(&emulator, 0, 20, 64);
    let mut client = Client::authorized(&emulator, HUB).await;
    for expected in 0..5 {
        let options = ReceiverOptions::partition("0")
            .selector(&format!(
                "amqp.annotation.x-opt-sequence-number >= '{expected}'"
            ))
            .credit(CreditMode::Manual);
        let mut receiver = client.receiver(&options).await;
        receiver.set_credit(1).await.expect("credit is granted");
        assert_eq!(next_event(&mut receiver).await.sequence_number, expected);
        receiver.close().await.expect("the receiver closes");
    }
    let properties = client.partition_properties(&emulator, HUB, "0").await;
    assert_eq!(properties.last_enqueued_sequence_number, 19);
    client.close().await;
    emulator.shutdown().await;
}
