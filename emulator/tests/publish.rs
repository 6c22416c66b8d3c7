//! Publishing: routing, the batch format, what round-trips, and the message size limit.

mod common;

use common::raw::HideMaxMessageSize;
use common::*;
use fe2o3_amqp::link::SendError;
use fe2o3_amqp::types::messaging::annotations::OwnedKey;
use fe2o3_amqp::types::messaging::{
    AmqpSequence, AmqpValue, ApplicationProperties, Body, Data, Header, Message,
    MessageAnnotations, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{
    Binary, OrderedMap, SimpleValue, Symbol, Timestamp, Uuid, Value,
};
use hubcap_emulator::{Emulator, EmulatorConfig};

async fn event_counts(client: &mut Client, emulator: &Emulator) -> Vec<i64> {
    let mut counts = Vec::new();
    for id in ["0", "1", "2", "3"] {
        let partition = client.partition_properties(emulator, HUB, id).await;
        counts.push(partition.last_enqueued_sequence_number + 1);
    }
    counts
}

fn with_partition_key(mut message: Message<Body<Value>>, key: &str) -> Message<Body<Value>> {
    let mut annotations = OrderedMap::new();
    annotations.insert(
        OwnedKey::Symbol(Symbol::from("x-opt-partition-key")),
        Value::String(key.into()),
    );
    message.message_annotations = Some(MessageAnnotations(annotations));
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_the_hub_are_spread_round_robin_over_the_partitions() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut sender = client.sender(HUB).await;
    for i in 0..8 {
        publish(&mut sender, event_message(format!("event {i}").as_bytes())).await;
    }
    assert_eq!(event_counts(&mut client, &emulator).await, [2, 2, 2, 2]);
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_a_partition_land_in_that_partition() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/2")).await;
    for i in 0..3 {
        publish(&mut sender, event_message(format!("event {i}").as_bytes())).await;
    }
    // A batch to a partition lands there too, in order.
    let events = [event_message(b"b0"), event_message(b"b1")];
    publish(&mut sender, batch(&events, None)).await;
    assert_eq!(event_counts(&mut client, &emulator).await, [0, 0, 5, 0]);

    let mut receiver = client.receiver(&ReceiverOptions::partition("2")).await;
    let bodies: Vec<Vec<u8>> = next_events(&mut receiver, 5)
        .await
        .iter()
        .map(Event::data)
        .collect();
    assert_eq!(
        bodies,
        [&b"event 0"[..], b"event 1", b"event 2", b"b0", b"b1"]
    );
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_partition_key_lands_whole_in_one_stable_partition() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut sender = client.sender(HUB).await;
    let first: Vec<_> = (0..5)
        .map(|i| event_message(format!("first {i}").as_bytes()))
        .collect();
    publish(&mut sender, batch(&first, Some("device-7"))).await;
    let counts = event_counts(&mut client, &emulator).await;
    let partition = counts
        .iter()
        .position(|&c| c == 5)
        .expect("one partition has all 5");
    assert_eq!(counts.iter().sum::<i64>(), 5, "{counts:?}");

    let second: Vec<_> = (0..3)
        .map(|i| event_message(format!("second {i}").as_bytes()))
        .collect();
    publish(&mut sender, batch(&second, Some("device-7"))).await;
    // A single event with the same key in its own annotations goes to the same partition.
    publish(
        &mut sender,
        with_partition_key(event_message(b"single"), "device-7"),
    )
    .await;
    let mut expected = vec![0; 4];
    expected[partition] = 9;
    assert_eq!(event_counts(&mut client, &emulator).await, expected);

    let mut receiver = client
        .receiver(&ReceiverOptions::partition(&partition.to_string()))
        .await;
    let events = next_events(&mut receiver, 9).await;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.sequence_number, i as i64);
        assert_eq!(event.partition_key.as_deref(), Some("device-7"));
    }
    assert_eq!(events[0].data(), b"first 0");
    assert_eq!(events[5].data(), b"second 0");
    assert_eq!(events[8].data(), b"single");
    client.close().await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_properties_and_application_properties_round_trip() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/1")).await;

    let properties = Properties {
        message_id: Some(MessageId::String("message-1".into())),
        user_id: Some(Binary::from(b"user".to_vec())),
        to: Some("somewhere".into()),
        subject: Some("a subject".into()),
        reply_to: Some("replies".into()),
        correlation_id: Some(MessageId::Uuid(Uuid::from([9u8; 16]))),
        content_type: Some(Symbol::from("application/json")),
        content_encoding: Some(Symbol::from("utf-8")),
        absolute_expiry_time: Some(Timestamp::from_milliseconds(1_900_000_000_000)),
        creation_time: Some(Timestamp::from_milliseconds(1_700_000_000_123)),
        group_id: Some("group".into()),
        group_sequence: Some(7),
        reply_to_group_id: Some("reply group".into()),
    };
    let mut application_properties = OrderedMap::new();
    for (key, value) in [
        ("string", SimpleValue::String("text".into())),
        ("long", SimpleValue::Long(-42)),
        ("int", SimpleValue::Int(7)),
        ("bool", SimpleValue::Bool(true)),
        ("double", SimpleValue::Double(1.5.into())),
        (
            "timestamp",
            SimpleValue::Timestamp(Timestamp::from_milliseconds(5)),
        ),
        ("binary", SimpleValue::Binary(Binary::from(vec![0u8, 255]))),
    ] {
        application_properties.insert(key.to_string(), value);
    }
    let mut annotations = OrderedMap::new();
    annotations.insert(
        OwnedKey::Symbol(Symbol::from("x-opt-custom")),
        Value::String("kept".into()),
    );
    let two_data_sections = Body::Data(
        vec![
            Data(Binary::from(b"part one ".to_vec())),
            Data(Binary::from(b"part two".to_vec())),
        ]
        .into(),
    );
    let full = Message {
        header: Some(Header {
            durable: true,
            ..Header::default()
        }),
        delivery_annotations: None,
        message_annotations: Some(MessageAnnotations(annotations)),
        properties: Some(properties.clone()),
        application_properties: Some(ApplicationProperties(application_properties.clone())),
        body: two_data_sections.clone(),
        footer: None,
    };
    let mut map = OrderedMap::new();
    map.insert(Value::String("k".into()), Value::Long(1));
    let value_body = Body::Value(AmqpValue(Value::Map(map)));
    let sequence_body = Body::Sequence(
        vec![AmqpSequence(vec![
            Value::Int(1),
            Value::String("two".into()),
        ])]
        .into(),
    );
    let mut value_message = event_message(b"");
    value_message.body = value_body.clone();
    let mut sequence_message = event_message(b"");
    sequence_message.body = sequence_body.clone();

    publish(&mut sender, full).await;
    publish(&mut sender, value_message).await;
    publish(&mut sender, sequence_message).await;

    let mut receiver = client.receiver(&ReceiverOptions::partition("1")).await;
    let events = next_events(&mut receiver, 3).await;
    let received = &events[0].message;
    assert_eq!(received.properties.as_ref(), Some(&properties));
    assert_eq!(
        received.application_properties.as_ref().map(|p| &p.0),
        Some(&application_properties)
    );
    assert_eq!(received.body, two_data_sections);
    assert_eq!(events[0].data(), b"part one part two");
    assert!(received.header.as_ref().is_some_and(|h| h.durable));
    let custom = received
        .message_annotations
        .as_ref()
        .and_then(|a| a.0.get(&OwnedKey::Symbol(Symbol::from("x-opt-custom"))));
    assert_eq!(custom, Some(&Value::String("kept".into())));
    assert_eq!(events[0].partition_key, None);
    assert_eq!(events[1].message.body, value_body);
    assert_eq!(events[2].message.body, sequence_body);
    client.close().await;
    emulator.shutdown().await;
}

const SMALL_LIMIT: u64 = 64 * 1024;

fn small_limit_config() -> EmulatorConfig {
    EmulatorConfig {
        max_message_size: SMALL_LIMIT,
        ..config()
    }
}

/// fe2o3's client adopts the smaller of its own and the peer's limit and refuses larger
/// messages locally, so through a plain client this checks what the attach advertises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publishing_link_advertises_the_configured_max_message_size() {
    let emulator = start(small_limit_config()).await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut sender = client.sender(HUB).await;
    assert_eq!(sender.max_message_size(), Some(SMALL_LIMIT));
    let oversized = event_message(&vec![b'x'; SMALL_LIMIT as usize]);
    match sender.send(oversized).await {
        Err(SendError::MessageSizeExceeded(exceeded)) => {
            assert_eq!(exceeded.max_size, SMALL_LIMIT);
        }
        other => panic!("expected a local size refusal, got {other:?}"),
    }
    client.close().await;
    emulator.shutdown().await;
}

/// With the advertised limit hidden from the client, the oversized message reaches the
/// emulator, which closes the link with `amqp:link:message-size-exceeded` and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_closes_the_publishing_link_with_message_size_exceeded() {
    let emulator = start(small_limit_config()).await;
    let socket = raw::connect(emulator.amqp_addr()).await;
    let mut client = Client::connect_over(&emulator, HideMaxMessageSize::new(socket)).await;
    client.put_sas_token(&emulator, HUB).await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/0")).await;
    assert_eq!(sender.max_message_size(), None, "the limit was not hidden");

    // The data section alone is the limit; with its encoding the message is just over.
    let oversized = event_message(&vec![b'x'; SMALL_LIMIT as usize]);
    let error = within("the oversized send fails", STEP, sender.send(oversized))
        .await
        .expect_err("the emulator must refuse the message");
    let error = send_link_error(&error).unwrap_or_else(|| panic!("no AMQP error: {error:?}"));
    assert_eq!(
        error.condition, "amqp:link:message-size-exceeded",
        "{error:?}"
    );

    // The connection stays usable and a message under the limit is accepted.
    let mut sender = client.sender(&format!("{HUB}/Partitions/0")).await;
    publish(
        &mut sender,
        event_message(&vec![b'y'; SMALL_LIMIT as usize - 1024]),
    )
    .await;
    let partition = client.partition_properties(&emulator, HUB, "0").await;
    assert_eq!(
        partition.last_enqueued_sequence_number, 0,
        "only the small message is stored"
    );
    client.close().await;
    emulator.shutdown().await;
}
