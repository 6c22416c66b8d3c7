use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use tokio::sync::Barrier;

use super::*;

/// Switches the test binary into a claim contender when set (see
/// [`contender_process_entry`]); holds the store root.
const CONTENDER_ENV: &str = "HUBCAP_FILE_STORE_CONTENDER_ROOT";
const CONTENDER_ROUNDS: usize = 150;

fn scope() -> StoreScope {
    StoreScope {
        fully_qualified_namespace: "MyNs.servicebus.windows.net".into(),
        event_hub: "Telemetry".into(),
        consumer_group: "$Default".into(),
    }
}

fn open(root: &Path) -> FileCheckpointStore {
    FileCheckpointStore::open(root, scope(), NameCase::Lower).unwrap()
}

fn claim(partition_id: &str, owner_id: &str, version: Option<&str>) -> OwnershipClaim {
    OwnershipClaim {
        partition_id: partition_id.into(),
        owner_id: owner_id.into(),
        version: version.map(str::to_owned),
        commit: None,
    }
}

fn ownership_dir(root: &Path) -> PathBuf {
    root.join("myns.servicebus.windows.net/telemetry/$default/ownership")
}

fn checkpoint_dir(root: &Path) -> PathBuf {
    root.join("myns.servicebus.windows.net/telemetry/$default/checkpoint")
}

#[tokio::test]
async fn a_claim_creates_renews_and_is_stolen_with_increasing_versions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    let created = store
        .claim_ownership(&[claim("0", "a", None)])
        .await
        .unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(
        (created[0].owner_id.as_str(), created[0].version.as_str()),
        ("a", "1")
    );

    let renewed = store
        .claim_ownership(&[claim("0", "a", Some("1"))])
        .await
        .unwrap();
    assert_eq!(renewed[0].version, "2");
    assert!(renewed[0].last_modified >= created[0].last_modified);

    let stolen = store
        .claim_ownership(&[claim("0", "b", Some("2"))])
        .await
        .unwrap();
    assert_eq!(
        (stolen[0].owner_id.as_str(), stolen[0].version.as_str()),
        ("b", "3")
    );

    assert_eq!(store.list_ownership().await.unwrap(), stolen);
    let now = SystemTime::now();
    let age = now.duration_since(stolen[0].last_modified).unwrap();
    assert!(
        age < Duration::from_secs(60),
        "last_modified is now, not {age:?} ago"
    );
}

#[tokio::test]
async fn a_stale_version_or_a_create_over_an_existing_record_loses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .claim_ownership(&[claim("0", "a", None)])
        .await
        .unwrap();
    store
        .claim_ownership(&[claim("0", "a", Some("1"))])
        .await
        .unwrap();

    let stale = store
        .claim_ownership(&[claim("0", "b", Some("1"))])
        .await
        .unwrap();
    assert!(stale.is_empty());
    let create = store
        .claim_ownership(&[claim("0", "b", None)])
        .await
        .unwrap();
    assert!(create.is_empty());
    let missing = store
        .claim_ownership(&[claim("1", "b", Some("1"))])
        .await
        .unwrap();
    assert!(
        missing.is_empty(),
        "a version cannot match a record that does not exist"
    );
    let garbage = store
        .claim_ownership(&[claim("0", "b", Some("x"))])
        .await
        .unwrap();
    assert!(garbage.is_empty());

    let listed = store.list_ownership().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].owner_id.as_str(), listed[0].version.as_str()),
        ("a", "2")
    );
}

#[tokio::test]
async fn a_batch_returns_only_the_claims_that_won() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .claim_ownership(&[claim("1", "other", None)])
        .await
        .unwrap();

    let claims = [
        claim("0", "me", None),
        claim("1", "me", None),
        claim("2", "me", None),
    ];
    let won = store.claim_ownership(&claims).await.unwrap();
    let ids: Vec<_> = won.iter().map(|o| o.partition_id.as_str()).collect();
    assert_eq!(ids, ["0", "2"]);
    assert!(store.claim_ownership(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn releasing_writes_an_empty_owner_that_can_be_claimed_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .claim_ownership(&[claim("3", "a", None)])
        .await
        .unwrap();
    let released = store
        .claim_ownership(&[claim("3", "", Some("1"))])
        .await
        .unwrap();
    assert_eq!(released[0].owner_id, "");

    let listed = store.list_ownership().await.unwrap();
    assert_eq!(
        (listed[0].owner_id.as_str(), listed[0].version.as_str()),
        ("", "2")
    );
    let reclaimed = store
        .claim_ownership(&[claim("3", "b", Some("2"))])
        .await
        .unwrap();
    assert_eq!(reclaimed[0].owner_id, "b");
}

#[tokio::test]
async fn records_are_json_files_with_the_sdk_key_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .claim_ownership(&[claim("0", "a", None)])
        .await
        .unwrap();
    let checkpoint = Checkpoint {
        partition_id: "0".into(),
        offset: Some("4096".into()),
        sequence_number: Some(17),
        committed_in: None,
    };
    store.update_checkpoint(&checkpoint).await.unwrap();

    let ownership = fs::read(ownership_dir(dir.path()).join("0")).unwrap();
    let ownership: serde_json::Value = serde_json::from_slice(&ownership).unwrap();
    assert_eq!(ownership["ownerid"], "a");
    assert_eq!(ownership["version"], 1);
    assert!(ownership["last_modified_unix_ms"].as_u64().unwrap() > 1_600_000_000_000);

    let stored = fs::read(checkpoint_dir(dir.path()).join("0")).unwrap();
    let stored: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({"offset": "4096", "sequencenumber": 17, "version": 1})
    );
}

#[tokio::test]
async fn checkpoints_round_trip_with_missing_fields_and_last_writer_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(store.list_checkpoints().await.unwrap().is_empty());
    let checkpoints = [
        Checkpoint {
            partition_id: "0".into(),
            offset: None,
            sequence_number: Some(5),
            committed_in: None,
        },
        Checkpoint {
            partition_id: "2".into(),
            offset: Some("100".into()),
            sequence_number: None,
            committed_in: None,
        },
        Checkpoint {
            partition_id: "10".into(),
            offset: None,
            sequence_number: None,
            committed_in: None,
        },
    ];
    for checkpoint in &checkpoints {
        store.update_checkpoint(checkpoint).await.unwrap();
    }
    assert_eq!(store.list_checkpoints().await.unwrap(), checkpoints);

    let moved = Checkpoint {
        partition_id: "2".into(),
        offset: Some("200".into()),
        sequence_number: Some(9),
        committed_in: None,
    };
    store.update_checkpoint(&moved).await.unwrap();
    let listed = store.list_checkpoints().await.unwrap();
    assert_eq!(listed[1], moved);
}

#[tokio::test]
async fn a_corrupt_record_is_reported_by_file_name_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .claim_ownership(&[claim("0", "a", None)])
        .await
        .unwrap();
    let corrupt = ownership_dir(dir.path()).join("0");
    fs::write(&corrupt, b"{\"ownerid\": \"a\", \"vers").unwrap();
    fs::write(checkpoint_dir(dir.path()).join("1"), b"[]").unwrap();

    for result in [
        store.list_ownership().await.map(drop),
        store
            .claim_ownership(&[claim("0", "b", Some("1"))])
            .await
            .map(drop),
        store.list_checkpoints().await.map(drop),
    ] {
        match result {
            Err(StoreError::InvalidRecord { name, .. }) => {
                assert!(name.ends_with("/ownership/0") || name.ends_with("/checkpoint/1"))
            }
            other => panic!("expected InvalidRecord, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn temp_files_are_ignored_and_stale_ones_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .claim_ownership(&[claim("0", "a", None)])
        .await
        .unwrap();
    let fresh = ownership_dir(dir.path()).join("0.tmp-1-00000000000000aa");
    let stale = ownership_dir(dir.path()).join("1.tmp-1-00000000000000bb");
    fs::write(&fresh, b"{\"ownerid\": \"torn").unwrap();
    fs::write(&stale, b"").unwrap();
    let long_ago = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(1);
    File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();

    let listed = store.list_ownership().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].partition_id, "0");
    assert!(
        fresh.exists(),
        "a recent temp file may belong to a live writer"
    );
    assert!(!stale.exists(), "a stale temp file is cleaned up");

    // The lock file is not a record either.
    assert!(ownership_dir(dir.path()).join(".lock-0").exists());
}

#[tokio::test]
async fn partition_ids_that_could_escape_or_collide_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for partition_id in [
        "",
        ".",
        "..",
        "../0",
        "a/b",
        "/etc",
        "a\0b",
        ".lock",
        "0.TMP-1-2",
    ] {
        let claimed = store
            .claim_ownership(&[claim("0", "a", None), claim(partition_id, "a", None)])
            .await;
        assert!(
            matches!(claimed, Err(StoreError::Refused { .. })),
            "claim of {partition_id:?}: {claimed:?}"
        );
        let checkpoint = Checkpoint {
            partition_id: partition_id.into(),
            offset: None,
            sequence_number: Some(1),
            committed_in: None,
        };
        let updated = store.update_checkpoint(&checkpoint).await;
        assert!(
            matches!(updated, Err(StoreError::Refused { .. })),
            "checkpoint of {partition_id:?}: {updated:?}"
        );
    }
    // A refused batch writes nothing, not even its valid claims.
    assert!(store.list_ownership().await.unwrap().is_empty());

    for (namespace, hub, group) in [("..", "h", "g"), ("ns", "a/b", "g"), ("ns", "h", "")] {
        let scope = StoreScope {
            fully_qualified_namespace: namespace.into(),
            event_hub: hub.into(),
            consumer_group: group.into(),
        };
        let opened = FileCheckpointStore::open(dir.path(), scope, NameCase::Lower);
        assert!(
            matches!(opened, Err(StoreError::Refused { .. })),
            "{opened:?}"
        );
    }
}

#[tokio::test]
async fn names_with_a_port_and_a_dollar_sign_work_in_either_case() {
    let dir = tempfile::tempdir().unwrap();
    let scope = StoreScope {
        fully_qualified_namespace: "LocalHost:5672".into(),
        event_hub: "Hub".into(),
        consumer_group: "$Default".into(),
    };
    for (case, expected) in [
        (NameCase::Lower, "localhost:5672/hub/$default"),
        (NameCase::Verbatim, "LocalHost:5672/Hub/$Default"),
    ] {
        let store = FileCheckpointStore::open(dir.path(), scope.clone(), case).unwrap();
        store
            .claim_ownership(&[claim("0", "a", None)])
            .await
            .unwrap();
        let checkpoint = Checkpoint {
            partition_id: "0".into(),
            offset: Some("1".into()),
            sequence_number: Some(1),
            committed_in: None,
        };
        store.update_checkpoint(&checkpoint).await.unwrap();
        let base = dir.path().join(expected);
        assert!(base.join("ownership/0").is_file(), "{}", base.display());
        assert!(base.join("checkpoint/0").is_file(), "{}", base.display());
        assert_eq!(store.list_checkpoints().await.unwrap(), [checkpoint]);
    }
}

#[tokio::test]
async fn open_creates_private_directories_and_a_missing_one_lists_empty() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("state/checkpoints");
    let store = open(&root);
    for path in [root.clone(), ownership_dir(&root), checkpoint_dir(&root)] {
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{} has mode {mode:o}", path.display());
    }

    fs::remove_dir_all(&root).unwrap();
    assert!(store.list_ownership().await.unwrap().is_empty());
    assert!(store.list_checkpoints().await.unwrap().is_empty());
    // Writes recreate what was removed.
    let checkpoint = Checkpoint {
        partition_id: "0".into(),
        offset: None,
        sequence_number: Some(3),
        committed_in: None,
    };
    store.update_checkpoint(&checkpoint).await.unwrap();
    assert_eq!(
        store
            .claim_ownership(&[claim("0", "a", None)])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(store.list_checkpoints().await.unwrap(), [checkpoint]);
}

#[test]
fn a_root_that_is_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("not-a-dir");
    fs::write(&root, b"").unwrap();
    let opened = FileCheckpointStore::open(&root, scope(), NameCase::Lower);
    match opened {
        Err(StoreError::Refused { reason }) => {
            assert!(reason.contains("not-a-dir"), "{reason}")
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

#[test]
fn io_errors_are_the_disk_s_labelled_like_the_archive_s_or_a_misplaced_path() {
    let errno = |code: Errno| io::Error::from_raw_os_error(code.raw_os_error());
    let cases = [
        (io::Error::from(ErrorKind::StorageFull), "no_space"),
        (errno(Errno::DQUOT), "no_space"),
        (errno(Errno::ROFS), "read_only"),
        (errno(Errno::IO), "io_error"),
        (errno(Errno::ACCESS), "permission"),
        (io::Error::from(ErrorKind::NotFound), "file"),
        (io::Error::from(ErrorKind::Interrupted), "file"),
    ];
    for (error, label) in cases {
        let shown = error.to_string();
        match io_failure("writing /x/0", error) {
            StoreError::Disk { error_type, reason } => {
                assert_eq!(error_type, label, "{shown}");
                assert_eq!(reason, format!("writing /x/0: {shown}"));
            }
            other => panic!("{shown}: expected Disk, got {other:?}"),
        }
    }
    for code in [Errno::NOTDIR, Errno::ISDIR, Errno::NAMETOOLONG] {
        let err = io_failure("writing /x/0", errno(code));
        assert!(matches!(err, StoreError::Refused { .. }), "{code:?}");
    }
    let full = io_failure("writing /x/0", io::Error::from(ErrorKind::StorageFull));
    assert_eq!(full.kind(), "no_space");
    assert!(full
        .to_string()
        .starts_with("checkpoint store cannot write (no_space): writing /x/0: "));
}

/// Every contender reads the version, waits for all others to have read it, then claims
/// with it: exactly one claim per round can win.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_directory_racing_from_many_tasks_have_one_winner_per_round() {
    const TASKS: usize = 16;
    const ROUNDS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let stores = [open(dir.path()), open(dir.path())];
    let barrier = Arc::new(Barrier::new(TASKS));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = stores[task % 2].clone();
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            let mut won = Vec::new();
            for _ in 0..ROUNDS {
                barrier.wait().await;
                let version = store
                    .list_ownership()
                    .await
                    .unwrap()
                    .pop()
                    .map(|o| o.version);
                barrier.wait().await;
                let claim = claim("0", &format!("task-{task}"), version.as_deref());
                won.push(!store.claim_ownership(&[claim]).await.unwrap().is_empty());
            }
            won
        });
    }
    let results = tasks.join_all().await;
    for round in 0..ROUNDS {
        let winners = results.iter().filter(|won| won[round]).count();
        assert_eq!(winners, 1, "round {round}");
    }
    let last = stores[0].list_ownership().await.unwrap();
    assert_eq!(last[0].version, ROUNDS.to_string());
}

/// Each process claims partition 0 again and again with the version it just read and prints
/// the version each winning claim replaced. With a working lock no version is replaced twice.
#[test]
fn two_processes_racing_to_steal_one_partition_never_both_win() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let test_name = "checkpoint::file::tests::contender_process_entry";
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(&exe)
                .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
                .env(CONTENDER_ENV, dir.path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut replaced = Vec::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "contender failed: {output:?}");
        let stdout = String::from_utf8(output.stdout).unwrap();
        let wins: Vec<_> = stdout
            .lines()
            // libtest prints the test's name on the line the first win lands on.
            .filter_map(|line| line.split_once("won from ").map(|(_, version)| version))
            .map(str::to_owned)
            .collect();
        assert!(!wins.is_empty(), "contender never won: {stdout}");
        replaced.extend(wins);
    }

    let store = open(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let last = runtime.block_on(store.list_ownership()).unwrap();
    let final_version: usize = last[0].version.parse().unwrap();
    let distinct: BTreeSet<_> = replaced.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        replaced.len(),
        "a version was replaced twice"
    );
    assert_eq!(
        replaced.len(),
        final_version,
        "every win is one version step"
    );
    assert!(distinct.contains("none"), "someone created the record");
}

/// The body of a contender process; a no-op in a normal test run.
#[test]
fn contender_process_entry() {
    let Some(root) = std::env::var_os(CONTENDER_ENV) else {
        return;
    };
    let store = open(Path::new(&root));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let owner = format!("process-{}", std::process::id());
    runtime.block_on(async {
        for _ in 0..CONTENDER_ROUNDS {
            let version = store
                .list_ownership()
                .await
                .unwrap()
                .pop()
                .map(|o| o.version);
            let claim = claim("0", &owner, version.as_deref());
            if !store.claim_ownership(&[claim]).await.unwrap().is_empty() {
                println!("won from {}", version.as_deref().unwrap_or("none"));
            }
        }
    });
}

fn checkpoint_at(sequence_number: i64) -> Checkpoint {
    Checkpoint {
        partition_id: "0".into(),
        offset: Some(format!("{}", sequence_number * 100)),
        sequence_number: Some(sequence_number),
        committed_in: Some(format!("hub/0/{sequence_number}.avro")),
    }
}

#[tokio::test]
async fn checkpoint_swaps_create_once_match_versions_and_see_unconditional_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let created = store
        .swap_checkpoint(&checkpoint_at(1), None)
        .await
        .unwrap();
    assert_eq!(created.as_deref(), Some("1"));
    assert_eq!(
        store
            .swap_checkpoint(&checkpoint_at(2), None)
            .await
            .unwrap(),
        None,
        "a create loses to an existing record"
    );
    let swapped = store
        .swap_checkpoint(&checkpoint_at(2), Some("1"))
        .await
        .unwrap();
    assert_eq!(swapped.as_deref(), Some("2"));
    // An unconditional write (an older hubcap, a tool) moves the version on too.
    store.update_checkpoint(&checkpoint_at(3)).await.unwrap();
    assert_eq!(
        store
            .swap_checkpoint(&checkpoint_at(4), Some("2"))
            .await
            .unwrap(),
        None
    );
    let listed = store.list_checkpoint_versions().await.unwrap();
    assert_eq!(listed, [(checkpoint_at(3), "3".to_owned())]);
    // The record keeps hubcap's key next to the SDKs' and stays readable by name.
    let text = fs::read_to_string(checkpoint_dir(dir.path()).join("0")).unwrap();
    assert!(
        text.contains("\"hubcapcommitted\":\"hub/0/3.avro\""),
        "{text}"
    );
}

#[tokio::test]
async fn a_commit_record_is_kept_by_claims_that_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let record = CommitRecord {
        first_sequence_number: 5,
        last_sequence_number: 9,
        name: "hub/0/w.avro".into(),
    };
    let mut with_record = claim("0", "a", None);
    with_record.commit = Some(record.clone());
    let won = store.claim_ownership(&[with_record]).await.unwrap();
    assert_eq!(won[0].commit.as_ref(), Some(&record));
    assert_eq!(
        store.list_ownership().await.unwrap()[0].commit,
        Some(record)
    );
    // A claim without it (an SDK processor's, or an older hubcap's) drops it.
    store
        .claim_ownership(&[claim("0", "b", Some(&won[0].version))])
        .await
        .unwrap();
    assert_eq!(store.list_ownership().await.unwrap()[0].commit, None);
}

#[tokio::test]
async fn a_checkpoint_is_listed_with_the_time_its_record_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let before = SystemTime::now() - Duration::from_secs(1);
    store.update_checkpoint(&checkpoint_at(7)).await.unwrap();
    let after = SystemTime::now() + Duration::from_secs(1);
    let listed = store.list_checkpoint_records().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].checkpoint, checkpoint_at(7));
    assert_eq!(listed[0].version, "1");
    let written = listed[0]
        .last_modified
        .expect("a file has a modification time");
    assert!(
        before <= written && written <= after,
        "{written:?} not in {before:?}..{after:?}"
    );
}
