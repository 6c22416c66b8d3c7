//! A checkpoint store that refuses the checkpoint write is a failing partition, not a warning:
//! `/readyz` says so, the error is counted and the write retried with the backoff, nothing is
//! checkpointed past what was committed, and once the store accepts the write again the
//! partition checkpoints and reads on without a restart. Runs the daemon in-process, with the
//! shutdown token as its stop.

mod common;

use std::time::Duration;

use common::*;

/// `GET http://addr/path`: status and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://{addr}{path}")).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// `hubcap_checkpoint_errors_total` of partition `0`, 0 if absent.
fn checkpoint_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("hubcap_checkpoint_errors_total{") && l.contains("partition=\"0\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
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
    let mut retried = false;
    let mut last_seen = (0, String::new());
    for _ in 0..200 {
        if let (Some(ready), Some((_, metrics))) =
            (get(http, "/readyz").await, get(http, "/metrics").await)
        {
            retried = ready.0 == 503
                && ready.1.contains("partition 0: checkpoint failing")
                && checkpoint_errors(&metrics) >= 2;
            last_seen = ready;
        }
        if retried {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(
        retried,
        "readyz should report the failing checkpoint and the write be retried: {last_seen:?}"
    );
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
    let (status, body) = get(http, "/readyz").await.expect("readyz answers");
    assert!(!body.contains("checkpoint failing"), "{status} {body}");

    daemon.stop_cleanly().await;
}
