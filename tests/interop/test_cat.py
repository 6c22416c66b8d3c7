"""`hubcap cat` against fastavro: Capture files that hubcap wrote from events the official SDK
sent (every codec), and a real Capture file from the service, print as one JSON line per
record holding exactly what fastavro reads from that record, in the stdout sink's encoding.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from pathlib import Path
from typing import Any

import fastavro
import pytest

pytest.register_assert_rewrite("hubcap_process")

from hubcap_process import (  # noqa: E402
    capture_fixture,
    committed_avro_files,
    first_mismatches,
    hubcap_config,
    hubcap_is_built,
    last_sequence_numbers,
    make_workload,
    send_workload,
)
from conftest import emulator_binary, hubcap_binary  # noqa: E402

pytest_plugins = ["hubcap_process"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

# Capture's SystemProperties that become the line's own fields.
LIFTED = {"x-opt-sequence-number", "x-opt-offset", "x-opt-enqueued-time", "x-opt-partition-key"}


def json_value(value: Any) -> Any:
    """A property value as the stdout sink encodes it: binary as {"base64": ...}."""
    if isinstance(value, bytes):
        return {"base64": base64.b64encode(value).decode()}
    return value


def enqueued_time(record: dict) -> str:
    ms = record["SystemProperties"].get("x-opt-enqueued-time")
    if ms is None:  # an older Capture file: the text form, to the second
        moment = dt.datetime.strptime(record["EnqueuedTimeUtc"], "%m/%d/%Y %I:%M:%S %p")
        ms = int(moment.replace(tzinfo=dt.timezone.utc).timestamp()) * 1000
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def expected_line(record: dict, partition_id: Any) -> dict:
    system = record["SystemProperties"]
    line = {
        "partition_id": partition_id,
        "sequence_number": record["SequenceNumber"],
        "offset": record["Offset"],
        "enqueued_time": enqueued_time(record),
        "partition_key": system.get("x-opt-partition-key"),
        "properties": {k: json_value(v) for k, v in record["Properties"].items()},
        "system_properties": {k: json_value(v) for k, v in system.items() if k not in LIFTED},
    }
    body = record["Body"]
    if body is None:
        line["body"] = None
    else:
        try:
            line["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            line["body"] = base64.b64encode(body).decode()
            line["body_encoding"] = "base64"
    return line


def cat(*args: str) -> list[dict]:
    result = subprocess.run([str(hubcap_binary()), "cat", *args], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def compare_file(path: Path, partition_id: Any) -> int:
    with open(path, "rb") as stream:
        records = list(fastavro.reader(stream))
    printed = cat(str(path))
    assert len(printed) == len(records), f"{path}: cat printed {len(printed)} lines for {len(records)} records"
    mismatches = [
        f"{path.name} record {i}: cat {line} != fastavro {expected_line(record, partition_id)}"
        for i, (line, record) in enumerate(zip(printed, records))
        if line != expected_line(record, partition_id)
    ]
    assert not mismatches, first_mismatches(mismatches)
    return len(records)


def test_a_real_capture_file_prints_what_fastavro_reads():
    assert compare_file(capture_fixture(), None) == 1


@pytest.mark.parametrize("codec", ["null", "deflate", "snappy", "zstd"])
def test_hubcaps_files_print_what_fastavro_reads(emulator, start_hubcap, tmp_path, codec):
    root = tmp_path / "capture"
    events = make_workload(600, prefix=f"cat {codec}")
    send_workload(emulator, events)
    last = last_sequence_numbers(emulator)
    config = hubcap_config(
        emulator,
        checkpoints=tmp_path / "checkpoints",
        sink={"type": "avro_file", "path": str(root), "max_window": "1s", "codec": codec},
    )
    hubcap = start_hubcap(config)
    hubcap.wait_for_checkpoints(tmp_path / "checkpoints", emulator, last)
    hubcap.terminate_cleanly()

    files = committed_avro_files(root)
    assert files, "no committed .avro file"
    total = 0
    for path in files:
        partition_id = path.relative_to(root).parts[2]  # {Namespace}/{EventHub}/{PartitionId}/...
        total += compare_file(path, partition_id)
    assert total == len(events)

    # --limit across files, and a field selection keeps the sink's field order.
    limited = cat("--limit", "3", "--fields", "body,sequence_number", *map(str, files))
    assert len(limited) == 3
    assert all(list(line) in (["sequence_number", "body"], ["sequence_number", "body", "body_encoding"]) for line in limited)
