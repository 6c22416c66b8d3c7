//! The stuck-partition watchdog: a receive link that stays attached but delivers nothing, while
//! the service holds events past it, is recycled within `stuck_partition_timeout`, and nothing
//! is lost or duplicated.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_link_with_a_backlog_is_recycled_and_the_backlog_arrives() {
    let emulator = start_emulator(1).await;
    preload_each(&emulator, 20, 100);
    let work = Workdir::new();
    let config = work.write_config(
        "hubcap.toml",
        &HubcapConfig::new(
            &connection_string(emulator.amqp_addr(), KEY),
            &work.checkpoints(),
        )
        .set("eventhub", "stuck_partition_timeout", "2s"),
    );
    let mut hubcap = Hubcap::spawn("watchdog", &config);
    eventually("the first 20 events", Duration::from_secs(30), || {
        hubcap.event_count() >= 20
    })
    .await;

    // Freeze the link hubcap has now, then give it a backlog it cannot see.
    assert_eq!(emulator.stall_receivers(HUB, None), 1);
    preload_each(&emulator, 20, 100);
    hubcap
        .wait_for_log(
            "the watchdog recycling the receiver",
            Duration::from_secs(20),
            |line| line.message.contains("recycling the receiver"),
        )
        .await;
    let expected = all_event_ids(&emulator);
    eventually(
        "all 40 events after the recycle",
        Duration::from_secs(20),
        || covers(&hubcap.events(), &expected),
    )
    .await;
    let printed = hubcap.stop_cleanly().await;
    assert_exactly_once("watchdog run", &printed, &expected);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_partition_without_a_backlog_is_left_alone() {
    let emulator = start_emulator(1).await;
    preload_each(&emulator, 5, 100);
    let work = Workdir::new();
    let config = work.write_config(
        "hubcap.toml",
        &HubcapConfig::new(
            &connection_string(emulator.amqp_addr(), KEY),
            &work.checkpoints(),
        )
        .set("eventhub", "stuck_partition_timeout", "1s"),
    );
    let mut hubcap = Hubcap::spawn("idle", &config);
    eventually("the 5 events", Duration::from_secs(30), || {
        hubcap.event_count() >= 5
    })
    .await;
    // Several watchdog periods with nothing to read: no recycle.
    hubcap
        .wait_for_log(
            "a few seconds of idle checkpoints",
            Duration::from_secs(10),
            |line| line.message.contains("window committed"),
        )
        .await;
    let idle_until = std::time::Instant::now() + Duration::from_secs(4);
    eventually("4 idle seconds", Duration::from_secs(10), || {
        std::time::Instant::now() >= idle_until
    })
    .await;
    assert!(
        !hubcap.has_log(|line| line.message.contains("recycling the receiver")),
        "an idle partition with no backlog was recycled"
    );
    hubcap.terminate();
    assert!(hubcap.wait_exit(DRAIN_TIMEOUT).await.success());
    emulator.shutdown().await;
}
