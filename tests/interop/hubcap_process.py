"""hubcap as the interop tests run it: a real `hubcap run` process against the emulator, the events
the official SDK sends it, and the Capture Avro files it writes.

- `start_hubcap` (a fixture, registered by `pytest_plugins = ["hubcap_process"]` in a test module)
  starts `$HUBCAP_BIN run --config FILE` with a config written to the test's tmp_path. stdout is
  read line by line by a thread (the stdout sink's JSON lines), stderr goes to a file whose tail is
  attached to the report of a failed test.
- Every wait polls a condition against a deadline and fails at once, with the stderr tail, if
  hubcap exits while being waited on.
- `HubcapProcess.terminate()` is the graceful stop the contract promises: SIGTERM, a bounded
  wait, then SIGKILL and a failed test.
- The workload helpers send numbered events with `EventHubProducerClient` (property "n" is the
  event's number) and read them back with `EventHubConsumerClient`, which is the reference for
  where each event landed (partition, sequence number, offset, enqueued time).
- The Avro helpers list committed `.avro` files (never the staging directory), read them with
  fastavro, and check the container framing block by block.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import itertools
import json
import re
import os
import signal
import struct
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import fastavro
import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

from conftest import REPO_ROOT, Emulator, hubcap_binary, start_process, tail

HUBCAP_STOP_TIMEOUT_S = 30.0
HUBCAP_STDERR_TAIL_LINES = 60
STAGING_DIR = ".hubcap-staging"
SDK_RETRY_OPTIONS = {"retry_total": 5, "retry_backoff_factor": 0.3}
# The SDK consumer that tells where events landed reads in its own consumer group: hubcap's
# receivers (epoch 0) would refuse a receiver without an epoch in the same one.
REFERENCE_CONSUMER_GROUP = "sdk-reference"

CAPTURE_FIXTURE_CANDIDATES = (
    REPO_ROOT / "tests" / "fixtures" / "capture-archive-2016.avro",
    REPO_ROOT.parent / "shared" / "reference" / "fixtures" / "capture-archive-2016.avro",
)


# --------------------------------------------------------------------------------------------
# configuration


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (str, Path)):
        # A JSON string is a valid TOML basic string (same escapes, \uXXXX included).
        return json.dumps(str(value))
    raise TypeError(f"no TOML form for {value!r}")


def toml_text(sections: Mapping[str, Mapping[str, Any]]) -> str:
    lines: list[str] = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in keys.items() if value is not None]
        lines.append("")
    return "\n".join(lines)


def hubcap_config(
    emulator: Emulator,
    *,
    checkpoints: Optional[Path] = None,
    checkpoint_store: Optional[Mapping[str, Any]] = None,
    sink: Mapping[str, Any],
    eventhub: Optional[Mapping[str, Any]] = None,
    load_balancing: Optional[Mapping[str, Any]] = None,
    http_listen: str = "off",
    log: Optional[Mapping[str, Any]] = None,
) -> str:
    """A config for hub1 of `emulator`: quick balancing, the given sink, and the `file`
    checkpoint store in `checkpoints` (or the `checkpoint_store` section given).
    `eventhub`, `load_balancing` and `log` add or override keys of those sections."""
    if (checkpoints is None) == (checkpoint_store is None):
        raise ValueError("give exactly one of checkpoints and checkpoint_store")
    store = dict(checkpoint_store) if checkpoint_store is not None else {"type": "file", "path": str(checkpoints)}
    return toml_text(
        {
            "eventhub": {
                "connection_string": emulator.connection_string(),
                "name": "hub1",
                "start_position": "earliest",
                "retry_min_backoff": "50ms",
                "retry_max_backoff": "1s",
                # A partition can stall when a window closes on time (see
                # test_a_window_closing_on_time_never_stalls_a_partition); the watchdog recycles
                # a stalled receiver after this long, so other tests are not held up for the
                # default 2 minutes. Recycling re-reads from the last appended event: the tests'
                # exactly-once checks still hold it to account.
                "stuck_partition_timeout": "10s",
                **(eventhub or {}),
            },
            "checkpoint_store": store,
            "load_balancing": {"update_interval": "1s", "ownership_expiration": "3s", **(load_balancing or {})},
            "sink": dict(sink),
            "http": {"listen": http_listen},
            "log": {"level": "info", **(log or {})},
        }
    )


def checkpoint_dir(checkpoints: Path, emulator: Emulator, hub: str = "hub1", consumer_group: str = "$default") -> Path:
    """Where the file store keeps the checkpoints of hub1 on this emulator (lower-case names)."""
    return checkpoints / f"{emulator.amqp_host}:{emulator.amqp_port}" / hub / consumer_group / "checkpoint"


def ownership_dir(checkpoints: Path, emulator: Emulator, hub: str = "hub1", consumer_group: str = "$default") -> Path:
    return checkpoint_dir(checkpoints, emulator, hub, consumer_group).parent / "ownership"


def _record_files(directory: Path) -> list[Path]:
    """The records of a file-store directory: not its lock file, nor the temp files
    (`<name>.tmp-<pid>-<random>`) that a write renames over a record."""
    return [
        path
        for path in directory.iterdir()
        if path.is_file() and not path.name.startswith(".") and ".tmp-" not in path.name
    ]


def read_checkpoints(checkpoints: Path, emulator: Emulator, **scope: str) -> dict[str, dict]:
    """partition id -> {"offset", "sequencenumber"} for every checkpoint record on disk."""
    directory = checkpoint_dir(checkpoints, emulator, **scope)
    if not directory.is_dir():
        return {}
    return {path.name: json.loads(path.read_text()) for path in _record_files(directory)}


def read_ownerships(checkpoints: Path, emulator: Emulator, **scope: str) -> dict[str, dict]:
    directory = ownership_dir(checkpoints, emulator, **scope)
    if not directory.is_dir():
        return {}
    return {path.name: json.loads(path.read_text()) for path in _record_files(directory)}


def last_sequence_numbers(emulator: Emulator, partitions: Optional[Iterable[str]] = None) -> dict[str, int]:
    """partition id -> last enqueued sequence number, for the partitions that hold events
    (from the emulator's admin API)."""
    last = {}
    if partitions is None:
        partitions = [str(index) for index in range(emulator.hubs["hub1"])]
    for partition_id in partitions:
        properties = emulator.admin("GET", f"/hubs/hub1/partitions/{partition_id}")
        if not properties["is_empty"]:
            last[partition_id] = properties["last_enqueued_sequence_number"]
    return last


def checkpoints_reached(checkpoints: Path, emulator: Emulator, targets: Mapping[str, int], **scope: str) -> bool:
    records = read_checkpoints(checkpoints, emulator, **scope)
    return all(
        (records.get(pid) or {}).get("sequencenumber") is not None and records[pid]["sequencenumber"] >= target
        for pid, target in targets.items()
    )


# --------------------------------------------------------------------------------------------
# the process


class HubcapExited(AssertionError):
    pass


class HubcapProcess:
    """One running `hubcap run`, its stdout lines and its stderr file."""

    def __init__(self, name: str, config_path: Path, stderr_path: Path) -> None:
        self.name = name
        self.config_path = config_path
        self.stderr_path = stderr_path
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        with open(stderr_path, "wb") as stderr_file:
            self.process = start_process(
                [str(hubcap_binary()), "run", "--config", str(config_path)],
                stdout=subprocess.PIPE,
                stderr=stderr_file,
            )
        self._reader = threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read_stdout(self) -> None:
        for raw in iter(self.process.stdout.readline, b""):
            with self._lines_lock:
                self._lines.append(raw.decode("utf-8", errors="replace"))
        self.process.stdout.close()

    # ---- output

    def lines(self) -> list[str]:
        with self._lines_lock:
            return list(self._lines)

    def line_count(self) -> int:
        with self._lines_lock:
            return len(self._lines)

    def json_lines(self) -> list[dict]:
        decoded = []
        for number, line in enumerate(self.lines(), 1):
            assert line.endswith("\n"), f"{self.name}: stdout line {number} is not terminated: {line[:200]!r}"
            try:
                decoded.append(json.loads(line))
            except ValueError as err:
                raise AssertionError(f"{self.name}: stdout line {number} is not JSON ({err}): {line[:300]!r}")
        return decoded

    def stderr_tail(self, lines: int = HUBCAP_STDERR_TAIL_LINES) -> str:
        return tail(self.stderr_path, lines)

    def describe(self) -> str:
        return f"{self.name} (pid {self.pid}) stderr, last lines ({self.stderr_path}):\n{self.stderr_tail()}"

    # ---- waiting

    def wait_for(
        self,
        condition: Callable[[], bool],
        what: str | Callable[[], str],
        timeout: float = 60.0,
        interval: float = 0.05,
    ) -> None:
        """Polls `condition` until true; fails on the deadline or as soon as hubcap exits.

        `what` (text, or a function giving it at the time of failure) names the condition."""
        deadline = time.monotonic() + timeout
        while not condition():
            code = self.process.poll()
            if code is not None:
                what_text = what() if callable(what) else what
                raise HubcapExited(f"{self.name} exited with code {code} while waiting for {what_text}\n{self.describe()}")
            if time.monotonic() >= deadline:
                what_text = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what_text}\n{self.describe()}")
            time.sleep(interval)

    def wait_for_checkpoints(
        self, checkpoints: Path, emulator: Emulator, targets: Mapping[str, int], timeout: float = 60.0
    ) -> None:
        """Waits until every partition in `targets` is checkpointed at or past its target
        sequence number: everything up to there is committed in the sink."""
        self.wait_for(
            lambda: checkpoints_reached(checkpoints, emulator, targets),
            lambda: f"checkpoints at {dict(targets)} (have {read_checkpoints(checkpoints, emulator)})",
            timeout,
        )

    def wait_for_lines(self, count: int, timeout: float = 60.0) -> None:
        self.wait_for(
            lambda: self.line_count() >= count,
            lambda: f"{count} stdout lines from {self.name} (have {self.line_count()})",
            timeout,
        )

    # ---- stopping

    def terminate(self, timeout: float = HUBCAP_STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait up to `timeout` for the drain; SIGKILL and fail if it does not exit.

        Returns the exit code once stdout is read to its end.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
                self._reader.join(timeout=10)
                raise AssertionError(
                    f"{self.name} did not exit within {timeout:.0f} s of SIGTERM; killed\n{self.describe()}"
                ) from None
        self._reader.join(timeout=10)
        assert not self._reader.is_alive(), f"{self.name}: stdout not closed after exit"
        return self.process.returncode

    def terminate_cleanly(self, timeout: float = HUBCAP_STOP_TIMEOUT_S) -> None:
        code = self.terminate(timeout)
        assert code == 0, f"{self.name} exited with code {code} after SIGTERM, expected 0\n{self.describe()}"

    def kill(self) -> None:
        """SIGKILL by PID, as `kill -9` does: no drain, no checkpoint, no release."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)


_STARTED_HUBCAPS = pytest.StashKey[list]()


@pytest.fixture
def start_hubcap(request, tmp_path) -> Callable[..., HubcapProcess]:
    """A factory: start_hubcap(config_text) -> HubcapProcess. Every process it started is killed at
    teardown if still running; the stderr tail of each is attached to a failed test's report."""
    started: list[HubcapProcess] = []
    request.node.stash[_STARTED_HUBCAPS] = started

    def start(config_text: str) -> HubcapProcess:
        index = len(started)
        config_path = tmp_path / f"hubcap-{index}.toml"
        config_path.write_text(config_text)
        hubcap = HubcapProcess(f"hubcap #{index}", config_path, tmp_path / f"hubcap-{index}.stderr.log")
        started.append(hubcap)
        return hubcap

    yield start

    for hubcap in started:
        if hubcap.process.poll() is None:
            hubcap.kill()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for hubcap in item.stash.get(_STARTED_HUBCAPS, []):
            report.sections.append(
                (
                    f"{hubcap.name} (pid {hubcap.pid}) stderr, last {HUBCAP_STDERR_TAIL_LINES} lines "
                    f"({hubcap.stderr_path})",
                    hubcap.stderr_tail(),
                )
            )
    return report


@pytest.fixture
def reference_emulator(start_emulator) -> Emulator:
    """hub1 with 4 partitions, and the consumer group the SDK reference reader uses."""
    return start_emulator(consumer_groups=[REFERENCE_CONSUMER_GROUP])


def hubcap_is_built() -> bool:
    return hubcap_binary().is_file()


# --------------------------------------------------------------------------------------------
# the workload: numbered events sent with the official SDK


ROUTES = ("hub", "key", "partition")


@dataclass
class SentEvent:
    """One event as the test sent it. Property "n" (its number) identifies it everywhere."""

    number: int
    body: bytes
    properties: dict[str, Any]
    partition_key: Optional[str] = None
    partition_id: Optional[str] = None

    @property
    def route(self) -> str:
        if self.partition_key is not None:
            return "key"
        if self.partition_id is not None:
            return "partition"
        return "hub"


def event_body(number: int, prefix: str, padding: int = 0) -> bytes:
    """UTF-8 text for most events; one in five is binary that is not valid UTF-8, and one in
    97 is empty."""
    if number % 97 == 13:
        return b""
    if number % 5 == 3:
        # 0xff never occurs in UTF-8; the rest covers every byte value over the run.
        return b"\xff\xfe" + number.to_bytes(4, "big") + bytes((number + k) % 256 for k in range(8 + padding))
    return (f"{prefix} #{number} — ünïcødé ✓ " + "x" * padding).encode()


def event_properties(number: int) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "n": number,
        "text": f"value {number} ✓",
        "negative": -number - 1,
        "ratio": number / 8 + 0.1,
        "flag": number % 2 == 0,
        "raw": b"\x00\x01\xff" + number.to_bytes(3, "big"),
    }
    if number % 7 == 0:
        properties["big"] = 2_000_000_000 - number  # near the top of int32, the SDK's integer type
    if number % 11 == 0:
        properties["when"] = dt.datetime(2024, 5, 1, 12, 30, 15, (number % 1000) * 1000, tzinfo=dt.timezone.utc)
    return properties


def make_workload(count: int, *, start: int = 0, prefix: str = "event", partitions: int = 4, padding: int = 0) -> list[SentEvent]:
    """`count` events numbered from `start`, a third each to the hub (round robin), with a
    partition key (ten keys), and to an explicit partition id."""
    events = []
    for number in range(start, start + count):
        event = SentEvent(number, event_body(number, prefix, padding), event_properties(number))
        route = ROUTES[(number // 250) % 3]  # runs of 250, so batches stay large
        if route == "key":
            event.partition_key = f"key-{(number // 250) % 10}"
        elif route == "partition":
            event.partition_id = str((number // 750) % partitions)
        events.append(event)
    return events


def producer_client(emulator: Emulator) -> EventHubProducerClient:
    return EventHubProducerClient.from_connection_string(
        emulator.connection_string(), eventhub_name="hub1", **SDK_RETRY_OPTIONS
    )


def send_workload(emulator: Emulator, events: Iterable[SentEvent], producer: Optional[EventHubProducerClient] = None) -> None:
    """Sends in batches as large as the link allows; consecutive events with the same route share
    batches, in order."""
    own = producer is None
    producer = producer or producer_client(emulator)
    try:
        for (partition_key, partition_id), group in itertools.groupby(
            events, key=lambda e: (e.partition_key, e.partition_id)
        ):
            options = {}
            if partition_key is not None:
                options["partition_key"] = partition_key
            if partition_id is not None:
                options["partition_id"] = partition_id
            batch = producer.create_batch(**options)
            for sent in group:
                event = EventData(sent.body)
                event.properties = dict(sent.properties)
                try:
                    batch.add(event)
                except ValueError:
                    producer.send_batch(batch)
                    batch = producer.create_batch(**options)
                    batch.add(event)
            if len(batch):
                producer.send_batch(batch)
    finally:
        if own:
            producer.close()


@dataclass(frozen=True)
class Landed:
    """Where the SDK consumer found an event."""

    partition_id: str
    sequence_number: int
    offset: str
    enqueued_time: dt.datetime
    partition_key: Optional[str]


def read_with_sdk(
    emulator: Emulator, numbers: set[int], timeout: float = 120.0, consumer_group: str = REFERENCE_CONSUMER_GROUP
) -> dict[int, Landed]:
    """Reads hub1 from the start with EventHubConsumerClient until every event numbered in
    `numbers` is seen; returns number -> where it landed. Fails on a number seen twice.

    The emulator must have `consumer_group` (see `reference_emulator`)."""
    landed: dict[int, Landed] = {}
    duplicates: list[tuple[int, Landed]] = []
    lock = threading.Lock()

    def on_batch(context, events: list[EventData]) -> None:
        with lock:
            for event in events:
                number = event.properties[b"n"]
                key = event.partition_key
                where = Landed(
                    context.partition_id,
                    event.sequence_number,
                    str(event.offset),
                    event.enqueued_time,
                    key.decode() if isinstance(key, bytes) else key,
                )
                if number in landed:
                    duplicates.append((number, where))
                landed[number] = where

    client = EventHubConsumerClient.from_connection_string(
        emulator.connection_string(), consumer_group=consumer_group, eventhub_name="hub1", **SDK_RETRY_OPTIONS
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            client.receive_batch(
                on_event_batch=on_batch, starting_position="-1", max_batch_size=1000, prefetch=1000, max_wait_time=1
            )
        except BaseException as err:
            failure.append(err)

    thread = threading.Thread(target=run, name="sdk-reader", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while True:
            with lock:
                missing = numbers - landed.keys()
            if not missing:
                break
            assert not failure, f"EventHubConsumerClient.receive_batch raised {failure[0]!r}"
            assert time.monotonic() < deadline, (
                f"the SDK consumer saw {len(numbers) - len(missing)} of {len(numbers)} events in {timeout:.0f} s"
            )
            time.sleep(0.05)
    finally:
        client.close()
        thread.join(timeout=30)
    assert not duplicates, f"the SDK consumer saw events twice: {duplicates[:5]}"
    return {number: landed[number] for number in numbers}


# --------------------------------------------------------------------------------------------
# Capture Avro files


def committed_avro_files(root: Path) -> list[Path]:
    """Every `.avro` file under `root`, never one in the staging directory."""
    if not root.is_dir():
        return []
    return sorted(
        path for path in root.rglob("*.avro") if path.is_file() and STAGING_DIR not in path.relative_to(root).parts
    )


def staging_files(root: Path) -> list[Path]:
    staging = root / STAGING_DIR
    if not staging.is_dir():
        return []
    return sorted(path for path in staging.rglob("*") if path.is_file())


def _read_long(stream: io.BufferedIOBase) -> int:
    """An Avro zig-zag varint."""
    shift = 0
    accumulated = 0
    while True:
        byte = stream.read(1)
        if not byte:
            raise EOFError("end of file inside a varint")
        accumulated |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return (accumulated >> 1) ^ -(accumulated & 1)
        shift += 7


def _read_exact(stream: io.BufferedIOBase, length: int, what: str) -> bytes:
    data = stream.read(length)
    if len(data) != length:
        raise EOFError(f"end of file inside {what}: wanted {length} bytes, got {len(data)}")
    return data


@dataclass
class AvroContainer:
    """An Avro Object Container File taken apart by hand, so framing faults cannot hide behind a
    reader that is lenient."""

    metadata: dict[str, bytes]
    sync_marker: bytes
    blocks: list[tuple[int, bytes]] = field(default_factory=list)  # (record count, block payload as stored)


def parse_container(path: Path) -> AvroContainer:
    """Header and blocks; raises if the file is not complete: every block has its declared size
    and ends with the header's sync marker, and nothing follows the last one."""
    with open(path, "rb") as stream:
        magic = stream.read(4)
        if magic != b"Obj\x01":
            raise ValueError(f"{path}: not an Avro container (magic {magic!r})")
        metadata: dict[str, bytes] = {}
        while True:
            count = _read_long(stream)
            if count == 0:
                break
            if count < 0:
                count = -count
                _read_long(stream)  # block byte size
            for _ in range(count):
                key = _read_exact(stream, _read_long(stream), "a metadata key").decode()
                metadata[key] = _read_exact(stream, _read_long(stream), "a metadata value")
        sync_marker = _read_exact(stream, 16, "the header sync marker")
        container = AvroContainer(metadata, sync_marker)
        while stream.peek(1):
            records = _read_long(stream)
            size = _read_long(stream)
            payload = _read_exact(stream, size, f"block {len(container.blocks)}")
            marker = _read_exact(stream, 16, f"the sync marker of block {len(container.blocks)}")
            if marker != sync_marker:
                raise ValueError(f"{path}: block {len(container.blocks)} ends with a wrong sync marker")
            container.blocks.append((records, payload))
    return container


def check_snappy_blocks(container: AvroContainer) -> None:
    """Avro's snappy codec: raw snappy, then the big-endian CRC-32 of the uncompressed block
    (fastavro skips the check)."""
    from cramjam import snappy

    for index, (_, payload) in enumerate(container.blocks):
        data = bytes(snappy.decompress_raw(payload[:-4]))
        (crc,) = struct.unpack(">I", payload[-4:])
        assert crc == zlib.crc32(data), f"snappy block {index}: CRC {crc:#x} != {zlib.crc32(data):#x}"


@dataclass
class AvroFile:
    path: Path
    metadata: dict[str, bytes]
    writer_schema: Any
    records: list[dict]


def read_avro(path: Path) -> AvroFile:
    """Checks the framing by hand, then reads every record with fastavro."""
    container = parse_container(path)
    with open(path, "rb") as stream:
        reader = fastavro.reader(stream)
        records = list(reader)
        writer_schema = reader.writer_schema
    declared = sum(count for count, _ in container.blocks)
    assert len(records) == declared, f"{path}: fastavro read {len(records)} records, blocks declare {declared}"
    return AvroFile(path, container.metadata, writer_schema, records)


def capture_fixture() -> Path:
    for candidate in CAPTURE_FIXTURE_CANDIDATES:
        if candidate.is_file():
            return candidate
    pytest.fail(f"the Capture fixture file is in none of {[str(c) for c in CAPTURE_FIXTURE_CANDIDATES]}")


def capture_time_text(moment: dt.datetime) -> str:
    """.NET's `M/d/yyyy h:mm:ss tt` in UTC, as Capture writes EnqueuedTimeUtc."""
    moment = moment.astimezone(dt.timezone.utc)
    hour = moment.hour % 12 or 12
    return (
        f"{moment.month}/{moment.day}/{moment.year} {hour}:{moment.minute:02d}:{moment.second:02d} "
        f"{'AM' if moment.hour < 12 else 'PM'}"
    )


def rfc3339_ms(moment: dt.datetime) -> str:
    moment = moment.astimezone(dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def typed(value: Any) -> Any:
    """`value` with the type of every leaf attached, so True never equals 1 nor 1.0 equal 1."""
    if isinstance(value, dict):
        return {key: typed(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def first_mismatches(mismatches: list[str], shown: int = 10) -> str:
    more = f"\n... and {len(mismatches) - shown} more" if len(mismatches) > shown else ""
    return f"{len(mismatches)} mismatches:\n" + "\n".join(mismatches[:shown]) + more


# --------------------------------------------------------------------------------------------
# event values as the Capture writer maps them (src/sink/avro.rs)


def avro_property(value: Any) -> Any:
    """A property value as src/sink/avro.rs documents it: integers long, floats double, strings
    and binary as they are, booleans "true"/"false", timestamps milliseconds since the epoch."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return round(value.timestamp() * 1000)
    return value


def epoch_ms(moment: dt.datetime) -> int:
    return round(moment.timestamp() * 1000)


CAPTURE_TIME = re.compile(r"(1[0-2]|[1-9])/([1-9]|[12]\d|3[01])/\d{4} (1[0-2]|[1-9]):[0-5]\d:[0-5]\d (AM|PM)")


def record_problems(record: dict, sent: SentEvent, where: Landed, partition_id: str) -> list[str]:
    """Every way a Capture record differs from the event sent (`sent`) and where the SDK's own
    consumer found it (`where`): partition, sequence number, offset, enqueued time, system
    properties, application properties (values, types and order) and body."""
    problems = []
    if partition_id != where.partition_id:
        problems.append(f"in an archive of partition {partition_id}, the SDK found it in {where.partition_id}")
    if typed(record["SequenceNumber"]) != typed(where.sequence_number):
        problems.append(f"SequenceNumber {record['SequenceNumber']!r} != {where.sequence_number}")
    if typed(record["Offset"]) != typed(where.offset):
        problems.append(f"Offset {record['Offset']!r} != {where.offset!r}")
    enqueued = record["EnqueuedTimeUtc"]
    if not (isinstance(enqueued, str) and CAPTURE_TIME.fullmatch(enqueued)):
        problems.append(f"EnqueuedTimeUtc {enqueued!r} is not in M/d/yyyy h:mm:ss tt form")
    elif enqueued != capture_time_text(where.enqueued_time):
        problems.append(f"EnqueuedTimeUtc {enqueued!r} != {capture_time_text(where.enqueued_time)!r}")

    system = record["SystemProperties"]
    expected_system = {
        "x-opt-sequence-number": where.sequence_number,
        "x-opt-offset": where.offset,
        "x-opt-enqueued-time": epoch_ms(where.enqueued_time),
    }
    if sent.partition_key is not None:
        expected_system["x-opt-partition-key"] = sent.partition_key
    for key, value in expected_system.items():
        if typed(system.get(key)) != typed(value):
            problems.append(f"SystemProperties[{key!r}] is {system.get(key)!r}, expected {value!r}")
    if sent.partition_key is None and "x-opt-partition-key" in system:
        problems.append(f"x-opt-partition-key {system['x-opt-partition-key']!r} on an event sent without a key")

    expected_properties = {key: avro_property(value) for key, value in sent.properties.items()}
    if typed(record["Properties"]) != typed(expected_properties):
        problems.append(f"Properties {record['Properties']!r} != {expected_properties!r}")
    elif list(record["Properties"]) != list(expected_properties):
        problems.append(f"Properties in the order {list(record['Properties'])}, sent {list(expected_properties)}")
    if record["Body"] != sent.body:
        problems.append(f"Body {record['Body']!r} != sent {sent.body!r}")
    return problems
