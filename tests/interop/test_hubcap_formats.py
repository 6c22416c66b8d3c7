"""hubcap's Parquet and JSON Lines archives, on disk and in Azurite, read by real readers:
pyarrow and DuckDB for Parquet, Python's json (through gzip and zstd) for JSON Lines. Fed by the
unmodified official SDK through the emulator.

The workload carries every property type the SDK sends (int, float, str, bytes, bool, datetime,
uuid), events with and without a partition key, empty bodies, binary bodies and one 1 MB body.
The SDK's own consumer is the reference for where each event landed; what the test sent is the
reference for the rest. The fault scenarios run in test_hubcap_avro.py and test_hubcap_blob.py,
over these formats too.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import re
import uuid
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest

pytest.register_assert_rewrite("hubcap_process", "archive_formats")

from archive_formats import (  # noqa: E402
    JSONL,
    JSONL_GZIP,
    JSONL_ZSTD,
    PARQUET_UTF8,
    ArchivedEvent,
    ArchiveFormat,
    open_jsonl,
    parquet_schema,
    parse_time,
)
from azure.storage.blob import ContainerClient  # noqa: E402
from conftest import emulator_binary, hubcap_binary  # noqa: E402
from hubcap_process import (  # noqa: E402
    Landed,
    SentEvent,
    epoch_ms,
    first_mismatches,
    hubcap_config,
    hubcap_is_built,
    last_sequence_numbers,
    make_workload,
    read_with_sdk,
    send_workload,
    typed,
)

pytest_plugins = ["hubcap_process"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

PARTITIONS = ["0", "1", "2", "3"]
ONE_MB = 1_000_000
# <root>/127.0.0.1/hub1/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}[-N]<extension>
ARCHIVE_NAME = re.compile(r"127\.0\.0\.1/hub1/(?P<partition>\d+)/\d{4}/\d{2}/\d{2}/\d{2}/\d{2}/\d{2}(?:-[1-9]\d*)?")


def workload() -> list[SentEvent]:
    """3,000 numbered events of every route, every property type (a uuid on every third), empty
    and binary bodies, and one 1 MB body."""
    events = make_workload(3_000, prefix="formats", padding=100)
    for event in events[::3]:
        event.properties["id"] = uuid.UUID(int=event.number * 7919)
    big = len(events)
    body = hashlib.sha256(b"one megabyte").digest() * (ONE_MB // 32)
    events.append(SentEvent(big, body, {"n": big, "big_body": True}, partition_id="1"))
    return events


def send_and_locate(emulator) -> tuple[dict[int, SentEvent], dict[int, Landed]]:
    events = workload()
    send_workload(emulator, events)
    sent = {event.number: event for event in events}
    return sent, read_with_sdk(emulator, set(sent))


def run_hubcap(emulator, start_hubcap, tmp_path: Path, sink: dict[str, Any]) -> None:
    """Runs hubcap until everything in the hub is checkpointed, then stops it cleanly."""
    last = last_sequence_numbers(emulator)
    assert sorted(last) == PARTITIONS, f"the workload should reach every partition: {last}"
    checkpoints = tmp_path / "checkpoints"
    hubcap = start_hubcap(hubcap_config(emulator, checkpoints=checkpoints, sink={"max_window": "1s", **sink}))
    hubcap.wait_for_checkpoints(checkpoints, emulator, last, timeout=120)
    hubcap.terminate_cleanly()


def destination(where: str, fmt: ArchiveFormat, tmp_path: Path, azurite) -> tuple[dict[str, Any], Any]:
    """The [sink] of `fmt` to disk or to a fresh container, and a function that returns the
    directory its committed files can be read from (blobs are downloaded there first)."""
    root = tmp_path / "archive"
    if where == "disk":
        return {"type": "file", "path": str(root), **fmt.sink}, lambda: root
    container_name = f"formats-{uuid.uuid4().hex[:12]}"
    sink = {
        "type": "blob",
        "connection_string": azurite.connection_string,
        "container": container_name,
        **fmt.sink,
    }

    def download() -> Path:
        container = ContainerClient.from_connection_string(azurite.connection_string, container_name)
        for blob in container.list_blobs(include=["metadata"]):
            assert blob.name.endswith(fmt.extension), f"blob {blob.name} lacks the {fmt.extension} extension"
            metadata = {key.lower(): value for key, value in (blob.metadata or {}).items()}
            assert metadata.get("format") == fmt.sink["format"], f"{blob.name}: metadata {metadata}"
            assert metadata.get("schemaversion") == "1", f"{blob.name}: metadata {metadata}"
            path = root / blob.name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(container.download_blob(blob.name).readall())
        return root

    return sink, download


def path_partition(root: Path, path: Path, fmt: ArchiveFormat) -> str:
    relative = path.relative_to(root).as_posix()
    assert relative.endswith(fmt.extension), relative
    match = ARCHIVE_NAME.fullmatch(relative[: -len(fmt.extension)])
    assert match, f"{relative} does not follow Capture's default path format"
    return match["partition"]


def expected_value(value: Any) -> Any:
    """A property as Parquet keeps it: its own type; a uuid as its string."""
    return str(value) if isinstance(value, uuid.UUID) else value


def json_expected(value: Any, got: Any) -> tuple[Any, Any]:
    """(expected, got) for a property in JSON: timestamps are RFC 3339 text, uuids strings."""
    if isinstance(value, dt.datetime):
        return value, parse_time(got) if isinstance(got, str) else got
    return expected_value(value), got


def event_problems(event: ArchivedEvent, sent: SentEvent, where: Landed, partition_id: str, json_values: bool) -> list[str]:
    problems = []
    if event.partition_id != where.partition_id or partition_id != where.partition_id:
        problems.append(f"partition {event.partition_id} (path {partition_id}), the SDK found it in {where.partition_id}")
    if typed(event.sequence_number) != typed(where.sequence_number):
        problems.append(f"sequence_number {event.sequence_number!r} != {where.sequence_number}")
    if typed(event.offset) != typed(where.offset):
        problems.append(f"offset {event.offset!r} != {where.offset!r}")
    if event.enqueued_time.tzinfo is None or epoch_ms(event.enqueued_time) != epoch_ms(where.enqueued_time):
        problems.append(f"enqueued_time {event.enqueued_time!r} != {where.enqueued_time!r}")
    if event.partition_key != sent.partition_key:
        problems.append(f"partition_key {event.partition_key!r} != sent {sent.partition_key!r}")
    if list(event.properties) != list(sent.properties):
        problems.append(f"properties {list(event.properties)} in another order or set than sent {list(sent.properties)}")
    for key, value in sent.properties.items():
        if json_values:
            expected, got = json_expected(value, event.properties.get(key))
        else:
            expected, got = expected_value(value), event.properties.get(key)
        if typed(got) != typed(expected):
            problems.append(f"property {key!r} is {got!r}, expected {expected!r}")
    synthesized = [key for key in event.system_properties if key.startswith("x-opt-") and key != "x-opt-publisher"]
    if synthesized:
        problems.append(f"system_properties repeat the fields that have columns: {synthesized}")
    if event.body != sent.body:
        problems.append(f"body {event.body[:40]!r}... != sent {sent.body[:40]!r}... ({len(event.body or b'')} bytes)")
    return problems


def check_archive(root: Path, fmt: ArchiveFormat, sent: dict[int, SentEvent], landed: dict[int, Landed]) -> None:
    """Every sent event is in exactly one committed file, with every field right."""
    files = fmt.committed(root)
    assert files, f"no committed {fmt.extension} file under {root}"
    copies: collections.Counter = collections.Counter()
    mismatches: list[str] = []
    for path in files:
        partition_id = path_partition(root, path, fmt)
        events = fmt.events(path)
        assert events, f"{path}: an empty file although skip_empty is on"
        numbers = [event.sequence_number for event in events]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), f"{path}: not consecutive"
        for event in events:
            number = event.properties.get("n")
            copies[number] += 1
            if number not in sent:
                mismatches.append(f"{path.name}: an event that was not sent: {event!r:.200}")
                continue
            problems = event_problems(event, sent[number], landed[number], partition_id, fmt.id.startswith("jsonl"))
            if problems:
                mismatches.append(f"event {number} in {path.name}: " + "; ".join(problems))
    assert not mismatches, first_mismatches(mismatches)
    missing = sorted(set(sent) - set(copies))
    assert not missing, f"{len(missing)} events are in no file: {missing[:20]}"
    repeated = {number: count for number, count in copies.items() if count > 1}
    assert not repeated, f"{len(repeated)} events archived more than once: {list(repeated.items())[:10]}"


# --------------------------------------------------------------------------------------------
# Parquet


@pytest.mark.parametrize("where", ["disk", "blob"])
def test_parquet_archives_read_in_pyarrow_and_duckdb_with_every_type(
    reference_emulator, azurite, start_hubcap, tmp_path, where
):
    fmt = PARQUET_UTF8
    sink, archive_root = destination(where, fmt, tmp_path, azurite)
    sent, landed = send_and_locate(reference_emulator)
    run_hubcap(reference_emulator, start_hubcap, tmp_path, sink)
    root = archive_root()
    check_archive(root, fmt, sent, landed)

    # pyarrow: the exact Arrow types, the footer, the body_utf8 column
    expected_schema = parquet_schema(body_utf8=True)
    for path in fmt.committed(root):
        schema = pq.read_schema(path)
        assert schema.equals(expected_schema, check_metadata=False), (
            f"{path}: schema\n{schema.remove_metadata()}\nexpected\n{expected_schema}"
        )
        metadata = pq.read_metadata(path)
        footer = {key.decode(): value.decode() for key, value in metadata.metadata.items()}
        table = pq.read_table(path, columns=["sequence_number", "body", "body_utf8"])
        numbers = table.column("sequence_number").to_pylist()
        assert footer["hubcap.schema_version"] == "1"
        assert footer["hubcap.first_sequence_number"] == str(numbers[0]), footer
        assert footer["hubcap.last_sequence_number"] == str(numbers[-1]), footer
        assert footer["hubcap.event_count"] == str(len(numbers)), footer
        for body, text in zip(table.column("body").to_pylist(), table.column("body_utf8").to_pylist()):
            try:
                expected_text = body.decode()
            except UnicodeDecodeError:
                expected_text = None
            assert text == expected_text, f"{path}: body_utf8 {text!r:.60} for body {body!r:.60}"
        for group in range(metadata.num_row_groups):
            columns = {
                metadata.row_group(group).column(c).path_in_schema: metadata.row_group(group).column(c)
                for c in range(metadata.num_columns)
            }
            for name in ("sequence_number", "enqueued_time"):
                assert columns[name].is_stats_set, f"{path}: row group {group} has no statistics on {name}"

    # DuckDB: a property filter and a time filter select exactly the matching events
    times = sorted(epoch_ms(where.enqueued_time) for where in landed.values())
    threshold_ms = times[len(times) // 2]
    threshold = dt.datetime.fromtimestamp(threshold_ms / 1000, dt.timezone.utc)
    expected = {
        number
        for number, event in sent.items()
        if event.properties.get("flag") is True and epoch_ms(landed[number].enqueued_time) >= threshold_ms
    }
    glob = str(root / "**" / "*.parquet")
    rows = duckdb.connect().execute(
        f"SELECT properties['n'].long AS n, properties['id'].string AS id FROM read_parquet('{glob}') "
        "WHERE properties['flag'].boolean AND enqueued_time >= ?",
        [threshold],
    ).fetchall()
    got = [n for n, _ in rows]
    assert len(got) == len(set(got)), "DuckDB returned an event twice"
    assert set(got) == expected, (
        f"DuckDB: {len(set(got) - expected)} unexpected, {len(expected - set(got))} missing of {len(expected)}"
    )
    assert 0 < len(expected) < len(sent), "the filter should select some events, not all"
    ids = {n: event_id for n, event_id in rows}
    for number in expected:
        wanted = sent[number].properties.get("id")
        assert ids[number] == (str(wanted) if wanted else None), f"event {number}: id {ids[number]!r}"
    big = max(sent)
    (size,) = duckdb.connect().execute(
        f"SELECT octet_length(body) FROM read_parquet('{glob}') WHERE properties['big_body'].boolean"
    ).fetchone()
    assert size == len(sent[big].body) == ONE_MB


# --------------------------------------------------------------------------------------------
# JSON Lines


@pytest.mark.parametrize(
    ("fmt", "where"),
    [
        pytest.param(JSONL, "disk", id="plain-disk"),
        pytest.param(JSONL_GZIP, "disk", id="gzip-disk"),
        pytest.param(JSONL_ZSTD, "blob", id="zstd-blob"),
    ],
)
def test_jsonl_archives_read_line_by_line_give_the_same_events(
    reference_emulator, azurite, start_hubcap, tmp_path, fmt, where
):
    sink, archive_root = destination(where, fmt, tmp_path, azurite)
    sent, landed = send_and_locate(reference_emulator)
    run_hubcap(reference_emulator, start_hubcap, tmp_path, sink)
    root = archive_root()
    check_archive(root, fmt, sent, landed)

    # The encoding markers: text bodies as text, others base64 and marked so.
    for path in fmt.committed(root):
        with open_jsonl(path) as lines:
            for line in map(json.loads, lines):
                body = sent[line["properties"]["n"]].body
                try:
                    body.decode()
                    text = True
                except UnicodeDecodeError:
                    text = False
                assert ("body_encoding" in line) == (not text), f"{path.name}: {line!r:.200}"
                if not text:
                    assert line["body_encoding"] == "base64"
