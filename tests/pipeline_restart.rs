//! Stopping and restarting the real `hubcap` binary against the emulator: a drained stop, a
//! `kill -9`, and SIGTERM with a window open. The delivery contract's points 1, 3 and 5. Each
//! scenario runs through the stdout sink and through committed Avro files.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use hubcap::eventhubs::OutgoingEvent;

const PARTITIONS: usize = 4;

for_each_sink!(
    stop_and_restart_resumes_at_the_checkpoint_without_loss_or_duplicates,
    kill_9_mid_window_then_restart_loses_nothing,
    sigterm_drains_the_open_window,
);

/// hubcap names its partition receivers `hubcap-<partition id>-<uuid>`.
const RECEIVER_LINK: &str = "hubcap-0-";

/// The highest sequence number printed per partition.
fn last_printed(events: &[Event]) -> BTreeMap<String, i64> {
    let mut last = BTreeMap::new();
    for event in events {
        let entry = last.entry(event.partition_id.clone()).or_insert(-1);
        *entry = event.sequence_number.max(*entry);
    }
    last
}

/// The body the second run's events are published with.
fn second_body(partition_id: &str, index: usize) -> String {
    format!("second run, partition {partition_id}, event {index}")
}

async fn stop_and_restart_resumes_at_the_checkpoint_without_loss_or_duplicates(sink: Sink) {
    let emulator = start_emulator(PARTITIONS).await;
    preload_each(&emulator, 500, 200);
    let work = Workdir::new();
    // The first run on the default one-thread runtime, the second on a pool of threads.
    let one_thread = work.config(emulator.amqp_addr()).sink(sink);
    let pool = one_thread.clone().set_raw("runtime", "worker_threads", "3");
    let store = work.store(emulator.amqp_addr());
    let ids = partition_ids(&emulator);
    let first_ids = all_event_ids(&emulator);
    assert_eq!(first_ids.len(), 2_000);

    let mut first = Hubcap::start("first run", &work, &one_thread);
    first
        .wait_to_deliver(&first_ids, Duration::from_secs(30))
        .await;
    let asked = Instant::now();
    let printed = first.stop_cleanly().await;
    eprintln!("first run drained and exited in {:?}", asked.elapsed());
    assert_exactly_once("first run", &printed, &first_ids);

    for id in &ids {
        let ownership = store.ownership(id).expect("an ownership record");
        assert_eq!(
            ownership.ownerid, "",
            "partition {id} was not released: {ownership:?}"
        );
        let checkpoint = store.checkpoint(id).expect("a checkpoint record");
        let last = printed
            .iter()
            .filter(|e| &e.partition_id == id)
            .max_by_key(|e| e.sequence_number)
            .expect("partition printed");
        assert_eq!(checkpoint.sequencenumber, Some(499), "partition {id}");
        assert_eq!(
            checkpoint.offset.as_deref(),
            Some(last.offset.as_str()),
            "partition {id}: the checkpoint names the last event's offset"
        );
    }

    for id in &ids {
        let events: Vec<OutgoingEvent> = (0..500)
            .map(|i| OutgoingEvent {
                body: second_body(id, i).into_bytes(),
                properties: vec![("index".into(), i.to_string())],
            })
            .collect();
        publish(&emulator, id, &events).await;
    }
    let second_ids: BTreeSet<EventId> = all_event_ids(&emulator)
        .difference(&first_ids)
        .cloned()
        .collect();
    assert_eq!(second_ids.len(), 2_000);

    let mut second = Hubcap::start("second run", &work, &pool);
    second
        .wait_to_deliver(&second_ids, Duration::from_secs(30))
        .await;
    let printed = second.stop_cleanly().await;
    assert_exactly_once("second run", &printed, &second_ids);
    for event in &printed {
        let index = (event.sequence_number - 500) as usize;
        assert_eq!(
            event.body,
            serde_json::Value::String(second_body(&event.partition_id, index)),
            "{}",
            event.id()
        );
        assert_eq!(
            event.properties.get("index"),
            Some(&serde_json::Value::String(index.to_string()))
        );
    }
    for id in &ids {
        assert_eq!(
            store.checkpoint(id).and_then(|c| c.sequencenumber),
            Some(999),
            "partition {id}"
        );
        assert_eq!(store.ownership(id).map(|o| o.ownerid), Some(String::new()));
    }
    if sink == Sink::AvroFile {
        let archive = Archive::new(&work.archive());
        let both: BTreeSet<EventId> = first_ids.union(&second_ids).cloned().collect();
        assert_exactly_once("the whole archive", &archive.events(), &both);
    }
    emulator.shutdown().await;
}

async fn kill_9_mid_window_then_restart_loses_nothing(sink: Sink) {
    let emulator = start_emulator(2).await;
    let ids = partition_ids(&emulator);
    let work = Workdir::new();
    let store = work.store(emulator.amqp_addr());
    let restart = work.config(emulator.amqp_addr()).sink(sink);
    // Windows close on size (about 35 events of 200 bytes), long before their 30 s age, so
    // there are many commits and, at any moment, most likely a window open.
    let killed =
        restart
            .clone()
            .set("sink", "max_window", "30s")
            .set("sink", "max_window_bytes", "16KiB");
    // The restart closes windows every second, so the tail shows up without waiting 30 s.

    let publishing = stream(&emulator, 400, 200);
    let mut first = Hubcap::start("killed run", &work, &killed);
    eventually(
        "the first run commits several windows",
        Duration::from_secs(30),
        || first.event_count() >= 600,
    )
    .await;
    // Kill between commits rather than right after one: once every partition holds at least
    // 20 events past the last one printed, the open windows have events in them.
    let printed_before = last_printed(&first.events());
    eventually(
        "20 more events per partition after the last commit",
        Duration::from_secs(10),
        || {
            let enqueued = last_sequence_numbers(&emulator);
            printed_before
                .iter()
                .all(|(id, printed)| enqueued[id] >= printed + 20)
        },
    )
    .await;
    first.kill();
    let enqueued_at_kill = last_sequence_numbers(&emulator);
    let checkpointed_at_kill = store.checkpointed(&ids);
    let printed_first = first.events();
    eprintln!(
        "killed after {} events printed; checkpoints {checkpointed_at_kill:?}, enqueued {enqueued_at_kill:?}",
        printed_first.len()
    );
    assert!(
        ids.iter()
            .any(|id| enqueued_at_kill[id] > checkpointed_at_kill[id]),
        "there were events past the checkpoints when hubcap was killed"
    );
    // Each partition's lines are a prefix 0..=P, and P is at or past the checkpoint (lines are
    // printed before the checkpoint is written).
    for id in &ids {
        let seqs: Vec<i64> = printed_first
            .iter()
            .filter(|e| &e.partition_id == id)
            .map(|e| e.sequence_number)
            .collect();
        let expected: Vec<i64> = (0..seqs.len() as i64).collect();
        assert_eq!(seqs, expected, "first run, partition {id}: not a prefix");
        let last = seqs.len() as i64 - 1;
        assert!(
            last >= checkpointed_at_kill[id],
            "partition {id}: checkpoint {} past the last printed event {last}",
            checkpointed_at_kill[id],
        );
    }

    let mut second = Hubcap::start("restarted run", &work, &restart);
    eventually(
        "the restarted run takes over after the killed run's ownership expires",
        Duration::from_secs(20),
        || second.event_count() > 0,
    )
    .await;
    let expected = publishing.stop_and_list(&emulator).await;
    eventually(
        "the union of both runs holds every event",
        Duration::from_secs(30),
        || {
            let mut union = printed_first.clone();
            union.extend(second.events());
            covers(&union, &expected)
        },
    )
    .await;
    let printed_second = second.stop_cleanly().await;

    // The restart resumed right after each checkpoint and printed the rest exactly once.
    let resumed: BTreeSet<EventId> = expected
        .iter()
        .filter(|id| id.sequence_number > checkpointed_at_kill[&id.partition_id])
        .cloned()
        .collect();
    assert_exactly_once("restarted run", &printed_second, &resumed);

    let mut union = printed_first.clone();
    union.extend(printed_second);
    let counts = count_by_id(&union);
    let missing: Vec<&EventId> = expected
        .iter()
        .filter(|id| !counts.contains_key(id))
        .collect();
    assert!(missing.is_empty(), "lost events: {}", sample(&missing));
    let mut duplicates: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (id, count) in &counts {
        assert!(*count <= 2, "{id} printed {count} times");
        if *count == 2 {
            assert!(
                id.sequence_number > checkpointed_at_kill[&id.partition_id],
                "{id} was printed twice but is at or below the checkpoint {}",
                checkpointed_at_kill[&id.partition_id]
            );
            duplicates
                .entry(id.partition_id.clone())
                .or_default()
                .push(id.sequence_number);
        }
    }
    eprintln!(
        "{} events, duplicates (committed, not yet checkpointed at the kill): {:?}",
        expected.len(),
        duplicates
            .iter()
            .map(|(p, seqs)| format!("{p}: {}", seqs.len()))
            .collect::<Vec<_>>()
    );
    if sink == Sink::AvroFile {
        // The killed run's open windows were staging files; the restart deleted them when it
        // took the partitions over, and drained its own.
        let left = staging_files(&work.archive());
        assert!(left.is_empty(), "staging files left: {left:?}");
    }
    emulator.shutdown().await;
}

async fn sigterm_drains_the_open_window(sink: Sink) {
    let emulator = start_emulator(1).await;
    // hubcap reaches the emulator through a proxy that counts AMQP frames: with a one-hour
    // window nothing is delivered before the drain, and the frames show when hubcap has
    // taken the events off its link.
    let proxy = AmqpProxy::start(emulator.amqp_addr()).await;
    let work = Workdir::new();
    let store = work.store(proxy.addr());
    let config = work
        .config(proxy.addr())
        .sink(sink)
        .set("sink", "max_window", "1h")
        .set_raw("eventhub", "prefetch", "200")
        // Count-based credit only, so the top-up below comes at exactly half of 200.
        .set("eventhub", "prefetch_bytes", "1GiB");
    let mut hubcap = Hubcap::start("hubcap", &work, &config);
    eventually(
        "hubcap's receiver grants its first credit",
        Duration::from_secs(15),
        || proxy.max_link_credit(RECEIVER_LINK) > 0,
    )
    .await;
    let transfers = proxy.sent_to_client(TRANSFER);
    partitions(&emulator)[0].preload(100, 200).expect("preload");
    eventually(
        "the emulator sends the 100 events",
        Duration::from_secs(10),
        || proxy.sent_to_client(TRANSFER) >= transfers + 100,
    )
    .await;
    // With a prefetch of 200, hubcap tops its credit up (a link flow naming the deliveries it
    // has seen) only once it has taken 100 events off the link into its window.
    eventually(
        "hubcap takes the 100 events into its window",
        Duration::from_secs(10),
        || proxy.client_flow_delivery_count() >= 100,
    )
    .await;
    assert_eq!(
        hubcap.event_count(),
        0,
        "nothing is delivered while the window is open"
    );
    assert_eq!(store.checkpoint("0"), None, "nothing is checkpointed yet");

    let printed = hubcap.stop_cleanly().await;
    assert_exactly_once("drained window", &printed, &all_event_ids(&emulator));
    let checkpoint = store.checkpoint("0").expect("a checkpoint after the drain");
    assert_eq!(checkpoint.sequencenumber, Some(99));
    assert_eq!(
        checkpoint.offset.as_deref(),
        Some(printed.last().unwrap().offset.as_str())
    );
    assert_eq!(store.ownership("0").map(|o| o.ownerid), Some(String::new()));
    let commits: Vec<(Option<String>, Option<String>)> = hubcap
        .logs()
        .iter()
        .filter(|l| l.is_commit())
        .map(|l| (l.field("events"), l.field("last_sequence_number")))
        .collect();
    assert_eq!(
        commits,
        [(Some("100".to_owned()), Some("99".to_owned()))],
        "the drain committed one window of 100 events"
    );
    if sink == Sink::AvroFile {
        assert_eq!(hubcap.committed_files().len(), 1, "one file for the window");
    }
    drop(proxy);
    emulator.shutdown().await;
}
