//! A checkpoint store that refuses the checkpoint write is a failing partition, not a warning:
//! `/readyz` says so, the error is counted and the write retried with the backoff, nothing is
//! checkpointed past what was committed, and once the store accepts the write again the
//! partition checkpoints and reads on without a restart. Runs the daemon in-process, with the
//! shutdown token as its stop.

mod common;

use std::time::Duration;

use common::*;

/// `GET http://addr/readyz`: status and body.
async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    let response = within(
        "GET /readyz",
        STEP,
        reqwest::get(format!("http://{addr}/readyz")),
    )
    .await
    .expect("readyz answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("a readyz body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_checkpoint_write_fails_the_partition_until_the_store_accepts_it() {
    let emulator = start_emulator(1).await;
    preload_each(&emulator, 50, 100);
    let work = Workdir::new();
    let store = work.store(emulator.amqp_addr());
    // A non-empty directory where partition 0's checkpoint record goes: replacing it fails
    // with EISDIR, which the file store reports as a refusal (as it would a read-only disk).
    let obstacle = store.checkpoint_path("0");
    std::fs::create_dir_all(&obstacle).unwrap();
    std::fs::write(obstacle.join("in-the-way"), b"").unwrap();
    let mut daemon = Daemon::start(
        "hubcap",
        &work
            .config(emulator.amqp_addr())
            .sink(Sink::AvroFile)
            .serve_http(),
    );
    let http = daemon.metrics_addr();
    let archived = || {
        let mut numbers: Vec<i64> = daemon.events().iter().map(|e| e.sequence_number).collect();
        numbers.sort();
        numbers
    };

    // The window is committed, its checkpoint is refused: failing, counted, retried.
    eventually(
        "the first window is committed",
        Duration::from_secs(20),
        || archived() == (0..50).collect::<Vec<_>>(),
    )
    .await;
    eventually_async(
        "readyz reports the failing checkpoint and the write is retried",
        Duration::from_secs(10),
        || async {
            let (status, body) = readyz(http).await;
            let errors = scrape(http)
                .await
                .sum("hubcap_checkpoint_errors_total", &[("partition", "0")]);
            status == 503 && body.contains("partition 0: checkpoint failing") && errors >= 2.0
        },
    )
    .await;
    assert!(
        obstacle.join("in-the-way").exists(),
        "nothing may be checkpointed while refused"
    );

    // The store accepts the write again: checkpointed, ready, and reading on.
    std::fs::remove_dir_all(&obstacle).unwrap();
    eventually(
        "the refused checkpoint is written",
        Duration::from_secs(20),
        || store.checkpoint("0").and_then(|c| c.sequencenumber) == Some(49),
    )
    .await;
    preload_each(&emulator, 50, 100);
    eventually(
        "later events are committed and checkpointed",
        Duration::from_secs(20),
        || store.checkpoint("0").and_then(|c| c.sequencenumber) == Some(99),
    )
    .await;
    assert_eq!(archived(), (0..100).collect::<Vec<_>>(), "every event once");
    let (status, body) = readyz(http).await;
    assert!(!body.contains("checkpoint failing"), "{status} {body}");

    daemon.stop_cleanly().await;
}
