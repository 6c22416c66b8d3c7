"""hubcap with the `avro_file` sink: Capture Avro files read back with fastavro (and taken apart
by hand), fed by the unmodified official SDK through the emulator.

Every event carries its number in property "n". The SDK's own consumer is the reference for where
an event landed; what the test sent is the reference for the rest; a real Capture file from the
service is the reference for the schema header.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import os
import re
import stat
import threading
import time
from pathlib import Path
from typing import Any, Optional

import pytest

pytest.register_assert_rewrite("hubcap_process", "archive_formats")

from hubcap_process import (  # noqa: E402
    CAPTURE_TIME,
    avro_property,
    epoch_ms,
    record_problems,
    STAGING_DIR,
    AvroFile,
    Landed,
    SentEvent,
    capture_fixture,
    capture_time_text,
    check_snappy_blocks,
    committed_avro_files,
    first_mismatches,
    hubcap_config,
    hubcap_is_built,
    last_sequence_numbers,
    make_workload,
    parse_container,
    producer_client,
    read_avro,
    read_checkpoints,
    read_ownerships,
    read_with_sdk,
    send_workload,
    staging_files,
    typed,
)
from archive_formats import AVRO, JSONL_ZSTD, PARQUET, ArchiveFormat  # noqa: E402
from conftest import emulator_binary, hubcap_binary  # noqa: E402

pytest_plugins = ["hubcap_process"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

PARTITIONS = ["0", "1", "2", "3"]

# Event Hubs Capture's schema, as documented and as the service writes it.
CAPTURE_SCHEMA = {
    "type": "record",
    "name": "EventData",
    "namespace": "Microsoft.ServiceBus.Messaging",
    "fields": [
        {"name": "SequenceNumber", "type": "long"},
        {"name": "Offset", "type": "string"},
        {"name": "EnqueuedTimeUtc", "type": "string"},
        {"name": "SystemProperties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Properties", "type": {"type": "map", "values": ["long", "double", "string", "bytes"]}},
        {"name": "Body", "type": ["null", "bytes"]},
    ],
}

# <root>/{Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}[-N].avro
CAPTURE_PATH = re.compile(
    r"127\.0\.0\.1/hub1/(?P<partition>\d+)/(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/"
    r"(?P<hour>\d{2})/(?P<minute>\d{2})/(?P<second>\d{2})(?:-(?P<suffix>[1-9]\d*))?"
    r"(?P<extension>\.avro|\.parquet|\.jsonl|\.jsonl\.gz|\.jsonl\.zst)"
)


def avro_config(
    emulator, tmp_path: Path, *, consumer_group: Optional[str] = None, fmt: ArchiveFormat = AVRO, **sink: Any
) -> str:
    """`avro_file` (Capture Avro), or `file` with another format's keys."""
    kind = {"type": "avro_file"} if fmt is AVRO else {"type": "file", **fmt.sink}
    return hubcap_config(
        emulator,
        checkpoints=tmp_path / "checkpoints",
        sink={**kind, "path": str(tmp_path / "capture"), **sink},
        eventhub={"consumer_group": consumer_group} if consumer_group else None,
    )


def file_partition(root: Path, path: Path) -> str:
    relative = path.relative_to(root).as_posix()
    match = CAPTURE_PATH.fullmatch(relative)
    assert match, f"{relative} does not follow Capture's default path format"
    return match["partition"]


def file_time(root: Path, path: Path) -> dt.datetime:
    match = CAPTURE_PATH.fullmatch(path.relative_to(root).as_posix())
    assert match
    return dt.datetime(
        *(int(match[part]) for part in ("year", "month", "day", "hour", "minute", "second")), tzinfo=dt.timezone.utc
    )


def check_header(avro: AvroFile, codec: str = "null") -> None:
    """The header is Capture's: the schema text of a file the service wrote, byte for byte."""
    assert avro.metadata.get("avro.codec") == codec.encode(), (
        f"{avro.path}: avro.codec {avro.metadata.get('avro.codec')!r}, expected {codec!r}"
    )
    schema_text = avro.metadata.get("avro.schema")
    assert schema_text is not None, f"{avro.path}: no avro.schema in the header"
    schema = json.loads(schema_text)
    assert schema.get("type") == "record" and schema.get("name") == "EventData", schema
    assert schema.get("namespace") == "Microsoft.ServiceBus.Messaging", schema
    assert [f["name"] for f in schema["fields"]] == [f["name"] for f in CAPTURE_SCHEMA["fields"]], schema
    for got, expected in zip(schema["fields"], CAPTURE_SCHEMA["fields"]):
        assert got == expected, f"{avro.path}: field {expected['name']} is {got}, Capture has {expected}"
    assert schema == CAPTURE_SCHEMA
    fixture_schema = parse_container(capture_fixture()).metadata["avro.schema"]
    assert schema_text == fixture_schema, (
        f"{avro.path}: avro.schema differs from the Capture file's byte for byte:\n"
        f"  hubcap:  {schema_text!r}\n  capture: {fixture_schema!r}"
    )
    assert set(avro.metadata) <= {"avro.codec", "avro.schema"}, f"unexpected header keys: {sorted(avro.metadata)}"


def read_archive(root: Path) -> list[tuple[str, AvroFile]]:
    """(partition id from the path, file) for every committed file."""
    return [(file_partition(root, path), read_avro(path)) for path in committed_avro_files(root)]


def test_fifty_thousand_events_land_in_capture_files_exactly_once_with_every_field(
    reference_emulator, start_hubcap, tmp_path
):
    emulator = reference_emulator
    root = tmp_path / "capture"
    # ~430 bytes per event: every partition holds more than 4 MiB, so its windows must roll over on size
    events = make_workload(50_000, padding=200)
    sent = {event.number: event for event in events}
    send_workload(emulator, events)
    last = last_sequence_numbers(emulator)
    assert sorted(last) == PARTITIONS, f"the workload should reach every partition: {last}"

    hubcap = start_hubcap(avro_config(emulator, tmp_path, max_window="2s", max_window_bytes="4MiB"))
    landed = read_with_sdk(emulator, set(sent))
    hubcap.wait_for_checkpoints(tmp_path / "checkpoints", emulator, last, timeout=180)
    hubcap.terminate_cleanly()

    archive = read_archive(root)
    assert archive, "no committed .avro file"
    positions: collections.Counter = collections.Counter()
    numbers: collections.Counter = collections.Counter()
    mismatches: list[str] = []
    files_per_partition: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for partition_id, avro in archive:
        check_header(avro)
        assert avro.records, f"{avro.path}: an empty file although skip_empty is on"
        sequence_numbers = [record["SequenceNumber"] for record in avro.records]
        assert sequence_numbers == list(range(sequence_numbers[0], sequence_numbers[0] + len(sequence_numbers))), (
            f"{avro.path}: sequence numbers are not consecutive: {sequence_numbers[:20]}..."
        )
        files_per_partition[partition_id].append((sequence_numbers[0], sequence_numbers[-1]))
        first_enqueued = landed[avro.records[0]["Properties"]["n"]].enqueued_time.replace(microsecond=0)
        assert file_time(root, avro.path) >= first_enqueued, (
            f"{avro.path} is named before its first event was enqueued ({first_enqueued})"
        )
        for record in avro.records:
            number = record["Properties"].get("n")
            numbers[number] += 1
            positions[(partition_id, record["SequenceNumber"])] += 1
            if number not in sent:
                mismatches.append(f"an event that was not sent: {record!r}")
                continue
            problems = record_problems(record, sent[number], landed[number], partition_id)
            if problems:
                mismatches.append(f"event {number} ({sent[number].route}) in {avro.path.name}: " + "; ".join(problems))

    repeated = {position: count for position, count in positions.items() if count > 1}
    assert not repeated, f"{len(repeated)} events archived more than once: {list(repeated.items())[:10]}"
    missing = sorted(set(sent) - set(numbers))
    assert not missing, f"{len(missing)} events are in no file: {missing[:20]}"
    assert sum(numbers.values()) == len(sent)
    assert not mismatches, first_mismatches(mismatches)
    for partition_id, ranges in sorted(files_per_partition.items()):
        ranges.sort()
        assert ranges[0][0] == 0 and ranges[-1][1] == last[partition_id], (partition_id, ranges)
        gaps = [(a, b) for a, b in zip(ranges, ranges[1:]) if b[0] != a[1] + 1]
        assert not gaps, f"partition {partition_id}: files do not follow each other: {gaps}"
    for partition_id, ranges in sorted(files_per_partition.items()):
        assert len(ranges) >= 2, f"partition {partition_id}: all in one file {ranges}: over 4 MiB should roll over"


CODECS = [
    pytest.param("null", None, "null", id="null"),
    pytest.param("deflate", None, "deflate", id="deflate"),
    pytest.param("snappy", None, "snappy", id="snappy"),
    pytest.param("zstd", None, "zstandard", id="zstd"),
    pytest.param("deflate", 9, "deflate", id="deflate-level-9"),
    pytest.param("zstd", 19, "zstandard", id="zstd-level-19"),
]


@pytest.mark.parametrize(("codec", "level", "header_codec"), CODECS)
def test_every_codec_reads_back_in_fastavro(emulator, start_hubcap, tmp_path, codec, level, header_codec):
    root = tmp_path / "capture"
    events = make_workload(4_000, prefix=f"codec {codec}", padding=300)
    for event in events:  # every partition, so every partition writes files
        if event.partition_key is None:
            event.partition_id = str(event.number % 4)
    events.sort(key=lambda e: (e.partition_key or "", e.partition_id or ""))
    sent = {event.number: event for event in events}
    send_workload(emulator, events)
    last = last_sequence_numbers(emulator)

    sink = {"max_window": "1s", "codec": codec}
    if level is not None:
        sink["compression_level"] = level
    hubcap = start_hubcap(avro_config(emulator, tmp_path, **sink))
    hubcap.wait_for_checkpoints(tmp_path / "checkpoints", emulator, last)
    hubcap.terminate_cleanly()

    archive = read_archive(root)
    assert archive, "no committed .avro file"
    numbers: collections.Counter = collections.Counter()
    for _, avro in archive:
        check_header(avro, header_codec)
        if codec == "snappy":
            check_snappy_blocks(parse_container(avro.path))
        for record in avro.records:
            number = record["Properties"]["n"]
            numbers[number] += 1
            assert record["Body"] == sent[number].body, f"{avro.path}: event {number} body {record['Body']!r}"
    assert set(numbers) == set(sent) and sum(numbers.values()) == len(sent), (
        f"{len(set(sent) - set(numbers))} events missing, {sum(numbers.values()) - len(set(numbers))} duplicates"
    )
    if codec != "null":
        raw = sum(len(event.body) for event in events)
        stored = sum(path.stat().st_size for path in committed_avro_files(root))
        assert stored < raw, f"{codec}: {stored} bytes on disk for {raw} bytes of bodies: not compressed?"


def padding_events(first_number: int, per_partition_bytes: int) -> list[SentEvent]:
    """Events of 2 KiB to every partition, enough to close any window of less than
    `per_partition_bytes` that is open in front of them. The bodies are hash output, so they
    take as many bytes in a compressed format (Parquet, zstd JSON Lines) as in plain Avro."""
    events = []
    number = first_number
    for partition_id in PARTITIONS:
        for _ in range(per_partition_bytes // 2048 + 1):
            body = b"".join(hashlib.sha256(f"{number}/{k}".encode()).digest() for k in range(64))
            events.append(SentEvent(number, body, {"n": number, "padding": True}, partition_id=partition_id))
            number += 1
    return events


class Streamer:
    """Sends the workload in chunks from a thread until told to stop."""

    def __init__(self, emulator, chunk: int = 200, limit: int = 60_000) -> None:
        self.emulator = emulator
        self.chunk = chunk
        self.limit = limit
        self.sent: list[SentEvent] = []
        self._stop = threading.Event()
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="streamer", daemon=True)

    def _run(self) -> None:
        try:
            with producer_client(self.emulator) as producer:
                while not self._stop.is_set() and len(self.sent) < self.limit:
                    events = make_workload(self.chunk, start=len(self.sent), prefix="streamed", padding=60)
                    send_workload(self.emulator, events, producer)
                    self.sent += events
        except BaseException as err:
            self._failure.append(err)

    def start(self) -> "Streamer":
        self._thread.start()
        return self

    def stop(self) -> list[SentEvent]:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the sender did not stop"
        assert not self._failure, f"sending failed: {self._failure[0]!r}"
        return self.sent


@pytest.mark.parametrize("fmt", [AVRO, PARQUET, JSONL_ZSTD], ids=lambda fmt: fmt.id)
def test_kill_9_during_a_window_never_leaves_a_partial_file_and_loses_nothing(emulator, start_hubcap, tmp_path, fmt):
    """For every format: Capture Avro, Parquet (its footer is written last) and zstd JSON Lines
    (one compressed stream)."""
    root = tmp_path / "capture"
    checkpoints = tmp_path / "checkpoints"
    config = avro_config(emulator, tmp_path, fmt=fmt, max_window="1h", max_window_bytes="64KiB")

    def read_file(path: Path) -> list[dict]:
        """Raises on a truncated or torn file; checks Capture's header for Avro."""
        if fmt is AVRO:
            check_header(read_avro(path))
        return fmt.capture_records(path)

    first = start_hubcap(config)
    streamer = Streamer(emulator).start()
    first.wait_for(
        lambda: len(fmt.committed(root)) >= 6 and len(staging_files(root)) > 0,
        "committed files and an open window in the staging directory",
        timeout=60,
        interval=0.01,
    )
    first.kill()
    checkpoints_at_kill = read_checkpoints(checkpoints, emulator)
    staged_at_kill = staging_files(root)
    committed_at_kill = {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in fmt.committed(root)}
    sent = streamer.stop()
    assert staged_at_kill, "the kill should land while a window is open"

    # what the kill left: whole files only, and no staging file that a reader of the archive could see
    visible = [path for path in root.rglob("*" + fmt.extension) if STAGING_DIR in path.relative_to(root).parts]
    assert not visible, f"staging files named like committed files: {visible}"
    assert not set(staged_at_kill) & set(committed_at_kill)
    committed_before: dict[tuple[str, int], int] = {}
    for path in committed_at_kill:
        for record in read_file(path):
            committed_before[(file_partition(root, path), record["SequenceNumber"])] = record["Properties"]["n"]
    for partition_id, checkpoint in checkpoints_at_kill.items():
        through = checkpoint["sequencenumber"]
        not_committed = [s for s in range(through + 1) if (partition_id, s) not in committed_before]
        assert not not_committed, (
            f"partition {partition_id} was checkpointed at {through} but events {not_committed[:10]} "
            "were in no committed file"
        )

    # more events while hubcap is down, then restart and more while it runs
    more = make_workload(2_000, start=len(sent), prefix="while down", padding=60)
    send_workload(emulator, more)
    second = start_hubcap(config)
    later = make_workload(2_000, start=len(sent) + len(more), prefix="after restart", padding=60)
    send_workload(emulator, later)
    sent = {event.number: event for event in sent + more + later}
    last_real = last_sequence_numbers(emulator)
    # 64 KiB windows stay open at the tail: padding closes every window that holds a real event
    send_workload(emulator, padding_events(10_000_000, 2 * 64 * 1024))
    second.wait_for_checkpoints(checkpoints, emulator, last_real, timeout=120)
    second.terminate_cleanly()

    for path, digest in committed_at_kill.items():
        assert path.exists(), f"{path}, committed before the kill, is gone"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} was rewritten after the restart"
    leftovers = staging_files(root)
    assert not leftovers, f"staging files left after a clean stop: {leftovers}"

    copies: dict[tuple[str, int], list[int]] = collections.defaultdict(list)
    for path in fmt.committed(root):
        partition_id = file_partition(root, path)
        for record in read_file(path):
            copies[(partition_id, record["SequenceNumber"])].append(record["Properties"]["n"])
            expected = sent.get(record["Properties"]["n"])
            if expected is not None:
                assert record["Body"] == expected.body, f"{path}: event {record['Properties']['n']}"
    archived = {number for numbers in copies.values() for number in numbers}
    missing = sorted(set(sent) - archived)
    assert not missing, f"{len(missing)} events lost across the kill: {missing[:20]}"
    inconsistent = {position: numbers for position, numbers in copies.items() if len(set(numbers)) > 1}
    assert not inconsistent, f"one position archived with different events: {list(inconsistent.items())[:5]}"
    checkpointed = {pid: record["sequencenumber"] for pid, record in checkpoints_at_kill.items()}
    bad_duplicates = sorted(
        position
        for position, numbers in copies.items()
        if len(numbers) > 1 and position[1] <= checkpointed.get(position[0], -1)
    )
    assert not bad_duplicates, (
        f"events at or below the checkpoint at the kill ({checkpointed}) were archived again: {bad_duplicates[:20]}"
    )


def test_empty_windows_write_empty_files_when_asked(start_emulator, start_hubcap, tmp_path):
    emulator = start_emulator(consumer_groups=["quiet"])
    writes_empty = tmp_path / "writes-empty"
    skips_empty = tmp_path / "skips-empty"
    writes_empty.mkdir()
    skips_empty.mkdir()
    with_empty = start_hubcap(avro_config(emulator, writes_empty, max_window="1s", skip_empty=False))
    default = start_hubcap(avro_config(emulator, skips_empty, consumer_group="quiet", max_window="1s"))

    def empty_files_per_partition() -> collections.Counter:
        root = writes_empty / "capture"
        return collections.Counter(file_partition(root, path) for path in committed_avro_files(root))

    with_empty.wait_for(
        lambda: all(empty_files_per_partition()[pid] >= 1 for pid in PARTITIONS),
        lambda: f"an empty file for every partition (have {dict(empty_files_per_partition())})",
        timeout=30,
    )
    # The default instance has owned every partition while the other closed two more 1 s windows
    # on each: it had windows to close too, and wrote nothing.
    def owners() -> dict[str, str]:
        records = read_ownerships(skips_empty / "checkpoints", emulator, consumer_group="quiet")
        return {pid: record.get("ownerid") for pid, record in records.items()}

    default.wait_for(
        lambda: all(owners().get(pid) for pid in PARTITIONS),
        lambda: f"the skip_empty instance to own every partition (owners: {owners()})",
        timeout=30,
    )
    baseline = empty_files_per_partition()
    with_empty.wait_for(
        lambda: all(empty_files_per_partition()[pid] >= baseline[pid] + 2 for pid in PARTITIONS),
        lambda: f"two more empty windows per partition (from {dict(baseline)}, have {dict(empty_files_per_partition())})",
        timeout=30,
    )
    assert committed_avro_files(skips_empty / "capture") == [], "skip_empty (the default) wrote files for empty windows"
    with_empty.terminate_cleanly()
    default.terminate_cleanly()

    root = writes_empty / "capture"
    for path in committed_avro_files(root):
        avro = read_avro(path)
        check_header(avro)
        assert avro.records == [], f"{path}: records in a window without events"
    assert committed_avro_files(skips_empty / "capture") == [], "skip_empty (the default) wrote files for empty windows"


@pytest.mark.parametrize(("file_mode", "expected"), [(None, 0o600), ("0640", 0o640)], ids=["default", "0640"])
def test_files_are_private_by_default(emulator, start_hubcap, tmp_path, file_mode, expected):
    root = tmp_path / "capture"
    events = make_workload(400)
    for event in events:
        event.partition_key, event.partition_id = None, str(event.number % 4)
    events.sort(key=lambda e: e.partition_id)
    send_workload(emulator, events)
    last = last_sequence_numbers(emulator)

    sink = {"max_window": "1s"}
    if file_mode is not None:
        sink["file_mode"] = file_mode
    previous_umask = os.umask(0o022)  # what a service usually runs with; hubcap inherits it
    try:
        hubcap = start_hubcap(avro_config(emulator, tmp_path, **sink))
    finally:
        os.umask(previous_umask)
    hubcap.wait_for_checkpoints(tmp_path / "checkpoints", emulator, last)
    hubcap.terminate_cleanly()

    files = committed_avro_files(root)
    assert len(files) >= len(PARTITIONS), files
    modes = {path.relative_to(root).as_posix(): oct(stat.S_IMODE(path.stat().st_mode)) for path in files}
    wrong = {name: mode for name, mode in modes.items() if mode != oct(expected)}
    assert not wrong, f"files not {oct(expected)}: {wrong}"


STALL_PARTITIONS = 32
STALL_EVENTS_PER_PARTITION = 4_000
STALL_ROUNDS = 6
STALL_NO_PROGRESS_S = 15.0


def test_a_window_closing_on_time_never_stalls_a_partition(start_emulator, start_hubcap, tmp_path):
    """32 partitions read a sudden backlog while 1 s windows close on time: every partition's
    checkpoint keeps moving until it reaches the end. The watchdog is set to an hour so it cannot
    hide a stall.

    A regression test: PartitionReceiver::recv_batch once zeroed its used-credit count before
    awaiting the credit top-up, so a window deadline that won the partition loop's select! during
    that await dropped the flow for good, and the link ran dry with a backlog behind it (until the
    stuck-partition watchdog, 2 min by default). This load stalled a partition in every run then;
    with windows that close on size only it never did. The race is timing-dependent, hence
    several rounds on many partitions."""
    emulator = start_emulator(hubs={"hub1": STALL_PARTITIONS})
    checkpoints = tmp_path / "checkpoints"
    hubcap = start_hubcap(
        hubcap_config(
            emulator,
            checkpoints=checkpoints,
            sink={"type": "avro_file", "path": str(tmp_path / "capture"), "max_window": "1s"},
            eventhub={"stuck_partition_timeout": "1h"},
            load_balancing={"strategy": "greedy"},
        )
    )
    for round_number in range(1, STALL_ROUNDS + 1):
        emulator.admin(
            "POST", "/preload", json={"hub": "hub1", "events_per_partition": STALL_EVENTS_PER_PARTITION, "size": 200}
        )
        targets = last_sequence_numbers(emulator)
        progress: dict[str, tuple[Optional[int], float]] = {}

        def done_or_stalled() -> bool:
            now = time.monotonic()
            records = read_checkpoints(checkpoints, emulator)
            behind = {}
            for partition_id, target in targets.items():
                sequence_number = (records.get(partition_id) or {}).get("sequencenumber")
                if sequence_number is not None and sequence_number >= target:
                    continue
                behind[partition_id] = sequence_number
                previous, since = progress.get(partition_id, (None, now))
                if partition_id not in progress or sequence_number != previous:
                    progress[partition_id] = (sequence_number, now)
                elif now - since > STALL_NO_PROGRESS_S:
                    stalled = {
                        pid: seq for pid, seq in behind.items() if now - progress[pid][1] > STALL_NO_PROGRESS_S
                    }
                    raise AssertionError(
                        f"round {round_number}: partitions stopped short of their last event "
                        f"({target} each) with no checkpoint progress for {STALL_NO_PROGRESS_S:.0f} s: "
                        f"checkpointed at {stalled}"
                    )
            return not behind

        hubcap.wait_for(done_or_stalled, f"round {round_number}: every partition checkpointed at its end", timeout=120)
    hubcap.terminate_cleanly()
