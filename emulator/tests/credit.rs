//! Link credit: the emulator never sends past what the client granted.

mod common;

use std::time::Duration;

use common::*;
use fe2o3_amqp::link::CreditMode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_credit_limits_deliveries_to_what_was_granted() {
    let emulator = start_default().await;
    preload(&emulator, 0, 20, 64);
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut receiver = client
        .receiver(&ReceiverOptions::partition("0").credit(CreditMode::Manual))
        .await;
    // No credit yet: nothing may arrive.
    assert_no_event_within(&mut receiver, Duration::from_millis(300)).await;

    receiver.set_credit(5).await.expect("credit is granted");
    let first: Vec<i64> = next_events(&mut receiver, 5)
        .await
        .iter()
        .map(|e| e.sequence_number)
        .collect();
    assert_eq!(first, [0, 1, 2, 3, 4]);
    assert_no_event_within(&mut receiver, Duration::from_millis(300)).await;

    receiver.set_credit(5).await.expect("credit is granted");
    let second: Vec<i64> = next_events(&mut receiver, 5)
        .await
        .iter()
        .map(|e| e.sequence_number)
        .collect();
    assert_eq!(second, [5, 6, 7, 8, 9]);
    assert_no_event_within(&mut receiver, Duration::from_millis(300)).await;

    // Credit granted while the partition is drained is used by later events.
    receiver.set_credit(15).await.expect("credit is granted");
    next_events(&mut receiver, 10).await;
    preload(&emulator, 0, 8, 64);
    let tail: Vec<i64> = next_events(&mut receiver, 5)
        .await
        .iter()
        .map(|e| e.sequence_number)
        .collect();
    assert_eq!(tail, [20, 21, 22, 23, 24]);
    assert_no_event_within(&mut receiver, Duration::from_millis(300)).await;
    client.close().await;
    emulator.shutdown().await;
}
