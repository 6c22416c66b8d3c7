//! Losing a partition to another reader: the real `hubcap` binary abandons it and never
//! checkpoints it from the stale task (delivery contract, point 4), through the stdout sink and
//! through committed Avro files.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use hubcap::eventhubs::{EventHubClient, EventPosition, ReceiverOptions};

/// Body size of the ordinary events: each one alone fills a 1 KiB window, so every batch
/// hubcap receives of them is committed and checkpointed at once.
const LARGE: usize = 1500;
/// Body size of the events left in the open window: three of them stay under 1 KiB.
const SMALL: usize = 10;
/// Events before the steal.
const FIRST: i64 = 50;

for_each_sink!(a_stolen_partition_is_never_checkpointed_again);

/// The record of the stale task giving the partition up, with the size of what it dropped.
fn is_abandonment(line: &LogLine) -> bool {
    line.field("event").as_deref() == Some("ownership_lost") && line.has("abandoned_events")
}

/// Events hubcap committed for partition 0 (`hubcap_events_committed_total`).
async fn committed(hubcap: &Hubcap) -> u64 {
    let metrics = scrape(hubcap.metrics_addr().await).await;
    metrics.sum("hubcap_events_committed_total", &[("partition", "0")]) as u64
}

async fn a_stolen_partition_is_never_checkpointed_again(sink: Sink) {
    let emulator = start_emulator(1).await;
    // hubcap goes through a frame-counting proxy. With a prefetch of 1 it grants credit for
    // one event at a time, after taking the one before into its window: the delivery count in
    // its flow frames shows how far it got.
    let proxy = AmqpProxy::start(emulator.amqp_addr()).await;
    let work = Workdir::new();
    let store = work.store(proxy.addr());
    // Windows close on size only, never on age during the test: a checkpoint can then only
    // follow events received, and none can be legitimately written while the thief reads.
    let config = work
        .config(proxy.addr())
        .sink(sink)
        .serve_http()
        .set_raw("eventhub", "owner_level", "0")
        .set_raw("eventhub", "prefetch", "1")
        .set("sink", "max_window", "1h")
        .set("sink", "max_window_bytes", "1KiB");
    let partition = partitions(&emulator)[0].clone();
    partition.preload(FIRST as u64, LARGE).expect("preload");
    let mut hubcap = Hubcap::start("hubcap", &work, &config);
    eventually(
        "hubcap checkpoints the first events",
        Duration::from_secs(15),
        || store.checkpoint("0").and_then(|c| c.sequencenumber) == Some(FIRST - 1),
    )
    .await;
    let checkpoint_path = store.checkpoint_path("0");
    let settled = file_state(&checkpoint_path).expect("a checkpoint file");
    let printed_before = hubcap.event_count();
    assert_eq!(printed_before as i64, FIRST);

    // Three small events: under the size limit, they stay in hubcap's open window.
    partition.preload(3, SMALL).expect("preload");
    eventually(
        "hubcap takes the small events into its window",
        Duration::from_secs(10),
        || proxy.client_flow_delivery_count() >= FIRST as u64 + 3,
    )
    .await;

    // Another reader takes the partition with a higher epoch, outside the checkpoint store:
    // the store still names hubcap as the owner.
    let thief_client = EventHubClient::new(client_settings(emulator.amqp_addr(), sas_credential()))
        .expect("client settings are valid");
    let thief = within(
        "the thief attaches",
        STEP,
        thief_client.open_receiver(
            "0",
            &EventPosition::Latest,
            ReceiverOptions {
                prefetch: 100,
                prefetch_bytes: 1 << 20,
                owner_level: Some(1),
            },
        ),
    )
    .await
    .expect("a higher epoch takes the partition");
    hubcap
        .wait_for_log(
            "the stale task abandons the partition",
            Duration::from_secs(10),
            is_abandonment,
        )
        .await;
    let committed_at_loss = committed(&hubcap).await;
    assert_eq!(
        committed_at_loss, FIRST as u64,
        "the first events were committed before the steal, the small ones were not"
    );
    let abandoned = hubcap
        .logs()
        .iter()
        .find(|l| is_abandonment(l))
        .and_then(|l| l.fields.get("abandoned_events").and_then(|v| v.as_u64()));
    assert_eq!(
        abandoned,
        Some(3),
        "the stale task abandons its window of three small events"
    );

    // Five update intervals while the thief holds the partition and events keep coming.
    let publishing = stream(&emulator, 40, LARGE);
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(5) {
        assert!(
            file_state(&checkpoint_path).as_ref() == Some(&settled),
            "the checkpoint was rewritten after the partition was stolen: {:?}",
            store.checkpoint("0"),
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(hubcap.is_running(), "hubcap stopped:\n{}", hubcap.stderr());
    assert_eq!(
        hubcap.event_count(),
        printed_before,
        "hubcap printed events of a partition it no longer reads"
    );
    let logs = hubcap.logs();
    let first_loss = logs
        .iter()
        .position(|l| l.field("event").as_deref() == Some("ownership_lost"))
        .expect("the loss was logged");
    assert!(
        logs[..first_loss].iter().any(LogLine::is_commit),
        "no commit was logged before the steal"
    );
    assert!(
        !logs[first_loss..].iter().any(LogLine::is_commit),
        "a window was committed after the partition was lost:\n{}",
        hubcap.stderr()
    );
    assert_eq!(
        committed(&hubcap).await,
        committed_at_loss,
        "events were committed while the partition was stolen"
    );
    // The store still names hubcap, so its supervisor claims the partition again at the next
    // cycle and then after each cooldown; each new task is refused by the thief's higher epoch
    // and gives it up without reading.
    let claims = hubcap.count_logs(|l| l.has("owner_id") && l.has("event"));
    let lost = hubcap.count_logs(is_abandonment);
    eprintln!("while stolen: {claims} claims in total, {lost} tasks gave the partition up");

    // The thief leaves: hubcap reads on from its checkpoint, so the abandoned window's events
    // are read again and every event is printed exactly once.
    thief.close().await;
    thief_client.close().await;
    eventually(
        "hubcap reads the partition again once the thief is gone",
        Duration::from_secs(15),
        || hubcap.event_count() > printed_before,
    )
    .await;
    let published = publishing.stop().await;
    let last = partition.properties().last_enqueued_sequence_number;
    assert_eq!(last, FIRST + 3 + published as i64 - 1);
    eventually(
        "hubcap commits and checkpoints everything",
        Duration::from_secs(20),
        || store.checkpoint("0").and_then(|c| c.sequencenumber) == Some(last),
    )
    .await;
    let printed = hubcap.stop_cleanly().await;
    let expected: BTreeSet<EventId> = (0..=last).map(|n| EventId::new("0", n)).collect();
    assert_exactly_once("around the steal", &printed, &expected);
    drop(proxy);
    emulator.shutdown().await;
}
