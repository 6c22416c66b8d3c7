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

fn run_demo(dir: &std::path::Path) -> (std::process::Output, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_hubcap"))
        .args([
            "demo",
            "--duration",
            "3",
            "--window",
            "1",
            "--rate",
            "200",
            "--dir",
        ])
        .arg(dir)
        .output()
        .expect("hubcap demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output, stdout)
}

fn summary(stdout: &str) -> (u64, usize) {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("sent "))
        .unwrap_or_else(|| panic!("no summary line in: {stdout}"));
    let words: Vec<&str> = line.split(' ').collect();
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

#[test]
fn a_second_demo_into_the_same_directory_reports_only_its_own_run() {
    let parent = tempfile::tempdir().expect("a temp dir");
    let dir = parent.path().join("demo");

    let (first, first_out) = run_demo(&dir);
    assert!(first.status.success(), "{first_out}");
    assert!(
        first_out.lines().next().unwrap().contains("new directory"),
        "{first_out}"
    );
    assert!(!hubcap::demo::avro_files(&dir.join("capture")).is_empty());

    // Names are start times, so the second run may reuse a name of the first: what tells the
    // runs' files apart is when they were written.
    let second_started = std::time::SystemTime::now();
    let (second, second_out) = run_demo(&dir);
    assert!(
        second.status.success(),
        "{second_out}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let first_line = second_out.lines().next().unwrap();
    assert!(first_line.contains("cleaning"), "{second_out}");
    let (sent, files_reported) = summary(&second_out);
    let files = hubcap::demo::avro_files(&dir.join("capture"));
    assert_eq!(files_reported, files.len(), "{second_out}");
    let survivors: Vec<_> = files
        .iter()
        .filter(|f| std::fs::metadata(f).unwrap().modified().unwrap() < second_started)
        .collect();
    assert!(
        survivors.is_empty(),
        "files of the first run survived: {survivors:?}"
    );
    // Every committed event is the second run's: the archive holds exactly what it sent.
    let mut records = 0u64;
    for file in &files {
        let reader = apache_avro::Reader::new(std::fs::File::open(file).unwrap()).unwrap();
        records += reader.count() as u64;
    }
    assert_eq!(records, sent, "{second_out}");
    // One namespace directory in the checkpoint store: the first run's is gone.
    let namespaces = std::fs::read_dir(dir.join("checkpoints")).unwrap().count();
    assert_eq!(namespaces, 1, "checkpoint namespaces pile up");

    // The hint is a `hubcap cat` command on one of this run's files, and it works.
    let hint = second_out
        .lines()
        .find_map(|line| line.trim().strip_prefix("hubcap cat "))
        .unwrap_or_else(|| panic!("no hubcap cat hint: {second_out}"));
    let hinted: Vec<&str> = hint.split(' ').collect();
    let file = std::path::Path::new(hinted.last().unwrap());
    assert!(files.iter().any(|f| f == file), "hint names {file:?}");
    let cat = Command::new(env!("CARGO_BIN_EXE_hubcap"))
        .arg("cat")
        .args(&hinted)
        .output()
        .unwrap();
    assert!(
        cat.status.success(),
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
    let lines = String::from_utf8(cat.stdout).unwrap();
    assert!((1..=5).contains(&lines.lines().count()), "{lines}");
    for line in lines.lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(event["body"].as_str().unwrap().contains("temperature"));
    }
}

#[test]
fn the_demo_refuses_a_directory_it_did_not_make() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let (output, stdout) = run_demo(dir.path());
    assert!(!output.status.success(), "{stdout}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not made by hubcap demo"), "{stderr}");
    assert!(dir.path().join("notes.txt").exists());
}
