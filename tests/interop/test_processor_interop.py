"""hubcap and the unmodified official Python processor (EventHubConsumerClient with
BlobCheckpointStore 1.2.0) sharing one consumer group ($Default) and one Azurite container:
each resumes exactly where the other checkpointed, both can run side by side without reading the
same partition at the same time, and hubcap can take partitions from a live Python processor and
hand them back under load.

Facts these tests rely on (see reference/interop-notes.md): both write
`<fqns>/hub1/$default/{ownership,checkpoint}/<id>` in lower case, with fqns = the endpoint's
host:port; the Python store releases with ownerid "" and reads that back as None; the Python
processor resumes after a checkpoint's offset (exclusive) and reads with owner level 0 when it
has a checkpoint store, as hubcap does.
"""

from __future__ import annotations

import collections
import datetime as dt
import time
import urllib.parse

import pytest

pytest.register_assert_rewrite("balancing_support", "hubcap_process")

from balancing_support import (  # noqa: E402
    BlobRecords,
    assert_no_problem_logs,
    OwnershipWatch,
    SdkProcessor,
    StreamingProducer,
    active_owners,
    balancing_config,
    compress,
    delivered,
    describe_log_events,
    first_log_event,
    hub_last_sequence_numbers,
    log_time,
    owner_counts,
    partition_ids,
    send_events,
    unique_container,
    wait_all,
)
from conftest import emulator_binary, hubcap_binary  # noqa: E402
from hubcap_process import hubcap_is_built  # noqa: E402

pytest_plugins = ["hubcap_process"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

PARTITIONS = partition_ids(4)


def by_partition(pairs) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = collections.defaultdict(list)
    for pid, seq in pairs:
        grouped[pid].append(seq)
    return dict(grouped)


def test_hubcap_resumes_where_a_python_processor_checkpointed(start_emulator, azurite, start_hubcap):
    emulator = start_emulator(hubs={"hub1": len(PARTITIONS)})
    container = unique_container("py-to-hubcap")
    records = BlobRecords(azurite, container, emulator)
    records.create_container()  # the Python store does not create it
    total, checkpointed = 150, 100
    send_events(emulator, {pid: total for pid in PARTITIONS})

    # The Python processor reads from the start and checkpoints each of the first 100 events of
    # every partition (it may read further: those are not checkpointed).
    processor = SdkProcessor(
        emulator,
        azurite,
        container,
        checkpoint=lambda event: event.sequence_number < checkpointed,
        starting_position="-1",
        load_balancing_interval=1.0,
    ).start()
    try:
        processor.wait_for(
            lambda: all(records.checkpoint_sequence_numbers().get(pid) == checkpointed - 1 for pid in PARTITIONS),
            lambda: f"the Python processor's checkpoints at {checkpointed - 1}\n{records.describe()}",
            timeout=40,
        )
        python_owner = processor.owner_id  # read while it runs: close() forgets it
    finally:
        processor.close()
    python_checkpoints = records.checkpoints()
    python_offsets = {e.partition_id: e.offset for e in processor.snapshot() if e.sequence_number == checkpointed - 1}
    assert {pid: r.offset for pid, r in python_checkpoints.items()} == python_offsets
    # The SDK releases on close what it owns then; a claim its balancing loop renewed while
    # closing can stay behind (seen once in CI), to expire like a crashed owner's. hubcap takes
    # either over; what must not be there is anybody else.
    owners = {pid: r.owner_id for pid, r in records.ownerships().items()}
    assert set(owners) == set(PARTITIONS), owners
    assert set(owners.values()) <= {"", python_owner}, f"owners other than the Python processor: {owners}"

    hubcap = start_hubcap(balancing_config(emulator, azurite, container, "hubcap-a"))
    expected = {pid: list(range(checkpointed, total)) for pid in PARTITIONS}
    hubcap.wait_for(
        lambda: all(len(by_partition(delivered(hubcap)).get(pid, [])) >= total - checkpointed for pid in PARTITIONS),
        lambda: f"{total - checkpointed} events per partition from hubcap (have "
        f"{ {p: len(s) for p, s in by_partition(delivered(hubcap)).items()} })\n{describe_log_events(hubcap)}",
        timeout=40,
    )
    hubcap.wait_for(
        lambda: all(records.checkpoint_sequence_numbers().get(pid) == total - 1 for pid in PARTITIONS),
        lambda: f"hubcap's checkpoints at {total - 1}\n{records.describe()}",
        timeout=20,
    )
    hubcap.terminate_cleanly()
    assert_no_problem_logs([hubcap])
    got = by_partition(delivered(hubcap))
    assert {pid: seqs[0] for pid, seqs in got.items()} == {pid: checkpointed for pid in PARTITIONS}, (
        f"hubcap's first event per partition is not the Python checkpoint + 1 ({checkpointed}): "
        f"{ {p: compress(s) for p, s in got.items()} }"
    )
    assert got == expected, f"hubcap delivered { {p: compress(s) for p, s in got.items()} }, wanted {checkpointed}-{total - 1}"


def test_python_resumes_where_hubcap_checkpointed(start_emulator, azurite, start_hubcap):
    emulator = start_emulator(hubs={"hub1": len(PARTITIONS)})
    container = unique_container("hubcap-to-py")
    records = BlobRecords(azurite, container, emulator)
    producer = StreamingProducer(emulator, PARTITIONS, rate=200).start()
    try:
        hubcap = start_hubcap(balancing_config(emulator, azurite, container, "hubcap-a", strategy="greedy"))
        # hubcap reads the stream for a while, then drains while events keep coming.
        hubcap.wait_for(
            lambda: all((records.checkpoint_sequence_numbers().get(pid) or -1) >= 60 for pid in PARTITIONS),
            lambda: f"hubcap's checkpoints past 60\n{records.describe()}",
            timeout=40,
        )
        hubcap.terminate_cleanly()
        hubcap_checkpoints = records.checkpoint_sequence_numbers()
        released = {pid: r.owner_id for pid, r in records.ownerships().items()}
        assert released == {pid: "" for pid in PARTITIONS}, f"hubcap did not release: {released}"
        sent_after = producer.total() + 200
        wait_all([], lambda: producer.total() >= sent_after, "events sent after hubcap stopped", timeout=10)
    finally:
        producer.stop()
    assert not producer.errors, f"the producer failed: {producer.errors[:3]}"
    assert_no_problem_logs([hubcap])
    got = by_partition(delivered(hubcap))
    assert got == {pid: list(range(hubcap_checkpoints[pid] + 1)) for pid in PARTITIONS}, (
        f"hubcap's stdout { {p: compress(s) for p, s in got.items()} } is not exactly 0..checkpoint "
        f"{hubcap_checkpoints} per partition"
    )

    # Default starting position: the checkpoints decide.
    processor, last = python_reads_on_from(emulator, azurite, container, hubcap_checkpoints, checkpoint=False)
    python = by_partition(sorted(processor.delivered_counts().elements()))
    assert python == {pid: list(range(hubcap_checkpoints[pid] + 1, last[pid] + 1)) for pid in PARTITIONS}, (
        f"the Python processor read { {p: compress(s) for p, s in python.items()} }"
    )


def test_python_processor_and_hubcap_share_a_consumer_group_without_overlap(start_emulator, azurite, start_hubcap):
    partitions = partition_ids(8)
    emulator = start_emulator(hubs={"hub1": len(partitions)})
    container = unique_container("shared")
    records = BlobRecords(azurite, container, emulator)
    records.create_container()
    # Processors sharing a consumer group must agree on the expiration: 6 s for both.
    expiration = 6.0
    hubcap = start_hubcap(
        balancing_config(emulator, azurite, container, "hubcap-a", ownership_expiration="6s")
    )
    processor = SdkProcessor(
        emulator,
        azurite,
        container,
        # Every fifth event: a checkpoint is one blob write, and the SDK's loop is serial.
        checkpoint=lambda event: event.sequence_number % 5 == 4,
        starting_position="-1",
        load_balancing_strategy="balanced",
        load_balancing_interval=1.0,
        partition_ownership_expiration_interval=expiration,
    ).start()
    producer = StreamingProducer(emulator, partitions, rate=80, batch=4)
    with OwnershipWatch(records) as watch:
        origin = time.monotonic()
        try:
            def split() -> dict[str, int]:
                return owner_counts(active_owners(watch.current(), expiration))

            def stable() -> bool:
                processor.check_running()
                counts = split()
                return (
                    sum(counts.values()) == len(partitions)
                    and counts.get("hubcap-a", 0) > 0
                    and counts.get(processor.owner_id, 0) > 0
                    and not watch.changes(since=time.monotonic() - 3.0)
                )

            waited = wait_all(
                [hubcap], stable,
                lambda: f"a stable split between hubcap and the Python processor (now {split()})\n"
                f"{watch.describe_changes(origin=origin)}\n{describe_log_events(hubcap)}",
                timeout=40,
            )
            stable_at = time.monotonic()
            owners_when_stable = active_owners(watch.current(), expiration)
            print(f"stable after {waited:.1f} s: {split()} (python = {processor.owner_id})")
            producer.start()
            wait_all([hubcap], lambda: time.monotonic() > stable_at + 5, "events flowing", 20)
            producer.stop()
            assert not producer.errors, f"the producer failed: {producer.errors[:3]}"
            last = hub_last_sequence_numbers(emulator, partitions)

            def everything_read() -> bool:
                seen = set(delivered(hubcap)) | set(processor.delivered_counts())
                return all((pid, seq) in seen for pid in partitions for seq in range(last[pid] + 1))

            wait_all([hubcap], everything_read, lambda: f"every event up to {last} read by one of the two", 30)
            changes = watch.changes(since=stable_at)
            history = watch.describe_changes(since=origin, origin=stable_at)
        finally:
            producer.stop()
            hubcap.terminate_cleanly()
            processor.close()

    assert_no_problem_logs([hubcap])
    hubcap_seen = collections.Counter(delivered(hubcap))
    python_seen = processor.delivered_counts()
    python_id = processor.owner_id
    readers = {"hubcap-a": hubcap_seen, python_id: python_seen}
    problems = []
    for pid in partitions:
        owner = owners_when_stable[pid]
        for name, seen in readers.items():
            seqs = sorted(s for p, s in seen if p == pid)
            twice = sorted(s for (p, s), n in seen.items() if p == pid and n > 1)
            if twice:
                problems.append(f"partition {pid}: {name} delivered {compress(twice)} more than once")
            if name != owner and seqs and not any(c.partition_id == pid for c in changes):
                problems.append(f"partition {pid} (owned by {owner} throughout): {name} also read {compress(seqs)}")
        both = sorted(s for p, s in hubcap_seen if p == pid and (p, s) in python_seen)
        if both:
            problems.append(f"partition {pid}: read by both: {compress(both)}")
    assert not problems, "\n".join(problems) + f"\n{history}"
    assert not changes, f"ownership changed while events flowed (no overlap was seen, but):\n{history}"


def test_hubcap_takes_partitions_from_a_live_python_processor_and_hands_them_back(
    start_emulator, azurite, start_hubcap
):
    """The migration path under load: a Python processor owns every partition and checkpoints
    every event; hubcap joins and steals its share (balanced: 2 of 4), then is stopped and the
    Python processor takes them back. Allowed duplicates: only at a steal from Python (Python
    has no fence, so it may deliver events past the checkpoint hubcap resumed from until it sees
    the link stolen). Not allowed: loss, hubcap resuming before a checkpoint Python had written
    before the steal, any duplicate at hubcap's graceful hand-back."""
    emulator = start_emulator(hubs={"hub1": len(PARTITIONS)})
    container = unique_container("migrate")
    records = BlobRecords(azurite, container, emulator)
    records.create_container()
    expiration = 6.0
    producer = StreamingProducer(emulator, PARTITIONS, rate=12, batch=2).start()
    processor = SdkProcessor(
        emulator,
        azurite,
        container,
        checkpoint=lambda event: True,
        starting_position="-1",
        load_balancing_strategy="greedy",
        load_balancing_interval=1.0,
        partition_ownership_expiration_interval=expiration,
    )
    hubcap = None
    with OwnershipWatch(records, watch_checkpoints=True) as watch:
        origin = time.monotonic()
        try:
            processor.start()

            def owners() -> dict[str, str]:
                return active_owners(watch.current(), expiration)

            def python_count(pid: str, since: float = 0.0) -> int:
                return sum(1 for e in processor.snapshot() if e.partition_id == pid and e.at >= since)

            processor.wait_for(
                lambda: owners() == {pid: processor.owner_id for pid in PARTITIONS}
                and all(python_count(pid) >= 5 for pid in PARTITIONS),
                lambda: f"the Python processor owning and reading every partition ({owners()})",
                timeout=30,
            )
            hubcap = start_hubcap(balancing_config(emulator, azurite, container, "hubcap-a", ownership_expiration="6s"))

            def hubcap_share() -> list[str]:
                return sorted(pid for pid, owner in owners().items() if owner == "hubcap-a")

            wait_all(
                [hubcap],
                lambda: len(hubcap_share()) == 2
                and sorted(owners().values()).count(processor.owner_id) == 2
                and all(len(by_partition(delivered(hubcap)).get(pid, [])) >= 5 for pid in hubcap_share()),
                lambda: f"hubcap owning and reading 2 of 4 partitions ({owners()})\n"
                f"{watch.describe_changes(origin=origin)}\n{describe_log_events(hubcap)}",
                timeout=30,
            )
            taken = hubcap_share()
            hubcap.terminate_cleanly()
            stopped_at = time.monotonic()
            hubcap_checkpoints = records.checkpoint_sequence_numbers()
            processor.wait_for(
                lambda: owners() == {pid: processor.owner_id for pid in PARTITIONS}
                and all(python_count(pid, since=stopped_at) >= 3 for pid in taken),
                lambda: f"the Python processor reading {taken} again ({owners()})",
                timeout=30,
            )
            producer.stop()
            assert not producer.errors, f"the producer failed: {producer.errors[:3]}"
            last = hub_last_sequence_numbers(emulator, PARTITIONS)

            def everything_read() -> bool:
                seen = set(delivered(hubcap)) | set(processor.delivered_counts())
                return all((pid, seq) in seen for pid in PARTITIONS for seq in range(last[pid] + 1))

            processor.wait_for(everything_read, lambda: f"every event up to {last} read by one of the two", 40)
        finally:
            producer.stop()
            if hubcap is not None and hubcap.process.poll() is None:
                hubcap.terminate()
            processor.close()
        changes = watch.changes()
    history = watch.describe_changes(origin=origin)
    assert_no_problem_logs([hubcap])

    hubcap_seen = collections.Counter(delivered(hubcap))
    python_events = processor.snapshot()
    python_seen = collections.Counter((e.partition_id, e.sequence_number) for e in python_events)
    self_duplicates = {
        name: {key: n for key, n in seen.items() if n > 1}
        for name, seen in (("hubcap", hubcap_seen), ("python", python_seen))
    }
    assert not any(self_duplicates.values()), f"a reader delivered events twice: {self_duplicates}\n{history}"

    problems = []
    handover_duplicates = {}
    for pid in PARTITIONS:
        hubcap_seqs = sorted(s for p, s in hubcap_seen if p == pid)
        python_seqs = {s for p, s in python_seen if p == pid}
        both = sorted(s for s in hubcap_seqs if s in python_seqs)
        if pid not in taken:
            if hubcap_seqs:
                problems.append(f"partition {pid} (never hubcap's): hubcap read {compress(hubcap_seqs)}")
            continue
        first, last_hubcap = hubcap_seqs[0], hubcap_seqs[-1]
        steal = [c for c in changes if c.partition_id == pid and c.owner_id == "hubcap-a"]
        if not steal:
            problems.append(f"partition {pid}: no ownership change to hubcap-a was seen")
            continue
        before = steal[0].checkpoint_before
        if before is not None and first - 1 < before:
            problems.append(
                f"partition {pid}: hubcap resumed at {first}, before the checkpoint {before} the Python "
                f"processor had written before the steal"
            )
        # Duplicates only at the steal: Python's events from hubcap's first one on.
        python_first_stint = {e.sequence_number for e in python_events if e.partition_id == pid and e.at < stopped_at}
        bad = [s for s in both if s < first or s not in python_first_stint]
        if bad:
            problems.append(f"partition {pid}: read by both outside the steal hand-over: {compress(bad)}")
        if both:
            # Python delivered these after the checkpoint hubcap resumed from. hubcap reads the
            # checkpoints right after its claim and then logs it: at most the one event whose
            # checkpoint write was in flight may have been delivered before that log line;
            # the rest were delivered by a Python processor that had already lost the partition.
            epoch = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
            claimed = first_log_event([hubcap], pid, ["stolen", "claimed", "expired"], epoch)
            assert claimed, f"hubcap read partition {pid} without logging a claim\n{describe_log_events(hubcap)}"
            claimed_wall = log_time(claimed[1])
            when = {
                e.sequence_number: round((e.wall - claimed_wall).total_seconds(), 3)
                for e in python_events
                if e.partition_id == pid and e.sequence_number in both
            }
            handover_duplicates[pid] = (compress(both), when)
            early = [s for s, t in when.items() if t < 0]
            if len(early) > 1:
                problems.append(
                    f"partition {pid}: hubcap resumed at {first}, but the Python processor had delivered "
                    f"{compress(early)} before hubcap logged its claim (seconds relative to the claim: {when})"
                )
        # The hand-back: Python resumes exactly after hubcap's last event, its drain checkpoint.
        if hubcap_checkpoints.get(pid) != last_hubcap:
            problems.append(
                f"partition {pid}: hubcap's checkpoint after the drain is {hubcap_checkpoints.get(pid)}, "
                f"its last delivered event {last_hubcap}"
            )
        second_stint = sorted(e.sequence_number for e in python_events if e.partition_id == pid and e.at >= stopped_at)
        if not second_stint or second_stint[0] != last_hubcap + 1:
            problems.append(
                f"partition {pid}: after hubcap's drain (last event {last_hubcap}) the Python processor "
                f"resumed at {second_stint[:1]}"
            )
    print(
        f"hubcap took {taken}; hand-over duplicates at the steals (seqs, Python delivery time relative to "
        f"hubcap's claim): {handover_duplicates}"
    )
    assert not problems, "\n".join(problems) + f"\n{history}\n{describe_log_events(hubcap)}"


def test_python_resumes_from_checkpoints_carrying_hubcaps_commit_records(
    start_emulator, azurite, start_hubcap, tmp_path
):
    """With an Avro archive, hubcap's checkpoints carry `hubcapcommitted` and its ownerships the
    commit record (`hubcapcommitfirst`/`last`/`name`) beside the SDKs' keys; the official
    Python processor ignores them and resumes right after hubcap's checkpoints."""
    emulator = start_emulator(hubs={"hub1": len(PARTITIONS)})
    container = unique_container("hubcap-records")
    records = BlobRecords(azurite, container, emulator)
    producer = StreamingProducer(emulator, PARTITIONS, rate=200).start()
    archive = tmp_path / "archive"
    try:
        hubcap = start_hubcap(
            balancing_config(
                emulator,
                azurite,
                container,
                "hubcap-a",
                strategy="greedy",
                sink={"type": "avro_file", "path": str(archive)},
            )
        )
        hubcap.wait_for(
            lambda: all((records.checkpoint_sequence_numbers().get(pid) or -1) >= 60 for pid in PARTITIONS),
            lambda: f"hubcap's checkpoints past 60\n{records.describe()}",
            timeout=40,
        )
        hubcap.terminate_cleanly()
        sent_after = producer.total() + 200
        wait_all([], lambda: producer.total() >= sent_after, "events sent after hubcap stopped", timeout=10)
    finally:
        producer.stop()
    assert not producer.errors, f"the producer failed: {producer.errors[:3]}"
    hubcap_checkpoints = records.checkpoint_sequence_numbers()
    # hubcap's keys are there, next to the SDKs'.
    for pid, blob in records._list("checkpoint"):
        metadata = blob.metadata or {}
        assert set(metadata) == {"offset", "sequencenumber", "hubcapcommitted"}, (pid, metadata)
        committed = archive / urllib.parse.unquote(metadata["hubcapcommitted"])
        assert committed.is_file(), f"partition {pid}'s checkpoint names {committed}, which is not a file"
    for pid, blob in records._list("ownership"):
        metadata = blob.metadata or {}
        assert {"ownerid", "hubcapcommitfirst", "hubcapcommitlast", "hubcapcommitname"} <= set(metadata), (
            pid,
            metadata,
        )
        assert int(metadata["hubcapcommitlast"]) == hubcap_checkpoints[pid], (pid, metadata, hubcap_checkpoints)

    python_reads_on_from(emulator, azurite, container, hubcap_checkpoints, checkpoint=True)
    # The processor's own checkpoints replace the metadata with the SDK's keys only.
    for pid, blob in records._list("checkpoint"):
        assert "hubcapcommitted" not in (blob.metadata or {}), (pid, blob.metadata)


def python_reads_on_from(emulator, azurite, container, hubcap_checkpoints, *, checkpoint: bool):
    """Runs the official Python processor (default starting position: the store's checkpoints
    decide) until it has read every partition to its last event, and checks that it started
    right after hubcap's checkpoints. Returns the processor and the hub's last sequence numbers."""
    last = hub_last_sequence_numbers(emulator, PARTITIONS)
    processor = SdkProcessor(
        emulator, azurite, container, checkpoint=lambda event: checkpoint, load_balancing_interval=1.0
    )
    processor.start()
    try:
        processor.wait_for(
            lambda: all(
                max((s for p, s in processor.delivered_counts() if p == pid), default=-1) >= last[pid]
                for pid in PARTITIONS
            ),
            lambda: f"the Python processor reading up to {last}; first events {processor.first_sequence_numbers()}",
            timeout=40,
        )
    finally:
        processor.close()
    first = processor.first_sequence_numbers()
    assert first == {pid: hubcap_checkpoints[pid] + 1 for pid in PARTITIONS}, (
        f"the Python processor's first event per partition {first} is not hubcap's checkpoint + 1 "
        f"({ {p: s + 1 for p, s in hubcap_checkpoints.items()} })"
    )
    return processor, last
