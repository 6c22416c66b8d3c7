"""hubcap with the `stdout` sink, fed by the unmodified official SDK through the emulator.

Every event carries its number in property "n"; the SDK's own consumer, reading the hub from the
start, is the reference for where each event landed (partition, sequence number, offset, enqueued
time), and what the test sent is the reference for everything else.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
from typing import Any

import pytest

pytest.register_assert_rewrite("hubcap_process")

from hubcap_process import (  # noqa: E402
    Landed,
    SentEvent,
    b64,
    first_mismatches,
    hubcap_config,
    hubcap_is_built,
    make_workload,
    read_checkpoints,
    read_ownerships,
    read_with_sdk,
    rfc3339_ms,
    send_workload,
    typed,
)
from conftest import emulator_binary, hubcap_binary  # noqa: E402

pytest_plugins = ["hubcap_process"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

PARTITIONS = ["0", "1", "2", "3"]


def stdout_config(emulator, tmp_path, **sink: Any) -> str:
    return hubcap_config(
        emulator,
        checkpoints=tmp_path / "checkpoints",
        sink={"type": "stdout", "max_window": "1s", **sink},
    )


def json_property(value: Any) -> Any:
    """A property value as the stdout sink documents it: numbers, strings and booleans as JSON,
    binary as {"base64": ...}, timestamps as RFC 3339 strings (compared as instants)."""
    if isinstance(value, bytes):
        return {"base64": b64(value)}
    if isinstance(value, dt.datetime):
        return ("instant", value)
    return value


def compare_properties(sent: SentEvent, line: dict) -> list[str]:
    got = line.get("properties")
    if not isinstance(got, dict):
        return [f"properties is {got!r}"]
    problems = []
    if set(got) != set(sent.properties):
        problems.append(f"property keys {sorted(got)} != sent {sorted(sent.properties)}")
    for key, value in sent.properties.items():
        if key not in got:
            continue
        if isinstance(value, dt.datetime):
            text = got[key]
            try:
                instant = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            except (AttributeError, ValueError):
                problems.append(f"timestamp property {key!r} is {text!r}, not an RFC 3339 string")
                continue
            if instant != value or not text.endswith("Z"):
                problems.append(f"timestamp property {key!r} is {text!r}, sent {value.isoformat()}")
        elif typed(got[key]) != typed(json_property(value)):
            problems.append(f"property {key!r} is {got[key]!r}, sent {value!r} (expected {json_property(value)!r})")
    return problems


def compare_body(sent: SentEvent, line: dict) -> list[str]:
    try:
        text = sent.body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        if line.get("body_encoding") is not None:
            return [f"UTF-8 body marked {line.get('body_encoding')!r}"]
        if line.get("body") != text:
            return [f"body {line.get('body')!r} != sent {text!r}"]
        return []
    if line.get("body_encoding") != "base64":
        return [f"non-UTF-8 body not marked base64: {line.get('body')!r}, body_encoding={line.get('body_encoding')!r}"]
    try:
        body = base64.b64decode(line.get("body"), validate=True)
    except (TypeError, ValueError) as err:
        return [f"body {line.get('body')!r} is not base64: {err}"]
    return [] if body == sent.body else [f"body {body!r} != sent {sent.body!r}"]


def check_lines_against(
    lines: list[dict], sent: dict[int, SentEvent], landed: dict[int, Landed]
) -> None:
    """Every sent event in exactly one line, every field as sent and where the SDK found it."""
    positions = collections.Counter((line.get("partition_id"), line.get("sequence_number")) for line in lines)
    repeated = {position: count for position, count in positions.items() if count > 1}
    assert not repeated, f"{len(repeated)} (partition, sequence number) pairs printed more than once: {list(repeated.items())[:10]}"

    numbers = collections.Counter(line.get("properties", {}).get("n") for line in lines)
    assert set(numbers) == set(sent), (
        f"missing event numbers: {sorted(set(sent) - set(numbers))[:20]}; "
        f"unexpected: {sorted(map(repr, set(numbers) - set(sent)))[:20]}"
    )
    assert len(lines) == len(sent), f"{len(lines)} lines for {len(sent)} events"

    mismatches: list[str] = []
    for line in lines:
        number = line["properties"]["n"]
        event, where = sent[number], landed[number]
        expected = {
            "partition_id": where.partition_id,
            "sequence_number": where.sequence_number,
            "offset": where.offset,
            "enqueued_time": rfc3339_ms(where.enqueued_time),
            "partition_key": event.partition_key,
        }
        problems = [
            f"{name} {line.get(name)!r} != {value!r}"
            for name, value in expected.items()
            if typed(line.get(name)) != typed(value)
        ]
        if event.partition_id is not None and line.get("partition_id") != event.partition_id:
            problems.append(f"sent to partition {event.partition_id}, printed for {line.get('partition_id')!r}")
        if where.partition_key != event.partition_key:
            problems.append(f"the SDK consumer reports partition key {where.partition_key!r}, sent {event.partition_key!r}")
        problems += compare_body(event, line)
        problems += compare_properties(event, line)
        if not isinstance(line.get("system_properties"), dict):
            problems.append(f"system_properties is {line.get('system_properties')!r}")
        if problems:
            mismatches.append(f"event {number} ({event.route}): " + "; ".join(problems))
    assert not mismatches, first_mismatches(mismatches)


def check_partition_order(lines: list[dict], first_sequence_number: dict[str, int]) -> None:
    """Per partition, lines come in sequence order, consecutive from `first_sequence_number`."""
    by_partition: dict[str, list[int]] = collections.defaultdict(list)
    for line in lines:
        by_partition[line["partition_id"]].append(line["sequence_number"])
    for partition_id, sequence_numbers in sorted(by_partition.items()):
        start = first_sequence_number.get(partition_id, 0)
        expected = list(range(start, start + len(sequence_numbers)))
        assert sequence_numbers == expected, (
            f"partition {partition_id}: sequence numbers printed in the order "
            f"{sequence_numbers[:10]}..., expected {expected[:10]}... (consecutive, in order)"
        )


def test_twenty_thousand_events_over_four_partitions_come_out_exactly_once(reference_emulator, start_hubcap, tmp_path):
    emulator = reference_emulator
    events = make_workload(20_000)
    sent = {event.number: event for event in events}
    send_workload(emulator, events)

    hubcap = start_hubcap(stdout_config(emulator, tmp_path))
    landed = read_with_sdk(emulator, set(sent))
    hubcap.wait_for_lines(len(events), timeout=120)
    hubcap.terminate_cleanly()

    lines = hubcap.json_lines()
    check_lines_against(lines, sent, landed)
    check_partition_order(lines, {})
    per_partition = collections.Counter(line["partition_id"] for line in lines)
    assert set(per_partition) == set(PARTITIONS), f"events per partition: {dict(per_partition)}"
    keys = collections.defaultdict(set)
    for line in lines:
        if line["partition_key"] is not None:
            keys[line["partition_key"]].add(line["partition_id"])
    split = {key: sorted(partitions) for key, partitions in keys.items() if len(partitions) > 1}
    assert not split, f"a partition key's events landed in several partitions: {split}"


def test_stop_and_restart_resumes_exactly_after_the_checkpoint(reference_emulator, start_hubcap, tmp_path):
    emulator = reference_emulator
    first = make_workload(1_500, prefix="before")
    second = make_workload(1_500, start=1_500, prefix="after")
    config = stdout_config(emulator, tmp_path)
    checkpoints = tmp_path / "checkpoints"

    send_workload(emulator, first)
    before = start_hubcap(config)
    before.wait_for_lines(len(first))

    def owners() -> dict[str, str]:
        return {pid: record.get("ownerid") for pid, record in read_ownerships(checkpoints, emulator).items()}

    before.wait_for(lambda: all(owners().get(pid) for pid in PARTITIONS), lambda: f"every partition owned: {owners()}")
    before.terminate_cleanly()
    first_lines = before.json_lines()
    assert sorted(line["properties"]["n"] for line in first_lines) == [e.number for e in first]

    last_printed = {}
    for line in first_lines:
        last_printed[line["partition_id"]] = max(last_printed.get(line["partition_id"], -1), line["sequence_number"])
    checkpoints_after_stop = read_checkpoints(checkpoints, emulator)
    assert {pid: record.get("sequencenumber") for pid, record in checkpoints_after_stop.items()} == last_printed, (
        f"after the drain every partition is checkpointed at its last printed event: "
        f"checkpoints {checkpoints_after_stop}, last printed {last_printed}"
    )
    assert owners() == {pid: "" for pid in PARTITIONS}, f"ownership after the drain (expected released): {owners()}"

    send_workload(emulator, second)
    after = start_hubcap(config)
    after.wait_for_lines(len(second))
    after.terminate_cleanly()

    second_lines = after.json_lines()
    sent = {event.number: event for event in second}
    landed = read_with_sdk(emulator, set(sent))
    check_lines_against(second_lines, sent, landed)
    check_partition_order(second_lines, {pid: seq + 1 for pid, seq in last_printed.items()})
