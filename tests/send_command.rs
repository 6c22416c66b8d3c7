//! `hubcap send`: stdin lines become events, batched, to the hub, a partition, or by key.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn send(config: &std::path::Path, args: &[&str], lines: &[String]) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubcap"))
        .arg("send")
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hubcap send starts");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for line in lines {
        writeln!(stdin, "{line}").expect("write a line");
    }
    drop(stdin);
    child.wait_with_output().expect("hubcap send finishes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_lines_become_events_to_a_partition_by_key_and_round_robin() {
    let emulator = start_emulator(4).await;
    let work = Workdir::new();
    let config = work.write_config(
        "hubcap.toml",
        &work
            .config(emulator.amqp_addr())
            .set("eventhub", "name", HUB),
    );
    let lines: Vec<String> = (0..5000)
        .map(|i| format!("line {i} {}", "x".repeat(200)))
        .collect();

    let to_partition = send(&config, &["--partition-id", "2"], &lines);
    assert!(
        to_partition.status.success(),
        "{}",
        String::from_utf8_lossy(&to_partition.stderr)
    );
    let stderr = String::from_utf8_lossy(&to_partition.stderr);
    assert!(stderr.contains("sent 5000 events"), "{stderr}");
    let last = last_sequence_numbers(&emulator);
    assert_eq!(
        last.get("2"),
        Some(&4999),
        "all 5000 lines in partition 2: {last:?}"
    );
    // 5000 x ~210 B does not fit one 1 MiB publication: it was batched.
    assert!(!stderr.contains("in 1 batches"), "{stderr}");

    let by_key = send(&config, &["--partition-key", "device-7"], &lines[..100]);
    assert!(by_key.status.success());
    let after_key = last_sequence_numbers(&emulator);
    let grown: Vec<_> = after_key
        .iter()
        .filter(|(id, seq)| **seq != last.get(*id).copied().unwrap_or(-1))
        .collect();
    assert_eq!(
        grown.len(),
        1,
        "a partition key keeps every event in one partition: {after_key:?}"
    );

    let round_robin = send(&config, &[], &lines[..10]);
    assert!(round_robin.status.success());
    let total: i64 = last_sequence_numbers(&emulator)
        .values()
        .map(|seq| seq + 1)
        .sum();
    assert_eq!(total, 5000 + 100 + 10);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_fails_with_a_clear_error() {
    let emulator = start_emulator(1).await;
    let work = Workdir::new();
    let config = work.write_config(
        "hubcap.toml",
        &work
            .config_with_key(emulator.amqp_addr(), "not-the-key")
            .set("eventhub", "name", HUB),
    );
    let output = send(&config, &[], &["hello".to_owned()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("refused the credentials"), "{stderr}");
    assert!(!stderr.contains("not-the-key"), "{stderr}");
    emulator.shutdown().await;
}
