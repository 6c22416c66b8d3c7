//! Link credit follows `[eventhub] prefetch_bytes`: large events get only as much credit as fits
//! in the byte budget, small ones the full `prefetch`, so memory is bounded by configuration
//! whatever the events weigh. Observed on the wire through a proxy that reads the flows hubcap
//! sends for its partition receiver. The daemon runs in-process (the process boundary is not
//! the subject here) and archives to Avro files.

mod common;

use std::time::Duration;

use common::*;

/// hubcap names its partition receivers `hubcap-<partition id>-<uuid>`.
const RECEIVER_LINK: &str = "hubcap-0-";

/// One partition, hubcap reaching it through the flow-reading proxy, with `prefetch = 300` and
/// `prefetch_bytes = "256KiB"`: 64 KiB events fit about 4 times in the byte budget.
struct Setup {
    emulator: hubcap_emulator::Emulator,
    proxy: AmqpProxy,
    /// Holds the checkpoint directory and the archive.
    _work: Workdir,
    config: HubcapConfig,
}

impl Setup {
    async fn start() -> Self {
        let emulator = start_emulator(1).await;
        let proxy = AmqpProxy::start(emulator.amqp_addr()).await;
        let work = Workdir::new();
        let config = work
            .config(proxy.addr())
            .sink(Sink::AvroFile)
            .serve_http()
            .set_raw("eventhub", "prefetch", "300")
            .set("eventhub", "prefetch_bytes", "256KiB");
        Setup {
            emulator,
            proxy,
            _work: work,
            config,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_is_bounded_by_prefetch_bytes_for_large_events_and_by_prefetch_for_small_ones() {
    let setup = Setup::start().await;
    let (emulator, proxy) = (&setup.emulator, &setup.proxy);
    let partition = &partitions(emulator)[0];
    partition
        .preload(200, 64 * 1024)
        .expect("preload large events");
    let large = all_event_ids(emulator);

    let mut hubcap = Daemon::start("hubcap", &setup.config);
    hubcap
        .wait_to_deliver(&large, Duration::from_secs(60))
        .await;
    // 256 KiB at a little over 64 KiB per event: 3 (4 before the first event was seen).
    let large_credit = proxy.max_link_credit(RECEIVER_LINK);
    assert!(
        (1..=4).contains(&large_credit),
        "largest credit granted for 64 KiB events: {large_credit}"
    );

    partition.preload(3000, 100).expect("preload small events");
    let all = all_event_ids(emulator);
    hubcap.wait_to_deliver(&all, Duration::from_secs(60)).await;
    assert_eq!(
        proxy.max_link_credit(RECEIVER_LINK),
        300,
        "100-byte events get the whole prefetch"
    );

    let printed = hubcap.stop_cleanly().await;
    assert_exactly_once("large then small events", &printed, &all);
    setup.emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_large_events_lowers_the_credit_without_breaking_the_link() {
    let setup = Setup::start().await;
    let (emulator, proxy) = (&setup.emulator, &setup.proxy);
    let partition = &partitions(emulator)[0];
    partition.preload(2000, 100).expect("preload small events");
    let small = all_event_ids(emulator);

    let mut hubcap = Daemon::start("hubcap", &setup.config);
    hubcap
        .wait_to_deliver(&small, Duration::from_secs(60))
        .await;
    assert_eq!(proxy.last_link_credit(RECEIVER_LINK), 300);

    // Up to 300 credits are outstanding when the large events start: the service may send
    // that many before it sees a smaller grant, and they must not break the link.
    partition
        .preload(400, 64 * 1024)
        .expect("preload large events");
    let all = all_event_ids(emulator);
    hubcap.wait_to_deliver(&all, Duration::from_secs(60)).await;
    let last = proxy.last_link_credit(RECEIVER_LINK);
    assert!(
        (1..=4).contains(&last),
        "credit granted after 64 KiB events: {last}"
    );
    let metrics = scrape(hubcap.metrics_addr()).await;
    let retries = metrics.sum("hubcap_reconnects_total", &[]);
    assert_eq!(retries, 0.0, "the receive link failed:\n{}", metrics.text());

    let printed = hubcap.stop_cleanly().await;
    assert_exactly_once("small then large events", &printed, &all);
    setup.emulator.shutdown().await;
}
