"""Helpers for the multi-instance tests (test_balancing.py, test_processor_interop.py): several
`hubcap run` processes, and SDK processors, sharing one consumer group through the Azure Blob
checkpoint store on Azurite.

- `balancing_config` writes a hubcap config with the `azure_blob` store, the `stdout` sink, JSON
  logs and quick balancing; `owner_id` tells the instances apart in the ownership records.
- `BlobRecords` reads (and, to simulate another processor, writes) the ownership and checkpoint
  blobs exactly as the official Python store lays them out.
- `OwnershipWatch` polls the ownership blobs in a thread and keeps every owner change with its
  time, so a test can ask when a partition changed hands and whether anything moved in a period.
- `StreamingProducer` sends numbered events to every partition at a steady rate with the SDK's
  `EventHubProducerClient` until stopped.
- `SdkProcessor` runs an `EventHubConsumerClient` with `BlobCheckpointStore` (load balancing in the
  same consumer group as hubcap) in a thread and records what it delivered, when.
- Delivery accounting: every (partition, sequence number) in hubcap's stdout lines, missing and
  duplicated ones against the hub's last sequence numbers from the emulator's admin API.

Every wait polls against a deadline.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from azure.storage.blob import ContainerClient

from conftest import Azurite, Emulator
from hubcap_process import HubcapProcess, toml_text

SDK_RETRY_OPTIONS = {"retry_total": 5, "retry_backoff_factor": 0.3}
HUB = "hub1"
CONSUMER_GROUP = "$Default"


def unique_container(prefix: str) -> str:
    """A container name of its own for one test (lower-case letters, digits and dashes)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def partition_ids(count: int) -> list[str]:
    return [str(i) for i in range(count)]


# --------------------------------------------------------------------------------------------
# hubcap configuration


def balancing_config(
    emulator: Emulator,
    azurite: Azurite,
    container: str,
    owner_id: str,
    *,
    strategy: str = "balanced",
    update_interval: str = "1s",
    ownership_expiration: str = "3s",
    eventhub: Optional[Mapping[str, Any]] = None,
    sink: Optional[Mapping[str, Any]] = None,
    drain_timeout: str = "20s",
) -> str:
    """hub1 of `emulator`, the Azure Blob store in `container` on Azurite, the stdout sink with
    1 s windows, JSON logs on stderr (so the ownership transitions can be parsed)."""
    return toml_text(
        {
            "eventhub": {
                "connection_string": emulator.connection_string(),
                "name": HUB,
                "start_position": "earliest",
                "retry_min_backoff": "50ms",
                "retry_max_backoff": "1s",
                **(eventhub or {}),
            },
            "checkpoint_store": {
                "type": "azure_blob",
                "connection_string": azurite.connection_string,
                "container": container,
            },
            "load_balancing": {
                "strategy": strategy,
                "update_interval": update_interval,
                "ownership_expiration": ownership_expiration,
                "owner_id": owner_id,
            },
            "sink": {"type": "stdout", "max_window": "1s", **(sink or {})},
            "http": {"listen": "off"},
            "log": {"format": "json", "level": "info"},
            "shutdown": {"drain_timeout": drain_timeout},
        }
    )


# --------------------------------------------------------------------------------------------
# hubcap's logs


def log_records(hubcap: HubcapProcess) -> list[dict]:
    """hubcap's JSON log lines (stderr); lines that are not JSON are skipped."""
    records = []
    try:
        text = hubcap.stderr_path.read_text(errors="replace")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def log_fields(record: dict) -> dict:
    """The fields of one tracing JSON record (message included), flattened."""
    fields = dict(record.get("fields") or {})
    for key, value in record.items():
        if key not in ("fields", "spans", "span"):
            fields.setdefault(key, value)
    return fields


def ownership_log_events(hubcap: HubcapProcess, partition_id: Optional[str] = None) -> list[dict]:
    """Log records with an `event` field (claimed, stolen, expired, released, lost,
    ownership_lost), optionally of one partition, in order."""
    events = []
    for record in log_records(hubcap):
        fields = log_fields(record)
        if "event" not in fields:
            continue
        if partition_id is not None and str(fields.get("partition_id")) != partition_id:
            continue
        events.append(fields)
    return events


def log_time(fields: Mapping[str, Any]) -> dt.datetime:
    """A log record's timestamp (tracing's RFC 3339 UTC) as an aware datetime."""
    return dt.datetime.fromisoformat(str(fields["timestamp"]).replace("Z", "+00:00"))


def first_log_event(
    hubcaps: Iterable[HubcapProcess], partition_id: str, events: Iterable[str], after: dt.datetime
) -> Optional[tuple[HubcapProcess, dict]]:
    """The earliest record with `event` in `events` for the partition, logged after `after`, by
    any of `hubcaps`."""
    wanted = set(events)
    found = [
        (log_time(fields), hubcap.name, hubcap, fields)
        for hubcap in hubcaps
        for fields in ownership_log_events(hubcap, partition_id)
        if fields.get("event") in wanted and log_time(fields) > after
    ]
    if not found:
        return None
    found.sort(key=lambda item: (item[0], item[1]))
    return found[0][2], found[0][3]


def problem_log_records(hubcap: HubcapProcess) -> list[dict]:
    """ERROR records, and the warnings that mean a resume went wrong: a start position the
    service did not have, or events skipped as expired out of retention."""
    bad = []
    for record in log_records(hubcap):
        fields = log_fields(record)
        message = str(fields.get("message", ""))
        if fields.get("level") == "ERROR" or (
            fields.get("level") == "WARN"
            and ("expired out of retention" in message or "start position not available" in message)
        ):
            bad.append(fields)
    return bad


def assert_no_problem_logs(hubcaps: Iterable[HubcapProcess]) -> None:
    problems = {h.name: problem_log_records(h) for h in hubcaps}
    problems = {name: records for name, records in problems.items() if records}
    assert not problems, f"hubcap logged errors or resume warnings: {problems}"


def describe_log_events(hubcap: HubcapProcess) -> str:
    lines = [
        f"  {e.get('timestamp', '?')} partition {e.get('partition_id')} {e.get('event')}: {e.get('message', '')}"
        for e in ownership_log_events(hubcap)
    ]
    return f"{hubcap.name} ownership log:\n" + ("\n".join(lines) if lines else "  (none)")


# --------------------------------------------------------------------------------------------
# the blob records


@dataclass(frozen=True)
class OwnershipRecord:
    partition_id: str
    owner_id: str  # "" = released (the Python store reads it back as None; normalised here)
    etag: str
    last_modified: dt.datetime


@dataclass(frozen=True)
class CheckpointRecord:
    partition_id: str
    sequence_number: Optional[int]
    offset: Optional[str]
    etag: str
    last_modified: dt.datetime


class BlobRecords:
    """The ownership and checkpoint blobs of hub1/$Default on `emulator`, in the Python store's
    layout: `<fqns>/hub1/$default/{ownership,checkpoint}/<partition id>`, all lower case, where
    fqns is `127.0.0.1:<amqp port>` (the host:port of the connection string's endpoint)."""

    def __init__(self, azurite: Azurite, container: str, emulator: Emulator) -> None:
        self.container_name = container
        self.client = ContainerClient.from_connection_string(azurite.connection_string, container)
        self.fully_qualified_namespace = f"{emulator.amqp_host}:{emulator.amqp_port}"
        self.prefix = f"{self.fully_qualified_namespace}/{HUB}/{CONSUMER_GROUP}/".lower()

    def create_container(self) -> None:
        try:
            self.client.create_container()
        except ResourceExistsError:
            pass

    def _list(self, kind: str):
        prefix = f"{self.prefix}{kind}/"
        try:
            return [
                (blob.name[len(prefix):], blob)
                for blob in self.client.list_blobs(name_starts_with=prefix, include=["metadata"])
                if "/" not in blob.name[len(prefix):]
            ]
        except ResourceNotFoundError:  # the container does not exist yet
            return []

    def ownerships(self) -> dict[str, OwnershipRecord]:
        return {
            pid: OwnershipRecord(pid, (blob.metadata or {}).get("ownerid") or "", blob.etag, blob.last_modified)
            for pid, blob in self._list("ownership")
        }

    def checkpoints(self) -> dict[str, CheckpointRecord]:
        records = {}
        for pid, blob in self._list("checkpoint"):
            metadata = blob.metadata or {}
            text = metadata.get("sequencenumber")
            records[pid] = CheckpointRecord(
                pid, int(text) if text else None, metadata.get("offset") or None, blob.etag, blob.last_modified
            )
        return records

    def checkpoint_sequence_numbers(self) -> dict[str, Optional[int]]:
        return {pid: record.sequence_number for pid, record in self.checkpoints().items()}

    def active_owners(self, expiration: float) -> dict[str, str]:
        return active_owners(self.ownerships(), expiration)

    def write_owner(self, partition_id: str, owner_id: str, etag: str) -> Optional[str]:
        """Set Blob Metadata {ownerid} with If-Match, as an SDK processor claims or renews.
        Returns the new etag, or None when the record changed since `etag` was read."""
        blob = self.client.get_blob_client(f"{self.prefix}ownership/{partition_id}")
        try:
            answer = blob.set_blob_metadata(
                {"ownerid": owner_id}, etag=etag, match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError:
            return None
        return answer["etag"]

    def describe(self) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        lines = [
            f"  ownership/{pid}: owner {r.owner_id!r}, {(now - r.last_modified).total_seconds():.1f} s old, etag {r.etag}"
            for pid, r in sorted(self.ownerships().items(), key=lambda kv: int(kv[0]))
        ] + [
            f"  checkpoint/{pid}: sequencenumber {r.sequence_number}, offset {r.offset}"
            for pid, r in sorted(self.checkpoints().items(), key=lambda kv: int(kv[0]))
        ]
        return f"blob records in {self.container_name}/{self.prefix}:\n" + ("\n".join(lines) or "  (none)")


def active_owners(
    records: Mapping[str, OwnershipRecord], expiration: float, now: Optional[dt.datetime] = None
) -> dict[str, str]:
    """partition id -> owner id, for records that name an owner and were written less than
    `expiration` seconds ago. Last-Modified has whole seconds, so a record counts as recent for up
    to one second longer than its true age."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return {
        pid: record.owner_id
        for pid, record in records.items()
        if record.owner_id and (now - record.last_modified).total_seconds() < expiration + 1.0
    }


def owner_counts(owners: Mapping[str, str]) -> dict[str, int]:
    return dict(collections.Counter(owners.values()))


# --------------------------------------------------------------------------------------------
# watching ownership over time


@dataclass(frozen=True)
class OwnerChange:
    at: float  # time.monotonic() of the poll that saw it
    partition_id: str
    previous: Optional[str]  # None = no record before
    owner_id: str  # "" = released
    # With watch_checkpoints: the partition's checkpoint sequence number as listed by the
    # previous poll, which listed checkpoints before ownerships: a value written before the
    # change happened (None = no checkpoint then).
    checkpoint_before: Optional[int] = None


@dataclass(frozen=True)
class CheckpointChange:
    at: float  # time.monotonic() of the poll that saw it
    record: CheckpointRecord


class OwnershipWatch:
    """Polls the ownership blobs every `interval` seconds in a thread and records each change of
    owner id (renewals change only the etag and are counted separately); with
    `watch_checkpoints`, every change of a checkpoint blob's etag too."""

    def __init__(self, records: BlobRecords, interval: float = 0.05, watch_checkpoints: bool = False) -> None:
        self.records = records
        self.interval = interval
        self.watch_checkpoints = watch_checkpoints
        self._checkpoints: dict[str, CheckpointRecord] = {}
        self._checkpoint_changes: list[CheckpointChange] = []
        self._lock = threading.Lock()
        self._current: dict[str, OwnershipRecord] = {}
        self._changes: list[OwnerChange] = []
        self._renewals: collections.Counter = collections.Counter()
        self._errors: list[BaseException] = []
        self._polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ownership-watch", daemon=True)

    def __enter__(self) -> "OwnershipWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # Checkpoints first: a checkpoint listed in one poll was written before that
                # poll's ownership listing, hence before any change the next poll reveals.
                checkpoints = self.records.checkpoints() if self.watch_checkpoints else {}
                snapshot = self.records.ownerships()
            except Exception as err:  # Azurite hiccup: keep polling, report at the end
                with self._lock:
                    self._errors.append(err)
                self._stop.wait(self.interval)
                continue
            now = time.monotonic()
            with self._lock:
                for pid, record in snapshot.items():
                    before = self._current.get(pid)
                    if before is None or before.owner_id != record.owner_id:
                        checkpoint = self._checkpoints.get(pid)
                        self._changes.append(
                            OwnerChange(
                                now,
                                pid,
                                None if before is None else before.owner_id,
                                record.owner_id,
                                None if checkpoint is None else checkpoint.sequence_number,
                            )
                        )
                    elif before.etag != record.etag:
                        self._renewals[pid] += 1
                self._current = snapshot
                for pid, record in checkpoints.items():
                    before = self._checkpoints.get(pid)
                    if before is None or before.etag != record.etag:
                        self._checkpoint_changes.append(CheckpointChange(now, record))
                self._checkpoints = checkpoints
                self._polls += 1
            self._stop.wait(self.interval)

    def wait_polls(self, count: int = 2, timeout: float = 10.0) -> None:
        """Waits until `count` more polls completed (so the state seen is at least that fresh)."""
        with self._lock:
            target = self._polls + count
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if self._polls >= target:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"the ownership watch made no progress in {timeout:.0f} s: {self._errors[-3:]}")
            time.sleep(0.01)

    def current(self) -> dict[str, OwnershipRecord]:
        with self._lock:
            return dict(self._current)

    def changes(self, since: float = 0.0, partition_id: Optional[str] = None) -> list[OwnerChange]:
        with self._lock:
            return [
                c for c in self._changes if c.at >= since and (partition_id is None or c.partition_id == partition_id)
            ]

    def checkpoint_changes(self, since: float = 0.0, partition_id: Optional[str] = None) -> list[CheckpointChange]:
        with self._lock:
            return [
                c
                for c in self._checkpoint_changes
                if c.at >= since and (partition_id is None or c.record.partition_id == partition_id)
            ]

    def renewals(self) -> dict[str, int]:
        with self._lock:
            return dict(self._renewals)

    def describe_changes(self, since: float = 0.0, origin: Optional[float] = None) -> str:
        origin = since if origin is None else origin
        lines = [
            f"  t={c.at - origin:+7.2f} s partition {c.partition_id}: {c.previous!r} -> {c.owner_id!r}"
            for c in self.changes(since)
        ]
        return "ownership changes:\n" + ("\n".join(lines) if lines else "  (none)")


# --------------------------------------------------------------------------------------------
# producing


class StreamingProducer:
    """Sends events to every partition in turn, `rate` events a second in all, until stopped.
    Each event's body is "<partition>:<n>" and property "n" is its number within the partition."""

    def __init__(self, emulator: Emulator, partitions: Iterable[str], rate: float = 300.0, batch: int = 10) -> None:
        self.emulator = emulator
        self.partitions = list(partitions)
        self.rate = rate
        self.batch = batch
        self.sent: collections.Counter = collections.Counter()
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="streaming-producer", daemon=True)

    def start(self) -> "StreamingProducer":
        self._thread.start()
        return self

    def _run(self) -> None:
        producer = EventHubProducerClient.from_connection_string(
            self.emulator.connection_string(), eventhub_name=HUB, **SDK_RETRY_OPTIONS
        )
        period = self.batch / self.rate
        try:
            next_send = time.monotonic()
            turn = 0
            while not self._stop.is_set():
                pid = self.partitions[turn % len(self.partitions)]
                turn += 1
                batch = producer.create_batch(partition_id=pid)
                for _ in range(self.batch):
                    with self._lock:
                        n = self.sent[pid]
                        self.sent[pid] += 1
                    event = EventData(f"{pid}:{n}")
                    event.properties = {"n": n}
                    batch.add(event)
                try:
                    producer.send_batch(batch)
                except Exception as err:  # counted as unsent: the hub's own numbers are the reference
                    with self._lock:
                        self.errors.append(err)
                        self.sent[pid] -= self.batch
                next_send += period
                delay = next_send - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_send = time.monotonic()
        finally:
            producer.close()

    def total(self) -> int:
        with self._lock:
            return sum(self.sent.values())

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the producer thread did not stop"


def send_events(emulator: Emulator, per_partition: Mapping[str, int]) -> None:
    """Sends `count` events to each partition with the SDK producer (synchronously)."""
    producer = EventHubProducerClient.from_connection_string(
        emulator.connection_string(), eventhub_name=HUB, **SDK_RETRY_OPTIONS
    )
    try:
        for pid, count in per_partition.items():
            sent = 0
            while sent < count:
                batch = producer.create_batch(partition_id=pid)
                while sent < count:
                    event = EventData(f"{pid}:{sent}")
                    event.properties = {"n": sent}
                    try:
                        batch.add(event)
                    except ValueError:
                        break
                    sent += 1
                producer.send_batch(batch)
    finally:
        producer.close()


def hub_last_sequence_numbers(emulator: Emulator, partitions: Iterable[str]) -> dict[str, int]:
    """partition -> last enqueued sequence number (-1 for an empty partition), from the admin API."""
    last = {}
    for pid in partitions:
        properties = emulator.admin("GET", f"/hubs/{HUB}/partitions/{pid}")
        last[pid] = -1 if properties["is_empty"] else int(properties["last_enqueued_sequence_number"])
    return last


# --------------------------------------------------------------------------------------------
# what hubcap delivered


def delivered(hubcap: HubcapProcess) -> list[tuple[str, int]]:
    """(partition, sequence number) of every stdout line, in output order. A process that was
    killed (SIGKILL) may have been stopped inside a write: its last line may be torn, and is
    left out; any other line must be complete JSON."""
    lines = hubcap.lines()
    killed = hubcap.process.poll() == -9
    if killed and lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    pairs = []
    for number, line in enumerate(lines, 1):
        assert line.endswith("\n"), f"{hubcap.name}: stdout line {number} is not terminated: {line[:200]!r}"
        try:
            decoded = json.loads(line)
        except ValueError as err:
            raise AssertionError(f"{hubcap.name}: stdout line {number} is not JSON ({err}): {line[:300]!r}")
        pairs.append((str(decoded["partition_id"]), int(decoded["sequence_number"])))
    return pairs


def delivered_counts(hubcaps: Iterable[HubcapProcess]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for hubcap in hubcaps:
        counts.update(delivered(hubcap))
    return counts


def steal_redeliveries(
    watch: "OwnershipWatch", hubcaps: Mapping[str, HubcapProcess], before: float
) -> dict[str, set[int]]:
    """partition -> the sequence numbers that may legitimately appear twice because the partition
    was stolen (owner A -> owner B, both non-empty) before `before`: the events the loser A had
    delivered past the checkpoint seen before the steal (a watch with `watch_checkpoints` knows
    it; without, every event A delivered). A window A committed but could no longer checkpoint
    is read again by B from the last checkpoint, within the at-least-once contract. Start-up
    balancing steals like this."""
    allowed: dict[str, set[int]] = collections.defaultdict(set)
    for change in watch.changes():
        if change.at >= before or not change.previous or not change.owner_id:
            continue
        if change.previous == change.owner_id or change.previous not in hubcaps:
            continue
        floor = -1 if change.checkpoint_before is None else change.checkpoint_before
        allowed[change.partition_id].update(
            seq for pid, seq in delivered(hubcaps[change.previous]) if pid == change.partition_id and seq > floor
        )
    return allowed


def missing_events(counts: Mapping[tuple[str, int], int], last: Mapping[str, int]) -> dict[str, list[int]]:
    """partition -> sequence numbers in 0..last that nobody delivered."""
    missing = {}
    for pid, top in last.items():
        gone = [seq for seq in range(top + 1) if counts.get((pid, seq), 0) == 0]
        if gone:
            missing[pid] = gone
    return missing


def compress(numbers: Iterable[int]) -> str:
    """[1,2,3,7,9,10] -> "1-3,7,9-10"."""
    numbers = sorted(set(numbers))
    runs: list[str] = []
    start = prev = None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            runs.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = n
    if start is not None:
        runs.append(f"{start}-{prev}" if start != prev else f"{start}")
    return ",".join(runs)


def all_delivered(hubcaps: Iterable[HubcapProcess], last: Mapping[str, int]) -> bool:
    return not missing_events(delivered_counts(hubcaps), last)


# --------------------------------------------------------------------------------------------
# an official SDK processor in the same consumer group


@dataclass(frozen=True)
class SdkEvent:
    at: float  # time.monotonic() when on_event ran
    partition_id: str
    sequence_number: int
    offset: str
    wall: Optional[dt.datetime] = None  # the same moment on the wall clock (hubcap's log clock)


class SdkProcessor:
    """`EventHubConsumerClient(checkpoint_store=BlobCheckpointStore)` in a thread: the unmodified
    SDK's load-balanced processor. `checkpoint(event) -> bool` says which events to checkpoint
    (synchronously, in on_event)."""

    def __init__(
        self,
        emulator: Emulator,
        azurite: Azurite,
        container: str,
        *,
        checkpoint: Callable[[SdkEvent], bool] = lambda event: True,
        starting_position: Any = None,
        **receive_options: Any,
    ) -> None:
        self.checkpoint_store = BlobCheckpointStore.from_connection_string(azurite.connection_string, container)
        self.client = EventHubConsumerClient.from_connection_string(
            emulator.connection_string(),
            consumer_group=CONSUMER_GROUP,
            eventhub_name=HUB,
            checkpoint_store=self.checkpoint_store,
            **SDK_RETRY_OPTIONS,
            **{k: v for k, v in receive_options.items() if k in CLIENT_OPTIONS},
        )
        self.receive_options = {k: v for k, v in receive_options.items() if k not in CLIENT_OPTIONS}
        if starting_position is not None:
            self.receive_options["starting_position"] = starting_position
        self.should_checkpoint = checkpoint
        self.events: list[SdkEvent] = []
        self.checkpointed: dict[str, int] = {}
        self.initialized: list[tuple[float, str]] = []
        self.closed: list[tuple[float, str, str]] = []
        self.errors: list[tuple[Optional[str], BaseException]] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="sdk-processor", daemon=True)
        self._failure: list[BaseException] = []
        self._owner_id: Optional[str] = None

    def _on_event(self, context, event: Optional[EventData]) -> None:
        if event is None:
            return
        seen = SdkEvent(
            time.monotonic(),
            context.partition_id,
            event.sequence_number,
            str(event.offset),
            dt.datetime.now(dt.timezone.utc),
        )
        with self._lock:
            self.events.append(seen)
        if self.should_checkpoint(seen):
            context.update_checkpoint(event)
            with self._lock:
                self.checkpointed[context.partition_id] = event.sequence_number

    def _on_initialize(self, context) -> None:
        with self._lock:
            self.initialized.append((time.monotonic(), context.partition_id))

    def _on_close(self, context, reason) -> None:
        with self._lock:
            self.closed.append((time.monotonic(), context.partition_id, str(reason)))

    def _on_error(self, context, error) -> None:
        with self._lock:
            self.errors.append((getattr(context, "partition_id", None), error))

    def _run(self) -> None:
        try:
            self.client.receive(
                on_event=self._on_event,
                on_partition_initialize=self._on_initialize,
                on_partition_close=self._on_close,
                on_error=self._on_error,
                **self.receive_options,
            )
        except BaseException as err:
            self._failure.append(err)

    def start(self) -> "SdkProcessor":
        self._thread.start()
        return self

    @property
    def owner_id(self) -> Optional[str]:
        """The processor's owner id in the ownership records (a UUID the SDK draws in receive())."""
        if self._owner_id is None:
            processors = list(getattr(self.client, "_event_processors", {}).values())
            if processors:
                self._owner_id = processors[0]._id  # kept: close() forgets the processor
        return self._owner_id

    def check_running(self) -> None:
        assert not self._failure, f"the SDK processor's receive() raised {self._failure[0]!r}"

    def snapshot(self) -> list[SdkEvent]:
        with self._lock:
            return list(self.events)

    def delivered_counts(self) -> collections.Counter:
        return collections.Counter((e.partition_id, e.sequence_number) for e in self.snapshot())

    def first_sequence_numbers(self) -> dict[str, int]:
        first: dict[str, int] = {}
        for event in self.snapshot():
            first.setdefault(event.partition_id, event.sequence_number)
        return first

    def wait_for(self, condition: Callable[[], bool], what: Callable[[], str] | str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.check_running()
            if time.monotonic() > deadline:
                text = what() if callable(what) else what
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {text}")
            time.sleep(0.05)

    def close(self) -> None:
        """client.close(): stops receiving and releases the partitions (ownerid "")."""
        self.client.close()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the SDK processor did not stop within 30 s of close()"


# Keyword arguments of EventHubConsumerClient itself; the rest go to receive().
CLIENT_OPTIONS = {"load_balancing_interval", "partition_ownership_expiration_interval", "load_balancing_strategy"}


# --------------------------------------------------------------------------------------------
# waiting on several processes


def wait_all(
    hubcaps: Iterable[HubcapProcess],
    condition: Callable[[], bool],
    what: Callable[[], str] | str,
    timeout: float,
    interval: float = 0.05,
) -> float:
    """Polls `condition` until true; fails on the deadline or as soon as one of `hubcaps` exits.
    Returns the time waited."""
    hubcaps = list(hubcaps)
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        for hubcap in hubcaps:
            code = hubcap.process.poll()
            if code is not None:
                text = what() if callable(what) else what
                raise AssertionError(
                    f"{hubcap.name} exited with code {code} while waiting for {text}\n{hubcap.describe()}"
                )
        if time.monotonic() >= deadline:
            text = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {text}")
        time.sleep(interval)
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------
# a plain SDK reader with an owner level (epoch), as a stealing reader


class EpochReader:
    """`EventHubConsumerClient.receive(partition_id=..., owner_level=...)` without a checkpoint
    store, in a thread: a reader that takes the partition from lower-epoch readers."""

    def __init__(self, emulator: Emulator, partition_id: str, owner_level: int, starting_position: Any = "-1") -> None:
        self.client = EventHubConsumerClient.from_connection_string(
            emulator.connection_string(), consumer_group=CONSUMER_GROUP, eventhub_name=HUB, **SDK_RETRY_OPTIONS
        )
        self.partition_id = partition_id
        self.owner_level = owner_level
        self.starting_position = starting_position
        self.events: list[SdkEvent] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="epoch-reader", daemon=True)

    def _on_event(self, context, event) -> None:
        if event is None:
            return
        with self._lock:
            self.events.append(SdkEvent(time.monotonic(), context.partition_id, event.sequence_number, str(event.offset)))

    def _on_error(self, context, error) -> None:
        with self._lock:
            self.errors.append(error)

    def _run(self) -> None:
        try:
            self.client.receive(
                on_event=self._on_event,
                on_error=self._on_error,
                partition_id=self.partition_id,
                owner_level=self.owner_level,
                starting_position=self.starting_position,
            )
        except BaseException as err:
            with self._lock:
                self.errors.append(err)

    def start(self) -> "EpochReader":
        self._thread.start()
        return self

    def count(self) -> int:
        with self._lock:
            return len(self.events)

    def close(self) -> None:
        self.client.close()
        self._thread.join(timeout=30)
