//! Malformed input never takes the emulator down: after each case a normal client still gets
//! a full round trip from the same emulator.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::raw::{self, AMQP_HEADER, SASL_HEADER};
use common::*;
use fe2o3_amqp::types::messaging::{Body, Data, Message, Outcome};
use fe2o3_amqp::types::performatives::Open;
use fe2o3_amqp::types::primitives::{Binary, Value};
use fe2o3_amqp::Sendable;
use tokio::io::AsyncWriteExt;

/// How long the emulator may take to hang up on a peer that spoke nonsense.
const HANG_UP: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_garbage_is_hung_up_on() {
    let emulator = start_default().await;
    for seed in 1..=3 {
        let mut socket = raw::connect(emulator.amqp_addr()).await;
        // Whatever the server answers, the peer is gone before it reads a reply.
        let _ = socket.write_all(&raw::garbage(4096, seed)).await;
        assert!(
            raw::closed_by_server_within(&mut socket, HANG_UP).await,
            "garbage (seed {seed}) left the connection open"
        );
    }
    assert_emulator_serves(&emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_a_protocol_header_is_hung_up_on() {
    let emulator = start_default().await;
    for header in [
        SASL_HEADER,
        AMQP_HEADER,
        *b"AMQP\x02\x01\x00\x00",
        *b"AMQP\x00\x09\x09\x09",
    ] {
        let mut socket = raw::connect(emulator.amqp_addr()).await;
        let mut bytes = header.to_vec();
        bytes.extend(raw::garbage(512, u64::from(header[4]) + 7));
        let _ = socket.write_all(&bytes).await;
        assert!(
            raw::closed_by_server_within(&mut socket, HANG_UP).await,
            "garbage after {header:?} left the connection open"
        );
    }
    assert_emulator_serves(&emulator).await;
    emulator.shutdown().await;
}

/// First frames after a correct SASL and AMQP header exchange that are not a valid Open.
fn invalid_first_frames() -> [(&'static str, Vec<u8>); 3] {
    let mut zero_data_offset = raw::amqp_frame(&raw::garbage(32, 11));
    zero_data_offset[4] = 0;
    [
        (
            "a frame whose body is garbage",
            raw::amqp_frame(&raw::garbage(64, 5)),
        ),
        ("a frame with data offset 0", zero_data_offset),
        (
            "a transfer before open",
            raw::amqp_frame(&[0x00, 0x53, 0x14, 0x45]),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_first_frames_do_not_disturb_the_emulator() {
    let emulator = start_default().await;
    let mut sockets = Vec::new();
    for (_, bytes) in invalid_first_frames() {
        let mut socket = raw::connect(emulator.amqp_addr()).await;
        raw::negotiate_to_open(&mut socket).await;
        let _ = socket.write_all(&bytes).await;
        // Kept open while the emulator serves others.
        sockets.push(socket);
    }
    assert_emulator_serves(&emulator).await;
    drop(sockets);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_first_frames_are_hung_up_on() {
    let emulator = start_default().await;
    for (what, bytes) in invalid_first_frames() {
        let mut socket = raw::connect(emulator.amqp_addr()).await;
        raw::negotiate_to_open(&mut socket).await;
        let _ = socket.write_all(&bytes).await;
        assert!(
            raw::closed_by_server_within(&mut socket, HANG_UP).await,
            "{what} left the connection open"
        );
    }
    emulator.shutdown().await;
}

/// Panics on the runtime's worker threads since the hook was installed.
static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_worker_panics() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some("tokio-rt-worker") {
            WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));
}

/// A frame whose size field is below 8 makes fe2o3-amqp 0.18.4 panic ("advance out of bounds"
/// in `FrameDecoder`, frames/amqp.rs:234): an upstream bug, guarded against by the
/// `amqp-frame-guard` crate wrapping the stream the emulator hands to fe2o3, which fails the
/// read instead. Tokio would contain the panic, but a panic=abort build would crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_shorter_than_its_header_is_refused_without_a_panic() {
    count_worker_panics();
    let emulator = start_default().await;
    let mut socket = raw::connect(emulator.amqp_addr()).await;
    raw::negotiate_to_open(&mut socket).await;
    let mut short_frame = 4u32.to_be_bytes().to_vec();
    short_frame.extend([2, 0, 0, 0]);
    let _ = socket.write_all(&short_frame).await;
    assert!(raw::closed_by_server_within(&mut socket, HANG_UP).await);
    assert_emulator_serves(&emulator).await;
    assert_eq!(
        WORKER_PANICS.load(Ordering::SeqCst),
        0,
        "the emulator panicked"
    );
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_larger_than_the_limit_is_hung_up_on() {
    let emulator = start_default().await;
    let mut socket = raw::connect(emulator.amqp_addr()).await;
    raw::negotiate_to_open(&mut socket).await;
    // Announces 2 GiB; the emulator must not wait for (or buffer) all of it.
    let mut header = 0x8000_0000u32.to_be_bytes().to_vec();
    header.extend([2, 0, 0, 0]);
    let _ = socket.write_all(&header).await;
    let _ = socket.write_all(&raw::garbage(1024, 3)).await;
    assert!(
        raw::closed_by_server_within(&mut socket, HANG_UP).await,
        "an oversized frame left the connection open"
    );
    assert_emulator_serves(&emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_frame_do_not_disturb_the_emulator() {
    let emulator = start_default().await;
    // Cut inside the SASL header, inside a SASL frame, and inside the Open frame.
    let mut socket = raw::connect(emulator.amqp_addr()).await;
    socket.write_all(&SASL_HEADER[..5]).await.unwrap();
    drop(socket);

    let mut socket = raw::connect(emulator.amqp_addr()).await;
    socket.write_all(&SASL_HEADER).await.unwrap();
    socket.write_all(&[0, 0, 0, 40, 2, 1, 0]).await.unwrap();
    drop(socket);

    let mut socket = raw::connect(emulator.amqp_addr()).await;
    raw::negotiate_to_open(&mut socket).await;
    let open = Open {
        container_id: "cut-client".into(),
        hostname: Some("127.0.0.1".into()),
        max_frame_size: Default::default(),
        channel_max: Default::default(),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    let frame = raw::amqp_frame(&serde_amqp::to_vec(&open).unwrap());
    socket.write_all(&frame[..frame.len() / 2]).await.unwrap();
    drop(socket);

    assert_emulator_serves(&emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_to_unknown_entities_are_not_found() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let receivers = [
        ReceiverOptions::partition("0").hub("nohub"),
        ReceiverOptions::partition("99"),
        ReceiverOptions::partition("01"),
        ReceiverOptions::partition("0").consumer_group("no-such-group"),
        ReceiverOptions::partition("0").address("hub1/ConsumerGroups/$Default"),
        ReceiverOptions::partition("0").address(HUB),
        ReceiverOptions::partition("0").address(""),
    ];
    for options in receivers {
        let mut receiver = client.receiver(&options).await;
        let error = refusal(&mut receiver).await;
        assert_eq!(
            error.condition,
            "amqp:not-found",
            "{}: {error:?}",
            options.link_address()
        );
    }
    for address in [
        "nohub",
        "hub1/Partitions/99",
        "hub1/Publishers/device-1",
        "hub1/x/y",
    ] {
        let mut sender = client.sender(address).await;
        let error = sender_detach_error(&mut sender).await;
        assert_eq!(error.condition, "amqp:not-found", "{address}: {error:?}");
    }
    // The same connection still serves valid links.
    preload(&emulator, 0, 1, 8);
    let mut receiver = client.receiver(&ReceiverOptions::partition("0")).await;
    assert_eq!(next_event(&mut receiver).await.sequence_number, 0);
    client.close().await;
    assert_emulator_serves(&emulator).await;
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_section_that_is_not_a_message_is_rejected() {
    let emulator = start_default().await;
    let mut client = Client::authorized(&emulator, HUB).await;
    let mut sender = client.sender(&format!("{HUB}/Partitions/0")).await;
    let envelope = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body: Body::<Value>::Data(vec![Data(Binary::from(raw::garbage(100, 9)))].into()),
        footer: None,
    };
    let sendable = Sendable::builder()
        .message(envelope)
        .message_format(BATCH_MESSAGE_FORMAT)
        .build();
    let outcome = within("the emulator answers", STEP, sender.send(sendable))
        .await
        .expect("the link survives a bad batch");
    match outcome {
        Outcome::Rejected(rejected) => {
            let condition = rejected.error.map(|e| format!("{:?}", e.condition));
            assert!(
                condition
                    .as_deref()
                    .is_some_and(|c| c.contains("DecodeError")),
                "{condition:?}"
            );
        }
        other => panic!("expected the batch to be rejected, got {other:?}"),
    }
    // Nothing was stored and the same link still publishes.
    publish(&mut sender, event_message(b"good")).await;
    let partition = client.partition_properties(&emulator, HUB, "0").await;
    assert_eq!(partition.last_enqueued_sequence_number, 0);
    client.close().await;
    emulator.shutdown().await;
}
