//! Network and service faults under a live stream: the real `hubcap` binary keeps every event
//! when its connection is cut and when the service detaches its links as busy, through the
//! stdout sink and through committed Avro files.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hubcap_emulator::LinkFault;

for_each_sink!(
    connection_drops_every_few_seconds_lose_nothing,
    server_busy_detach_is_retried,
);

/// The receive retries hubcap counted with `error_type` (`hubcap_reconnects_total`).
async fn retries(hubcap: &Hubcap, error_type: &str) -> u64 {
    let metrics = scrape(hubcap.metrics_addr().await).await;
    metrics.sum("hubcap_reconnects_total", &[("error_type", error_type)]) as u64
}

/// hubcap on the emulator with its `/metrics` served, and a steady stream of events.
async fn start(sink: Sink) -> (hubcap_emulator::Emulator, Workdir, Stream, Hubcap) {
    let emulator = start_emulator(2).await;
    let work = Workdir::new();
    let config = work.config(emulator.amqp_addr()).sink(sink).serve_http();
    let publishing = stream(&emulator, 200, 300);
    let hubcap = Hubcap::start("hubcap", &work, &config);
    (emulator, work, publishing, hubcap)
}

async fn connection_drops_every_few_seconds_lose_nothing(sink: Sink) {
    let (emulator, _work, publishing, mut hubcap) = start(sink).await;
    let started = Instant::now();
    let mut drops = 0;
    for round in 1..=4 {
        // Progress since the last drop proves hubcap reconnected and committed again.
        hubcap
            .wait_for_progress(
                &format!("progress before drop {round}"),
                0,
                Duration::from_secs(15),
            )
            .await;
        let due = started + Duration::from_secs(3 * round);
        tokio::time::sleep_until(due.into()).await;
        // A drop while hubcap is between connections cuts nothing: repeat until one is cut.
        eventually(
            &format!("drop {round} cuts hubcap's connection"),
            Duration::from_secs(10),
            || emulator.drop_connections() >= 1,
        )
        .await;
        drops += 1;
    }
    hubcap
        .wait_for_progress("progress after the last drop", 0, Duration::from_secs(15))
        .await;
    let expected = publishing.stop_and_list(&emulator).await;
    let published = expected.len();
    hubcap
        .wait_to_deliver(&expected, Duration::from_secs(30))
        .await;
    let warnings = retries(&hubcap, "connection_lost").await;
    let printed = hubcap.stop_cleanly().await;
    // Each reconnect resumes after the last event received, and the open window survives it:
    // every event exactly once.
    assert_exactly_once("after 4 connection drops", &printed, &expected);

    let connects = hubcap.connections();
    assert!(
        connects > drops,
        "{connects} connections for {drops} drops: hubcap did not reconnect after each"
    );
    assert!(
        warnings >= 1,
        "no retry counted as a lost connection:\n{}",
        hubcap.stderr()
    );
    eprintln!("{published} events over {drops} drops: {connects} connections, {warnings} retries");
    emulator.shutdown().await;
}

async fn server_busy_detach_is_retried(sink: Sink) {
    let (emulator, _work, publishing, mut hubcap) = start(sink).await;
    let busy = LinkFault::new(
        "com.microsoft:server-busy",
        "The request was terminated because the entity is being throttled. Please wait 4 seconds and try again.",
    );
    let mut detached = 0;
    for round in 1..=3 {
        hubcap
            .wait_for_progress(
                &format!("progress before detach {round}"),
                50,
                Duration::from_secs(15),
            )
            .await;
        // Between re-attaches no link is there to detach: repeat until one is told.
        eventually(
            &format!("detach {round} reaches hubcap's receivers"),
            Duration::from_secs(10),
            || {
                let told = emulator.detach_receivers(HUB, None, None, &busy);
                detached += told;
                told >= 1
            },
        )
        .await;
    }
    hubcap
        .wait_for_progress(
            "progress after the last detach",
            50,
            Duration::from_secs(15),
        )
        .await;
    let expected = publishing.stop_and_list(&emulator).await;
    hubcap
        .wait_to_deliver(&expected, Duration::from_secs(30))
        .await;
    let warnings = retries(&hubcap, "server_busy").await;
    let printed = hubcap.stop_cleanly().await;
    assert_exactly_once("after server-busy detaches", &printed, &expected);

    assert!(
        warnings >= 3,
        "{detached} links detached as server-busy, but only {warnings} retries counted as such"
    );
    assert_eq!(
        hubcap.connections(),
        1,
        "a busy link is re-attached on the same connection"
    );
    assert!(
        !hubcap.has_log(|l| l.field("event").as_deref() == Some("ownership_lost")),
        "server-busy is not a lost partition"
    );
    emulator.shutdown().await;
}
