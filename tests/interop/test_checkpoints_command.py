"""`hubcap checkpoints set --to time:T` and the unmodified official Python processor
(EventHubConsumerClient with BlobCheckpointStore 1.2.0): the processor resumes at the first
event enqueued at or after T, also where that event is the first retained one (the checkpoint
is then offset "-1" with the sequence number before it). hubcap's own side of the same
scenario is tests/checkpoints_command.rs.

Why the processor honours it: azure-eventhub 5.15.1 starts a partition that has a checkpoint
after the checkpoint's offset alone (`x-opt-offset > '<offset>'`, exclusive), so hubcap writes
the offset of the event before the chosen one, or the start-of-stream offset "-1" when that
event expired. The processor here falls back to "@latest" without a checkpoint, so one that
ignored hubcap's records would read nothing at all.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import time

import pytest

pytest.register_assert_rewrite("balancing_support", "hubcap_process")

from balancing_support import (  # noqa: E402
    HUB,
    BlobRecords,
    SdkProcessor,
    balancing_config,
    hub_last_sequence_numbers,
    partition_ids,
    unique_container,
)
from conftest import emulator_binary, hubcap_binary  # noqa: E402
from hubcap_process import hubcap_is_built, rfc3339_ms  # noqa: E402

pytest_plugins = ["hubcap_process"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

PARTITIONS = partition_ids(2)
COMMAND_TIMEOUT_S = 60


def preload(emulator, partition: str, count: int) -> None:
    emulator.admin("POST", "/preload", {"hub": HUB, "partitions": [partition], "events_per_partition": count, "size": 64})


def partition_properties(emulator, partition: str) -> dict:
    return emulator.admin("GET", f"/hubs/{HUB}/partitions/{partition}")


def test_python_processor_resumes_at_the_first_event_enqueued_at_or_after_a_set_time(
    start_emulator, azurite, tmp_path
):
    # Partition 0 keeps everything; partition 1 keeps 30 events, so after 10 + 30 its first
    # retained event is the first one enqueued at or after the time.
    emulator = start_emulator(hubs={HUB: len(PARTITIONS)}, retention_events=30)
    for pid in PARTITIONS:
        preload(emulator, pid, 10)
    before = max(int(partition_properties(emulator, pid)["last_enqueued_time_utc_ms"]) for pid in PARTITIONS)
    moment = before + 1
    deadline = time.monotonic() + 2
    while time.time() * 1000 <= before + 1:  # the next append is enqueued after the moment
        assert time.monotonic() < deadline, "the clock does not move"
        time.sleep(0.001)
    preload(emulator, "0", 10)
    preload(emulator, "1", 30)
    assert int(partition_properties(emulator, "1")["begin_sequence_number"]) == 10

    container = unique_container("ckpt-set")
    records = BlobRecords(azurite, container, emulator)
    config = tmp_path / "hubcap.toml"
    config.write_text(balancing_config(emulator, azurite, container, "hubcap-a"))
    at = dt.datetime.fromtimestamp(moment / 1000, tz=dt.timezone.utc)
    ran = subprocess.run(
        [str(hubcap_binary()), "checkpoints", "set", "--config", str(config), "--all", "--to", f"time:{rfc3339_ms(at)}"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert ran.returncode == 0, f"checkpoints set exited {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    checkpoints = records.checkpoints()
    assert (checkpoints["0"].sequence_number, checkpoints["1"].sequence_number) == (9, 9), records.describe()
    assert checkpoints["1"].offset == "-1", records.describe()
    assert {pid: r.owner_id for pid, r in records.ownerships().items()} == {"0": "", "1": ""}, records.describe()

    last = hub_last_sequence_numbers(emulator, PARTITIONS)
    processor = SdkProcessor(
        emulator,
        azurite,
        container,
        checkpoint=lambda event: False,
        starting_position="@latest",
        load_balancing_interval=1.0,
    ).start()
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
    assert processor.first_sequence_numbers() == {"0": 10, "1": 10}, (
        f"the Python processor's first events {processor.first_sequence_numbers()} are not the first "
        f"enqueued at or after the time (10 in both partitions; in partition 1 the first retained)"
    )
    for pid in PARTITIONS:
        read = sorted(s for p, s in processor.delivered_counts().elements() if p == pid)
        assert read == list(range(10, last[pid] + 1)), f"partition {pid}: the Python processor read {read}"
