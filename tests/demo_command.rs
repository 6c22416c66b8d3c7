//! `hubcap demo`, the README's first command: it runs the whole pipeline on the embedded
//! emulator, exits 0, and leaves readable Capture files with every event it sent.

use std::process::Command;

#[test]
fn the_demo_writes_capture_files_holding_every_event_it_sent() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_hubcap"))
        .args([
            "demo",
            "--duration",
            "5",
            "--window",
            "1",
            "--rate",
            "400",
            "--dir",
        ])
        .arg(dir.path())
        .output()
        .expect("hubcap demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("/readyz"),
        "the demo names its HTTP endpoint: {stdout}"
    );
    let sent: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("sent ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in: {stdout}"));
    assert!(sent > 0, "{stdout}");

    let files = hubcap::demo::avro_files(&dir.path().join("capture"));
    assert!(!files.is_empty(), "no Capture files: {stdout}");
    let mut records = 0u64;
    for file in &files {
        let reader = apache_avro::Reader::new(std::fs::File::open(file).expect("open"))
            .expect("a valid Avro file");
        records += reader.count() as u64;
    }
    // The demo drains before it exits: every event sent is committed exactly once.
    assert_eq!(records, sent, "{} files", files.len());
}
