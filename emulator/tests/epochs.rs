//! Owner levels (`com.microsoft:epoch`) between the consumers of one partition.

mod common;

use std::time::Duration;

use common::*;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use hubcap_emulator::Emulator;

const STOLEN: &str = "amqp:link:stolen";

/// The emulator with consumer group cg1 besides `$Default`; partition 0 starts empty.
async fn emulator_with_cg1() -> Emulator {
    start(hubcap_emulator::EmulatorConfig {
        consumer_groups: vec!["cg1".into()],
        ..config()
    })
    .await
}

/// Appends one event to partition 0 and returns its sequence number.
fn append_one(emulator: &Emulator) -> i64 {
    preload(emulator, 0, 1, 8);
    emulator.namespace().hub(HUB).unwrap().partitions[0]
        .properties()
        .last_enqueued_sequence_number
}

async fn steal(old_epoch: i64, new_epoch: i64) {
    let emulator = emulator_with_cg1().await;
    let mut owner = Client::authorized(&emulator, HUB).await;
    let mut thief = Client::authorized(&emulator, HUB).await;
    let mut old = owner
        .receiver(&ReceiverOptions::partition("0").epoch(old_epoch))
        .await;
    let first = append_one(&emulator);
    assert_eq!(next_event(&mut old).await.sequence_number, first);

    let mut new = thief
        .receiver(&ReceiverOptions::partition("0").epoch(new_epoch))
        .await;
    let error = detach_error(&mut old).await;
    assert_eq!(error.condition, STOLEN, "{error:?}");
    assert!(
        error
            .description
            .contains(&format!("epoch of '{new_epoch}'")),
        "{error:?}"
    );
    // The new owner reads from its own start position and keeps receiving.
    assert_eq!(next_event(&mut new).await.sequence_number, first);
    let second = append_one(&emulator);
    assert_eq!(next_event(&mut new).await.sequence_number, second);

    owner.close().await;
    thief.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_equal_epoch_steals_the_partition() {
    steal(3, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_higher_epoch_steals_the_partition() {
    steal(3, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_epoch_is_refused_and_the_owner_keeps_receiving() {
    let emulator = emulator_with_cg1().await;
    let mut owner = Client::authorized(&emulator, HUB).await;
    let mut late = Client::authorized(&emulator, HUB).await;
    let mut current = owner
        .receiver(&ReceiverOptions::partition("0").epoch(5))
        .await;

    let mut lower = late
        .receiver(&ReceiverOptions::partition("0").epoch(4))
        .await;
    let error = refusal(&mut lower).await;
    assert_eq!(error.condition, STOLEN, "{error:?}");
    assert!(error.description.contains("higher epoch '5'"), "{error:?}");

    let sequence_number = append_one(&emulator);
    assert_eq!(
        next_event(&mut current).await.sequence_number,
        sequence_number
    );
    owner.close().await;
    late.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_epoch_receiver_is_refused_while_an_epoch_receiver_exists() {
    let emulator = emulator_with_cg1().await;
    let mut owner = Client::authorized(&emulator, HUB).await;
    let mut other = Client::authorized(&emulator, HUB).await;
    let mut current = owner
        .receiver(&ReceiverOptions::partition("0").epoch(0))
        .await;

    let mut plain = other.receiver(&ReceiverOptions::partition("0")).await;
    let error = refusal(&mut plain).await;
    assert_eq!(error.condition, STOLEN, "{error:?}");
    assert!(
        error
            .description
            .contains("non-epoch receiver is not allowed"),
        "{error:?}"
    );

    let sequence_number = append_one(&emulator);
    assert_eq!(
        next_event(&mut current).await.sequence_number,
        sequence_number
    );
    owner.close().await;
    other.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_receiver_disconnects_every_non_epoch_receiver() {
    let emulator = emulator_with_cg1().await;
    let mut readers = Client::authorized(&emulator, HUB).await;
    let mut owner = Client::authorized(&emulator, HUB).await;
    let mut first = readers.receiver(&ReceiverOptions::partition("0")).await;
    let mut second = readers.receiver(&ReceiverOptions::partition("0")).await;

    let mut epoch_receiver = owner
        .receiver(&ReceiverOptions::partition("0").epoch(0))
        .await;
    for plain in [&mut first, &mut second] {
        let error = detach_error(plain).await;
        assert_eq!(error.condition, STOLEN, "{error:?}");
    }
    let sequence_number = append_one(&emulator);
    assert_eq!(
        next_event(&mut epoch_receiver).await.sequence_number,
        sequence_number
    );
    readers.close().await;
    owner.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixth_non_epoch_receiver_is_refused_with_resource_limit_exceeded() {
    let emulator = emulator_with_cg1().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut five = Vec::new();
    for _ in 0..5 {
        five.push(client.receiver(&ReceiverOptions::partition("0")).await);
    }
    let mut sixth = client.receiver(&ReceiverOptions::partition("0")).await;
    let error = refusal(&mut sixth).await;
    assert_eq!(error.condition, "amqp:resource-limit-exceeded", "{error:?}");

    // The quota is per partition and consumer group.
    let mut other_partition = client.receiver(&ReceiverOptions::partition("1")).await;
    let mut other_group = client
        .receiver(&ReceiverOptions::partition("0").consumer_group("cg1"))
        .await;
    let sequence_number = append_one(&emulator);
    assert_eq!(
        next_event(&mut other_group).await.sequence_number,
        sequence_number
    );
    for receiver in five.iter_mut() {
        assert_eq!(next_event(receiver).await.sequence_number, sequence_number);
    }
    assert_no_event_within(&mut other_partition, Duration::from_millis(100)).await;

    // Once one of the five leaves, a new non-epoch receiver is admitted again.
    five.pop()
        .unwrap()
        .close()
        .await
        .expect("a receiver closes");
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let options = ReceiverOptions::partition("0")
            .selector("amqp.annotation.x-opt-sequence-number >= '0'");
        let mut receiver = client.receiver(&options).await;
        match tokio::time::timeout(Duration::from_millis(500), receiver.recv::<Body<Value>>()).await
        {
            Ok(Ok(delivery)) => {
                assert_eq!(
                    Event::from_message(delivery.into_message()).sequence_number,
                    0
                );
                break;
            }
            Ok(Err(error)) => {
                let error = recv_link_error(&error).expect("a refusal carries an error");
                assert_eq!(error.condition, "amqp:resource-limit-exceeded");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the freed slot was never reused"
                );
            }
            Err(_) => panic!("the receiver neither received nor was refused"),
        }
    }
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_consumer_group_is_unaffected_by_epochs() {
    let emulator = emulator_with_cg1().await;
    let mut default_group = Client::authorized(&emulator, HUB).await;
    let mut cg1 = Client::authorized(&emulator, HUB).await;
    let mut owner = default_group
        .receiver(&ReceiverOptions::partition("0").epoch(7))
        .await;

    // cg1 admits a non-epoch receiver and a lower epoch despite $Default's epoch 7 ...
    let mut plain = cg1
        .receiver(&ReceiverOptions::partition("0").consumer_group("cg1"))
        .await;
    let sequence_number = append_one(&emulator);
    assert_eq!(
        next_event(&mut plain).await.sequence_number,
        sequence_number
    );
    plain.close().await.expect("the cg1 receiver closes");
    let mut low = cg1
        .receiver(
            &ReceiverOptions::partition("0")
                .consumer_group("cg1")
                .epoch(1),
        )
        .await;
    assert_eq!(next_event(&mut low).await.sequence_number, sequence_number);

    // ... and neither disturbs the $Default owner.
    assert_eq!(
        next_event(&mut owner).await.sequence_number,
        sequence_number
    );
    let next = append_one(&emulator);
    assert_eq!(next_event(&mut owner).await.sequence_number, next);
    assert_eq!(next_event(&mut low).await.sequence_number, next);

    default_group.close().await;
    cg1.close().await;
    emulator.shutdown().await;
}
