"""Support for the `avro_blob` sink tests (test_hubcap_blob.py): an Azurite that a test can stop and
restart on the same port and data directory, readers for the Capture blobs hubcap commits, and
samplers that watch a running hubcap from outside (checkpoint files, blob ETags, /readyz, RSS).

This module is also a pytest plugin (`pytest_plugins = ["hubcap_process", "blob_support"]`): it
provides the `azurite_server` fixture and attaches Azurite's log to a failed test's report.

- `AzuriteServer` (fixture `azurite_server`): one Azurite blob service per test, started on a free
  loopback port with its own `--location`. `stop()` is the graceful SIGTERM (Azurite saves its
  metadata database on the way out: a SIGKILL could lose the last seconds of committed blobs, which
  real Storage never does, and the test would blame hubcap for it); `restart()` starts it again on
  the same port and location. The conftest's session `azurite` fixture cannot do that: it has no
  stop/start and picks a new port each time.
- `download_capture` lists the committed blobs of a container (never the uncommitted ones), downloads
  each into a directory, and reads it with the strict reader of hubcap_process (framing by hand, then
  fastavro); a blob that does not read whole is kept with the error and the records that could be
  salvaged, so a test can report what is in it rather than stop at the first exception.
- Every sampler is a thread that polls until stopped; none of them asserts, the test does.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import fastavro
import pytest
from azure.core.exceptions import AzureError
from azure.storage.blob import BlobServiceClient, ContainerClient

from conftest import (
    AZURITE_ACCOUNT,
    AZURITE_READY_TIMEOUT_S,
    azurite_binary,
    free_loopback_port,
    port_accepts_connections,
    start_process,
    storage_connection_string,
    tail,
)
from hubcap_process import (  # the Capture record checks are shared with test_hubcap_avro
    CAPTURE_TIME,
    avro_property,
    epoch_ms,
    record_problems,
    AvroFile,
    Landed,
    SentEvent,
    capture_fixture,
    capture_time_text,
    parse_container,
    read_avro,
    typed,
)

AZURITE_STOP_TIMEOUT_S = 20.0
CAPTURE_CONTAINER = "capture"

# {Namespace}/{EventHub}/{PartitionId}/{Year}/{Month}/{Day}/{Hour}/{Minute}/{Second}.avro, Capture's
# default format; {Namespace} is the emulator's host. (Unlike the file sink, the blob sink never
# adds a "-N" suffix: a window whose name is taken is dropped and read again.)
CAPTURE_BLOB_NAME = re.compile(
    r"127\.0\.0\.1/hub1/(?P<partition>\d+)/(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2})/"
    r"(?P<hour>\d{2})/(?P<minute>\d{2})/(?P<second>\d{2})(?:\.avro|\.parquet|\.jsonl|\.jsonl\.gz|\.jsonl\.zst)"
)


# --------------------------------------------------------------------------------------------
# Azurite that can be stopped and restarted in place


class AzuriteServer:
    """An Azurite blob service this test owns: start, stop (by PID), restart on the same port
    and data directory."""

    def __init__(self, location: Path, log_path: Path) -> None:
        self.location = location
        self.log_path = log_path
        self.port: Optional[int] = None
        self.process: Optional[subprocess.Popen] = None
        self.starts = 0
        self.location.mkdir(parents=True, exist_ok=True)

    # ---- addresses

    @property
    def blob_endpoint(self) -> str:
        assert self.port is not None, "Azurite was never started"
        return f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return storage_connection_string(self.blob_endpoint)

    def service(self, **options: Any) -> BlobServiceClient:
        return BlobServiceClient.from_connection_string(self.connection_string, **options)

    def container(self, name: str = CAPTURE_CONTAINER, **options: Any) -> ContainerClient:
        return self.service(**options).get_container_client(name)

    def quick_container(self, name: str = CAPTURE_CONTAINER) -> ContainerClient:
        """A client that fails fast (no retries, short timeouts): for polling while Azurite may be down."""
        return self.container(name, retry_total=0, connection_timeout=2, read_timeout=10)

    # ---- lifecycle

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Starts Azurite: on a free port the first time, on the same port after that."""
        assert not self.running(), "Azurite is already running"
        binary = azurite_binary()
        if not binary.exists():
            pytest.fail(f"Azurite is not installed at {binary}: run `npm ci` (or bash scripts/test.sh)")
        attempts = 3 if self.port is None else 1
        for _ in range(attempts):
            port = self.port if self.port is not None else free_loopback_port()
            with open(self.log_path, "ab") as log:
                log.write(f"\n--- start #{self.starts + 1} on port {port} ---\n".encode())
                log.flush()
                process = start_process(
                    [
                        str(binary),
                        "--blobHost", "127.0.0.1",
                        "--blobPort", str(port),
                        "--location", str(self.location),
                        "--skipApiVersionCheck",
                        "--disableTelemetry",
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            deadline = time.monotonic() + AZURITE_READY_TIMEOUT_S
            while time.monotonic() < deadline and process.poll() is None:
                if port_accepts_connections("127.0.0.1", port):
                    self.process, self.port = process, port
                    self.starts += 1
                    return
                time.sleep(0.05)
            self._stop(process)
        raise RuntimeError(f"Azurite did not start listening; its log ({self.log_path}):\n{tail(self.log_path)}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = AZURITE_STOP_TIMEOUT_S) -> float:
        """Signals Azurite by PID and waits for it to exit; returns how long that took. After a
        SIGTERM that does not end the process in `timeout`, SIGKILL (its database is saved by then
        if the log says it closed). The port refuses connections when this returns."""
        assert self.process is not None
        started = time.monotonic()
        self._stop(self.process, sig, timeout)
        waited = time.monotonic() - started
        deadline = time.monotonic() + 10
        while port_accepts_connections("127.0.0.1", self.port):
            assert time.monotonic() < deadline, f"port {self.port} still accepts connections after Azurite exited"
            time.sleep(0.05)
        return waited

    def restart(self) -> None:
        """Starts Azurite again on the same port and data directory."""
        assert self.port is not None
        deadline = time.monotonic() + 15
        while True:
            try:
                self.start()
                return
            except RuntimeError:
                # The old listener may linger for a moment; retry until the deadline.
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    @staticmethod
    def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = AZURITE_STOP_TIMEOUT_S) -> None:
        if process.poll() is not None:
            return
        os.kill(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def close(self) -> None:
        if self.process is not None:
            self._stop(self.process)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)


_AZURITE_SERVERS = pytest.StashKey[list]()


@pytest.fixture
def azurite_server(request, tmp_path) -> AzuriteServer:
    """An Azurite of this test's own, started; stopped by PID at teardown. A failed test's report
    gets the tail of its log."""
    server = AzuriteServer(tmp_path / "azurite-data", tmp_path / "azurite.log")
    request.node.stash[_AZURITE_SERVERS] = [server]
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for server in item.stash.get(_AZURITE_SERVERS, []):
            report.sections.append((f"Azurite log, last 40 lines ({server.log_path})", server.log_tail()))
    return report


# --------------------------------------------------------------------------------------------
# hubcap's blob sink configuration


def blob_sink(azurite: AzuriteServer, **settings: Any) -> dict[str, Any]:
    return {
        "type": "avro_blob",
        "connection_string": azurite.connection_string,
        "container": CAPTURE_CONTAINER,
        **settings,
    }


# --------------------------------------------------------------------------------------------
# Capture blobs


@dataclass
class CaptureBlob:
    """One committed blob, downloaded and read."""

    name: str
    etag: str
    size: int
    metadata: dict[str, str]
    block_sizes: list[int]  # committed blocks, in order
    path: Path  # the downloaded copy
    avro: Optional[AvroFile]  # None when the blob does not read whole
    error: Optional[str]  # why it does not read whole
    records: list[dict] = field(default_factory=list)  # every record read (salvaged ones too)

    @property
    def partition_id(self) -> str:
        match = CAPTURE_BLOB_NAME.fullmatch(self.name)
        assert match, f"{self.name} does not follow Capture's default path format"
        return match["partition"]

    @property
    def window_start(self) -> dt.datetime:
        match = CAPTURE_BLOB_NAME.fullmatch(self.name)
        assert match, self.name
        return dt.datetime(
            *(int(match[part]) for part in ("year", "month", "day", "hour", "minute", "second")),
            tzinfo=dt.timezone.utc,
        )

    def sequence_numbers(self) -> list[int]:
        return [record["SequenceNumber"] for record in self.records]


def salvage_records(path: Path) -> tuple[list[dict], str]:
    """The records fastavro reads from a damaged file before it fails, and the failure."""
    records: list[dict] = []
    try:
        with open(path, "rb") as stream:
            for record in fastavro.reader(stream):
                records.append(record)
    except Exception as err:  # noqa: BLE001 - any reader failure is the finding
        return records, f"{type(err).__name__}: {err}"
    return records, "fastavro read it whole"


def read_capture_blob(path: Path) -> tuple[Optional[AvroFile], Optional[str], list[dict]]:
    try:
        avro = read_avro(path)
    except Exception as err:  # noqa: BLE001
        records, salvage = salvage_records(path)
        return None, f"{type(err).__name__}: {err} (salvaged {len(records)} records; fastavro: {salvage})", records
    return avro, None, avro.records


def list_committed(container: ContainerClient) -> dict[str, Any]:
    """name -> BlobProperties of every committed blob (uncommitted ones are never listed)."""
    return {blob.name: blob for blob in container.list_blobs(include=["metadata"])}


def list_uncommitted_names(container: ContainerClient) -> set[str]:
    """Names that have staged blocks but no committed blob (an open window's blob)."""
    everything = {blob.name for blob in container.list_blobs(include=["uncommittedblobs"])}
    return everything - set(list_committed(container))


def read_format_blob(path: Path, fmt) -> tuple[Optional[AvroFile], Optional[str], list[dict]]:
    """A Parquet or JSON Lines blob's events as Capture-shaped records (archive_formats)."""
    try:
        return None, None, fmt.capture_records(path)
    except Exception as err:  # noqa: BLE001 - any reader failure is the finding
        return None, f"{type(err).__name__}: {err}", []


def download_capture(
    container: ContainerClient, destination: Path, read: bool = True, fmt=None
) -> list[CaptureBlob]:
    """Every committed blob of the container, downloaded under `destination` and (if `read`) read:
    as Capture Avro, or in `fmt` (an archive_formats.ArchiveFormat other than Avro)."""
    blobs = []
    for name, properties in sorted(list_committed(container).items()):
        path = destination / name
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = container.get_blob_client(name)
        with open(path, "wb") as out:
            blob.download_blob(max_concurrency=2).readinto(out)
        committed, _ = blob.get_block_list("committed")
        if not read:
            avro, error, records = None, None, []
        elif fmt is None or fmt.id == "avro":
            avro, error, records = read_capture_blob(path)
        else:
            avro, error, records = read_format_blob(path, fmt)
        blobs.append(
            CaptureBlob(
                name=name,
                etag=properties.etag.strip('"'),
                size=properties.size,
                metadata={key.lower(): value for key, value in (properties.metadata or {}).items()},
                block_sizes=[block.size for block in committed],
                path=path,
                avro=avro,
                error=error,
                records=records,
            )
        )
    return blobs


def metadata_problems(blob: CaptureBlob) -> list[str]:
    """The blob's metadata must describe the records inside: first and last sequence numbers and
    the event count."""
    problems = []
    expected_keys = {"firstsequencenumber", "lastsequencenumber", "eventcount"}
    missing = expected_keys - set(blob.metadata)
    if missing:
        return [f"{blob.name}: metadata lacks {sorted(missing)} (has {blob.metadata})"]
    sequence_numbers = blob.sequence_numbers()
    actual = {
        "firstsequencenumber": str(sequence_numbers[0]) if sequence_numbers else None,
        "lastsequencenumber": str(sequence_numbers[-1]) if sequence_numbers else None,
        "eventcount": str(len(sequence_numbers)),
    }
    for key in sorted(expected_keys):
        if blob.metadata[key] != actual[key]:
            problems.append(f"{blob.name}: metadata {key}={blob.metadata[key]} but the records inside say {actual[key]}")
    return problems


def capture_schema_text() -> bytes:
    """The `avro.schema` header of the real Capture file, byte for byte."""
    return parse_container(capture_fixture()).metadata["avro.schema"]


# --------------------------------------------------------------------------------------------
# watching a running hubcap


class Poller:
    """A thread that calls `step()` every `interval` seconds until stopped."""

    def __init__(self, name: str, interval: float) -> None:
        self.interval = interval
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def step(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as err:  # noqa: BLE001 - a sampler keeps sampling
                if len(self.failures) < 20:
                    self.failures.append(f"{type(err).__name__}: {err}")
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), f"{self._thread.name} did not stop"


class CheckpointSampler(Poller):
    """Every checkpoint value the file store held, per partition, with when it was first seen."""

    def __init__(self, read: Callable[[], dict[str, dict]], interval: float = 0.01) -> None:
        super().__init__("checkpoint-sampler", interval)
        self.read = read
        self.lock = threading.Lock()
        self.history: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)

    def step(self) -> None:
        now = time.monotonic()
        try:
            records = self.read()
        except (ValueError, OSError):
            return  # a file being replaced; the next sample sees it
        with self.lock:
            for partition_id, record in records.items():
                if not partition_id.isdigit():
                    continue  # a checkpoint being written (`<id>.tmp-...`), not one in place yet
                sequence_number = record.get("sequencenumber")
                if sequence_number is None:
                    continue
                seen = self.history[partition_id]
                if not seen or seen[-1][1] != sequence_number:
                    seen.append((now, int(sequence_number)))

    def snapshot(self) -> dict[str, list[tuple[float, int]]]:
        with self.lock:
            return {pid: list(values) for pid, values in self.history.items()}

    def latest(self) -> dict[str, int]:
        with self.lock:
            return {pid: values[-1][1] for pid, values in self.history.items() if values}

    def between(self, start: float, end: float) -> dict[str, list[int]]:
        """Checkpoint values first seen in [start, end] (monotonic clock)."""
        with self.lock:
            return {
                pid: [value for moment, value in values if start <= moment <= end]
                for pid, values in self.history.items()
            }


class EtagWatcher(Poller):
    """Lists the committed blobs whenever Azurite answers: every ETag each name ever had."""

    def __init__(self, azurite: AzuriteServer, interval: float = 0.2) -> None:
        super().__init__("etag-watcher", interval)
        self.azurite = azurite
        self.lock = threading.Lock()
        self.etags: dict[str, list[str]] = collections.defaultdict(list)
        self.listings = 0

    def step(self) -> None:
        if not self.azurite.running():
            return
        try:
            listing = list_committed(self.azurite.quick_container())
        except AzureError:
            return
        with self.lock:
            self.listings += 1
            for name, properties in listing.items():
                etag = properties.etag.strip('"')
                seen = self.etags[name]
                if not seen or seen[-1] != etag:
                    seen.append(etag)

    def record(self, listing: dict[str, str]) -> None:
        """Adds a listing taken by the test (name -> etag)."""
        with self.lock:
            for name, etag in listing.items():
                seen = self.etags[name]
                if not seen or seen[-1] != etag:
                    seen.append(etag)

    def rewritten(self) -> dict[str, list[str]]:
        with self.lock:
            return {name: list(etags) for name, etags in self.etags.items() if len(set(etags)) > 1}


def readyz(port: int, timeout: float = 2.0) -> tuple[int, Any]:
    """GET /readyz: (status, decoded JSON body); (0, error text) when it cannot be reached."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            return err.code, json.loads(body)
        except ValueError:
            return err.code, body.decode(errors="replace")
    except OSError as err:
        return 0, str(err)


def events_received(port: int, partition_id: str, timeout: float = 2.0) -> Optional[float]:
    """hubcap_events_received_total of one partition from /metrics; None when unreadable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("hubcap_events_received_total{") and f'partition="{partition_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


class ReadyzSampler(Poller):
    def __init__(self, port: int, interval: float = 0.1) -> None:
        super().__init__("readyz-sampler", interval)
        self.port = port
        self.lock = threading.Lock()
        self.samples: list[tuple[float, int, Any]] = []

    def step(self) -> None:
        status, body = readyz(self.port)
        with self.lock:
            self.samples.append((time.monotonic(), status, body))

    def between(self, start: float, end: float) -> list[tuple[float, int, Any]]:
        with self.lock:
            return [sample for sample in self.samples if start <= sample[0] <= end]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (and the other Vm* lines) of /proc/<pid>/status, in KiB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key.startswith("Vm") or key.startswith("Rss"):
                values[key] = int(rest.split()[0])
    return values


class RssSampler(Poller):
    """hubcap's resident memory over time, from /proc/<pid>/status."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__("rss-sampler", interval)
        self.pid = pid
        self.lock = threading.Lock()
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.started = time.monotonic()

    def step(self) -> None:
        try:
            values = proc_status(self.pid)
        except (FileNotFoundError, ProcessLookupError):
            return
        with self.lock:
            self.samples.append((time.monotonic() - self.started, values))

    def peak(self, key: str) -> int:
        with self.lock:
            return max((values.get(key, 0) for _, values in self.samples), default=0)

    def last(self) -> dict[str, int]:
        with self.lock:
            return dict(self.samples[-1][1]) if self.samples else {}

    def series(self, key: str = "VmRSS", points: int = 12) -> list[tuple[float, int]]:
        """About `points` evenly spaced (seconds, KiB) samples, for a report."""
        with self.lock:
            samples = list(self.samples)
        if not samples:
            return []
        step = max(1, len(samples) // points)
        chosen = samples[::step] + [samples[-1]]
        return [(round(moment, 1), values.get(key, 0)) for moment, values in chosen]


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f} MiB"


# --------------------------------------------------------------------------------------------
# the emulator's preloaded events


def synthetic_body(index: int, size: int) -> bytes:
    """The body the emulator's `POST /preload` gives its `index`-th event (emulator/src/message.rs,
    `synthetic_event`): xorshift64 letters."""
    mask = (1 << 64) - 1
    state = ((index * 0x9E3779B97F4A7C15) & mask) | 1
    out = bytearray(size)
    for position in range(size):
        state ^= (state << 13) & mask
        state ^= state >> 7
        state ^= (state << 17) & mask
        out[position] = 97 + state % 26
    return bytes(out)
