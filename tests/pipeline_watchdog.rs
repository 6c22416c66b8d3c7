//! The stuck-partition watchdog: a receive link that stays attached but delivers nothing, while
//! the service holds events past it, is recycled within `stuck_partition_timeout`, and nothing
//! is lost or duplicated; through the stdout sink and through committed Avro files.

mod common;

use std::time::Duration;

use common::*;

for_each_sink!(
    a_silent_link_with_a_backlog_is_recycled_and_the_backlog_arrives,
    an_idle_partition_without_a_backlog_is_left_alone,
);

/// How often the watchdog recycled a receiver (`hubcap_receiver_recycles_total`).
async fn recycles(hubcap: &Hubcap) -> u64 {
    let metrics = scrape(hubcap.metrics_addr().await).await;
    metrics.sum("hubcap_receiver_recycles_total", &[]) as u64
}

/// hubcap with `stuck_partition_timeout` and its `/metrics` served, on one partition that
/// holds `events` events.
async fn start(
    sink: Sink,
    events: u64,
    stuck_timeout: &str,
) -> (hubcap_emulator::Emulator, Workdir, Hubcap) {
    let emulator = start_emulator(1).await;
    preload_each(&emulator, events, 100);
    let work = Workdir::new();
    let config = work
        .config(emulator.amqp_addr())
        .sink(sink)
        .serve_http()
        .set("eventhub", "stuck_partition_timeout", stuck_timeout);
    let hubcap = Hubcap::start("watchdog", &work, &config);
    (emulator, work, hubcap)
}

async fn a_silent_link_with_a_backlog_is_recycled_and_the_backlog_arrives(sink: Sink) {
    let (emulator, _work, mut hubcap) = start(sink, 20, "2s").await;
    eventually("the first 20 events", Duration::from_secs(30), || {
        hubcap.event_count() >= 20
    })
    .await;

    // Freeze the link hubcap has now, then give it a backlog it cannot see.
    assert_eq!(emulator.stall_receivers(HUB, None), 1);
    preload_each(&emulator, 20, 100);
    eventually_async(
        "the watchdog recycling the receiver",
        Duration::from_secs(20),
        || async { recycles(&hubcap).await >= 1 },
    )
    .await;
    let expected = all_event_ids(&emulator);
    hubcap
        .wait_to_deliver(&expected, Duration::from_secs(20))
        .await;
    let printed = hubcap.stop_cleanly().await;
    assert_exactly_once("watchdog run", &printed, &expected);
    emulator.shutdown().await;
}

async fn an_idle_partition_without_a_backlog_is_left_alone(sink: Sink) {
    let (emulator, work, mut hubcap) = start(sink, 5, "1s").await;
    let store = work.store(emulator.amqp_addr());
    eventually("the 5 events", Duration::from_secs(30), || {
        hubcap.event_count() >= 5
    })
    .await;
    // Several watchdog periods with nothing to read: no recycle.
    eventually("the 5 events checkpointed", Duration::from_secs(10), || {
        store.checkpoint("0").and_then(|c| c.sequencenumber) == Some(4)
    })
    .await;
    let idle_until = std::time::Instant::now() + Duration::from_secs(4);
    eventually("4 idle seconds", Duration::from_secs(10), || {
        std::time::Instant::now() >= idle_until
    })
    .await;
    assert_eq!(
        recycles(&hubcap).await,
        0,
        "an idle partition with no backlog was recycled"
    );
    hubcap.terminate();
    assert!(hubcap.wait_exit(DRAIN_TIMEOUT).await.success());
    emulator.shutdown().await;
}
