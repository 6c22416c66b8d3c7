"""hubcap with the `avro_blob` sink: Capture Avro block blobs in Azurite, fed by the unmodified
official SDK through the emulator, downloaded and read back with fastavro.

Each test runs its own Azurite (blob_support.AzuriteServer), so one can stop and restart it on the
same port and data directory, and every test has the container "capture" to itself.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import pytest

pytest.register_assert_rewrite("blob_support", "archive_formats")

from blob_support import (  # noqa: E402
    AzuriteServer,
    CaptureBlob,
    CheckpointSampler,
    EtagWatcher,
    ReadyzSampler,
    RssSampler,
    blob_sink,
    capture_schema_text,
    download_capture,
    events_received,
    list_committed,
    list_uncommitted_names,
    metadata_problems,
    mib,
    read_capture_blob,
    readyz,
    record_problems,
    synthetic_body,
)
from archive_formats import AVRO, JSONL_ZSTD, PARQUET, ArchiveFormat  # noqa: E402
from conftest import emulator_binary, free_loopback_port, hubcap_binary  # noqa: E402
from hubcap_process import (  # noqa: E402
    SentEvent,
    checkpoints_reached,
    first_mismatches,
    hubcap_config,
    hubcap_is_built,
    last_sequence_numbers,
    make_workload,
    producer_client,
    read_checkpoints,
    read_with_sdk,
    send_workload,
)

pytest_plugins = ["hubcap_process", "blob_support"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

PARTITIONS = ["0", "1", "2", "3"]
BLOCK_SIZE_64K = 64 * 1024


class ContractViolation(AssertionError):
    """The delivery contract was broken: an event lost, a checkpoint ahead of the blobs, a blob
    rewritten or unreadable."""


class RssBoundExceeded(AssertionError):
    """hubcap's resident memory went over the bound."""


class NotReady(AssertionError):
    """/readyz said 503 while hubcap was doing its job."""


def blob_config(
    emulator, azurite: AzuriteServer, tmp_path: Path, *, http_listen: str = "off", fmt: ArchiveFormat = AVRO, **sink: Any
) -> str:
    """`avro_blob` (Capture Avro), or `blob` with another format's keys."""
    kind = {} if fmt is AVRO else {"type": "blob", **fmt.sink}
    return hubcap_config(
        emulator,
        checkpoints=tmp_path / "checkpoints",
        sink=blob_sink(azurite, **kind, **sink),
        http_listen=http_listen,
    )


def sink_failing(answer: tuple[int, Any]) -> list[str]:
    """The partitions /readyz reports with a failing sink (reasons and per-partition flags)."""
    status, body = answer
    assert isinstance(body, dict), f"/readyz answered {status} {body!r}"
    failing = [reason for reason in body.get("reasons", []) if "sink failing" in reason]
    failing += [f"partition {pid}: sink_failing" for pid, p in body.get("partitions", {}).items() if p.get("sink_failing")]
    return failing


def receiving(answer: tuple[int, Any]) -> set[str]:
    """The partitions /readyz shows with a receive link attached."""
    _, body = answer
    if not isinstance(body, dict):
        return set()
    return {pid for pid, p in body.get("partitions", {}).items() if p.get("receiving")}


def check_capture_header(blob: CaptureBlob, codec: bytes = b"null") -> list[str]:
    """The header is Capture's: codec, and the schema text of a file the service wrote, byte for byte."""
    assert blob.avro is not None
    problems = []
    if blob.avro.metadata.get("avro.codec") != codec:
        problems.append(f"{blob.name}: avro.codec {blob.avro.metadata.get('avro.codec')!r}, expected {codec!r}")
    schema_text = blob.avro.metadata.get("avro.schema")
    if schema_text != capture_schema_text():
        problems.append(
            f"{blob.name}: avro.schema differs from the Capture file's byte for byte:\n"
            f"  hubcap:  {schema_text!r}\n  capture: {capture_schema_text()!r}"
        )
    return problems


# --------------------------------------------------------------------------------------------
# 1. a large workload, exactly once


@pytest.mark.timeout(600)
def test_fifty_thousand_events_land_in_capture_blobs_exactly_once(
    reference_emulator, azurite_server, start_hubcap, tmp_path
):
    emulator = reference_emulator
    checkpoints = tmp_path / "checkpoints"
    events = make_workload(50_000, padding=40)
    sent = {event.number: event for event in events}
    # Two phases, so every partition has at least two windows whatever the drain speed: a backlog
    # that hubcap drains as it starts, then the rest once the backlog is checkpointed.
    send_workload(emulator, events[:30_000])
    first_phase = last_sequence_numbers(emulator)
    assert sorted(first_phase) == PARTITIONS, f"the workload should reach every partition: {first_phase}"
    hubcap = start_hubcap(
        blob_config(emulator, azurite_server, tmp_path, max_window="2s", block_size="64KiB")
    )
    hubcap.wait_for_checkpoints(checkpoints, emulator, first_phase, timeout=300)
    send_workload(emulator, events[30_000:])
    last = last_sequence_numbers(emulator)
    assert all(last[pid] > first_phase[pid] for pid in PARTITIONS), (first_phase, last)

    landed = read_with_sdk(emulator, set(sent))
    hubcap.wait_for_checkpoints(checkpoints, emulator, last, timeout=300)
    hubcap.terminate_cleanly()

    container = azurite_server.container()
    blobs = download_capture(container, tmp_path / "downloaded")
    assert blobs, "no committed blob in the container"
    unreadable = [f"{blob.name}: {blob.error}" for blob in blobs if blob.error]
    assert not unreadable, "blobs that are not whole Avro files:\n" + "\n".join(unreadable)
    assert all(blob.name.endswith(".avro") for blob in blobs)

    positions: collections.Counter = collections.Counter()
    numbers: collections.Counter = collections.Counter()
    mismatches: list[str] = []
    ranges: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
    for blob in blobs:
        partition_id = blob.partition_id  # also checks the name follows Capture's format
        mismatches += check_capture_header(blob)
        mismatches += metadata_problems(blob)
        assert blob.records, f"{blob.name}: an empty blob although skip_empty is on"
        sequence_numbers = blob.sequence_numbers()
        if sequence_numbers != list(range(sequence_numbers[0], sequence_numbers[0] + len(sequence_numbers))):
            mismatches.append(f"{blob.name}: sequence numbers are not consecutive: {sequence_numbers[:20]}...")
        ranges[partition_id].append((sequence_numbers[0], sequence_numbers[-1]))
        first_number = blob.records[0]["Properties"].get("n")
        if first_number in landed:
            first_enqueued = landed[first_number].enqueued_time.replace(microsecond=0)
            if blob.window_start < first_enqueued:
                mismatches.append(f"{blob.name} is named before its first event was enqueued ({first_enqueued})")
        for record in blob.records:
            number = record["Properties"].get("n")
            numbers[number] += 1
            positions[(partition_id, record["SequenceNumber"])] += 1
            if number not in sent:
                mismatches.append(f"an event that was not sent: {record!r}")
                continue
            problems = record_problems(record, sent[number], landed[number], partition_id)
            if problems:
                mismatches.append(f"event {number} ({sent[number].route}) in {blob.name}: " + "; ".join(problems))

    repeated = {position: count for position, count in positions.items() if count > 1}
    assert not repeated, f"{len(repeated)} events archived more than once: {list(repeated.items())[:10]}"
    missing = sorted(set(sent) - set(numbers))
    assert not missing, f"{len(missing)} events are in no blob: {missing[:20]}"
    assert sum(numbers.values()) == len(sent)
    assert not mismatches, first_mismatches(mismatches)
    for partition_id, spans in sorted(ranges.items()):
        spans.sort()
        assert spans[0][0] == 0 and spans[-1][1] == last[partition_id], (partition_id, spans)
        gaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] != a[1] + 1]
        assert not gaps, f"partition {partition_id}: blobs do not follow each other: {gaps}"

    # 64 KiB blocks: windows over an Avro block (256 KiB) are staged and committed as block lists
    multi_block = [blob for blob in blobs if len(blob.block_sizes) > 1]
    assert multi_block, (
        f"no blob was committed from more than one block: {[(b.name, b.size, b.block_sizes) for b in blobs][:10]}"
    )
    wrong_blocks = [
        (blob.name, blob.block_sizes)
        for blob in multi_block
        if any(size != BLOCK_SIZE_64K for size in blob.block_sizes[:-1])
    ]
    assert not wrong_blocks, f"blocks before the last should be block_size (64 KiB): {wrong_blocks[:5]}"
    for blob in multi_block:
        assert sum(blob.block_sizes) == blob.size, (blob.name, blob.block_sizes, blob.size)
    print(
        f"{len(blobs)} blobs, {len(multi_block)} of them block lists "
        f"(most blocks: {max(len(b.block_sizes) for b in blobs)}, largest: {max(b.size for b in blobs)} bytes)"
    )
    assert all(len(spans) >= 2 for spans in ranges.values()), f"a partition in one window: {dict(ranges)}"
    # no window left behind: every staged block ended up in a committed blob
    assert list_uncommitted_names(container) == set()


# --------------------------------------------------------------------------------------------
# 2. Azurite goes away in the middle of windows

STREAM_RATE = 400  # events per second, ~1 KB each: ~100 KB/s per partition
BURST_EVENTS_PER_PARTITION = 96
BURST_BODY = 16 * 1024  # 1.5 MiB per partition: past one Avro block (256 KiB), so blocks are staged
OUTAGE_S = 10.0  # longer than max_window (4 s): every open window reaches its deadline while Azurite is down


class Streamer:
    """Sends numbered events (hubcap_process.make_workload: properties, keys, binary bodies) at a
    steady rate from a thread; can pause, and can send a burst of large events to every partition."""

    def __init__(self, emulator, rate: int = STREAM_RATE, chunk: int = 40) -> None:
        self.emulator = emulator
        self.rate = rate
        self.chunk = chunk
        self.next_number = 0
        self.sent: dict[int, SentEvent] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._idle = threading.Event()  # set while paused with no send in flight
        self._burst_requested = threading.Event()
        self.burst_sent = threading.Event()
        self.failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="streamer", daemon=True)

    def _send(self, producer, events: list[SentEvent]) -> None:
        send_workload(self.emulator, events, producer)
        with self.lock:
            self.sent.update((event.number, event) for event in events)

    def _burst_events(self) -> list[SentEvent]:
        events = []
        for partition_id in PARTITIONS:
            for _ in range(BURST_EVENTS_PER_PARTITION):
                number = self.next_number
                self.next_number += 1
                # Hash output: as large in a compressed format as in plain Avro.
                body = b"".join(hashlib.sha256(f"{number}/{k}".encode()).digest() for k in range(BURST_BODY // 32))
                events.append(SentEvent(number, body, {"n": number, "burst": True}, partition_id=partition_id))
        return events

    def _run(self) -> None:
        try:
            with producer_client(self.emulator) as producer:
                while not self._stop.is_set():
                    if self._burst_requested.is_set():
                        self._burst_requested.clear()
                        self._send(producer, self._burst_events())
                        self.burst_sent.set()
                        continue
                    if self._paused.is_set():
                        self._idle.set()
                        self._stop.wait(0.02)
                        continue
                    self._idle.clear()
                    started = time.monotonic()
                    events = make_workload(self.chunk, start=self.next_number, prefix="streamed", padding=600)
                    self.next_number += self.chunk
                    self._send(producer, events)
                    self._stop.wait(max(0.0, self.chunk / self.rate - (time.monotonic() - started)))
        except BaseException as err:  # noqa: BLE001 - reported by stop()
            self.failure.append(err)

    def start(self) -> "Streamer":
        self._thread.start()
        return self

    def pause(self) -> None:
        """Stops sending; returns once a send that was in flight has completed."""
        self._paused.set()
        assert self._idle.wait(30), "the sender did not pause"

    def resume(self) -> None:
        self._idle.clear()
        self._paused.clear()

    def burst(self) -> None:
        self.burst_sent.clear()
        self._burst_requested.set()

    def count(self) -> int:
        with self.lock:
            return len(self.sent)

    def check(self) -> None:
        assert not self.failure, f"sending failed: {self.failure[0]!r}"

    def halt(self) -> None:
        """Stops sending without checking (teardown after a failure)."""
        self._stop.set()
        self._thread.join(timeout=30)

    def stop(self) -> dict[int, SentEvent]:
        self._stop.set()
        self._thread.join(timeout=60)
        assert not self._thread.is_alive(), "the sender did not stop"
        self.check()
        with self.lock:
            return dict(self.sent)


def contiguous_end(sequence_numbers: set[int]) -> int:
    """The largest k such that 0..k are all in the set (-1 if 0 is not)."""
    k = -1
    while k + 1 in sequence_numbers:
        k += 1
    return k


# Parquet hands a row group to the blob only when it is full: 64 KiB ones (the smallest) stage
# blocks during the burst, as Avro's 256 KiB blocks do.
OUTAGE_FORMATS = [
    AVRO,
    dataclasses.replace(PARQUET, sink={**PARQUET.sink, "row_group_bytes": "64KiB"}),
    JSONL_ZSTD,
]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("fmt", OUTAGE_FORMATS, ids=lambda fmt: fmt.id)
def test_azurite_stopped_mid_window_loses_nothing_and_never_checkpoints_ahead(
    emulator, azurite_server, start_hubcap, tmp_path, fmt
):
    azurite = azurite_server
    checkpoints = tmp_path / "checkpoints"
    http_port = free_loopback_port()
    hubcap = start_hubcap(
        blob_config(
            emulator,
            azurite,
            tmp_path,
            http_listen=f"127.0.0.1:{http_port}",
            fmt=fmt,
            max_window="4s",
            block_size="64KiB",
        )
    )
    sampler = CheckpointSampler(lambda: read_checkpoints(checkpoints, emulator)).start()
    etags = EtagWatcher(azurite).start()
    ready = ReadyzSampler(http_port).start()
    streamer = Streamer(emulator).start()
    probe = azurite.quick_container()

    def partitions_with(names: Iterable[str]) -> set[str]:
        return {name.split("/")[2] for name in names if name.startswith("127.0.0.1/hub1/")}

    def committed_partitions() -> set[str]:
        try:
            return partitions_with(list_committed(probe))
        except Exception:  # noqa: BLE001 - poll again
            return set()

    try:
        # 1. steady state: every partition has committed windows and checkpoints
        hubcap.wait_for(
            lambda: committed_partitions() == set(PARTITIONS) and set(sampler.latest()) == set(PARTITIONS),
            lambda: f"a committed blob and a checkpoint for every partition (blobs: {committed_partitions()}, "
            f"checkpoints: {sampler.latest()})",
            timeout=90,
        )
        streamer.check()

        # 2. let every window close, then a burst opens a fresh window on every partition whose
        #    first Avro block (256 KiB) is staged as 64 KiB blocks; stop Azurite while they are open
        streamer.pause()
        quiet = last_sequence_numbers(emulator)
        hubcap.wait_for(
            lambda: checkpoints_reached(checkpoints, emulator, quiet),
            lambda: f"checkpoints at {quiet} before the burst (have {sampler.latest()})",
            timeout=60,
        )
        streamer.burst()
        streamer.resume()
        assert streamer.burst_sent.wait(60), "the burst was not sent"
        staged: set[str] = set()
        first_staged: Optional[float] = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            staged = partitions_with(list_uncommitted_names(probe))
            if staged and first_staged is None:
                first_staged = time.monotonic()
            if staged == set(PARTITIONS) or (first_staged is not None and time.monotonic() - first_staged > 1.0):
                break
            time.sleep(0.02)
        assert staged, "no window staged blocks after the burst: the outage would not hit an open block list"
        staged_names = list_uncommitted_names(probe)
        checkpoints_before_outage = sampler.latest()
        went_down = time.monotonic()
        stop_took = azurite.stop(signal.SIGTERM)
        down = time.monotonic()

        # 3. the outage: /readyz turns 503 naming a failing sink, checkpoints do not move past
        #    what is committed (checked against the blobs at the end)
        hubcap.wait_for(
            lambda: any(
                status == 503 and any("sink failing" in reason for reason in (body or {}).get("reasons", []))
                for _, status, body in ready.between(down, time.monotonic())
                if isinstance(body, dict)
            ),
            lambda: f"/readyz 503 with a failing sink (last: {ready.between(down, time.monotonic())[-1:]})",
            timeout=30,
            interval=0.1,
        )
        hubcap.wait_for(lambda: time.monotonic() - down >= OUTAGE_S, "the outage", timeout=OUTAGE_S + 5)
        streamer.check()
        readyz_during_outage = ready.between(down, time.monotonic())
        checkpoints_during_outage = sampler.between(went_down, time.monotonic())
        sent_before_restart = last_sequence_numbers(emulator)

        # 4. Azurite comes back on the same port and data directory; hubcap recovers by itself
        azurite.restart()
        back = time.monotonic()
        hubcap.wait_for(
            lambda: checkpoints_reached(checkpoints, emulator, sent_before_restart),
            lambda: f"checkpoints past {sent_before_restart} after Azurite came back (have {sampler.latest()})",
            timeout=90,
        )
        recovered = time.monotonic() - back
        # (the sink part of readiness; /readyz as a whole is the subject of the test below)
        hubcap.wait_for(
            lambda: not sink_failing(readyz(http_port)),
            lambda: f"/readyz without a failing sink again (now {readyz(http_port)})",
            30,
        )

        # 5. more events after the recovery (a second's worth), then the producer stops and
        #    hubcap catches up
        after_recovery = streamer.count() + STREAM_RATE
        hubcap.wait_for(
            lambda: streamer.count() >= after_recovery,
            lambda: f"{STREAM_RATE} more events sent after the recovery (sent {streamer.count()})",
            30,
        )
        sent = streamer.stop()
        final = last_sequence_numbers(emulator)
        hubcap.wait_for(
            lambda: checkpoints_reached(checkpoints, emulator, final),
            lambda: f"checkpoints at {final} (have {sampler.latest()})",
            timeout=90,
        )
        assert hubcap.process.poll() is None, "hubcap exited"
        pid_throughout = hubcap.pid
        hubcap.terminate_cleanly()
    finally:
        streamer.halt()
        for poller in (sampler, etags, ready):
            poller.stop()

    # ---- what is in Storage
    assert not sampler.failures and not etags.failures, (sampler.failures, etags.failures)
    assert etags.listings >= 20, f"the ETag watcher listed the container only {etags.listings} times"
    container = azurite.container()
    blobs = download_capture(container, tmp_path / "downloaded", fmt=fmt)
    etags.record({blob.name: blob.etag for blob in blobs})
    history = sampler.snapshot()
    problems: list[str] = []

    problems += [f"{blob.name} is not a whole {fmt.id} file: {blob.error}" for blob in blobs if blob.error]
    for blob in blobs:
        if blob.avro is not None:
            problems += check_capture_header(blob)
        problems += metadata_problems(blob)
    rewritten = etags.rewritten()
    problems += [f"blob {name} was written more than once: ETags {seen}" for name, seen in rewritten.items()]

    copies: dict[tuple[str, int], set[int]] = collections.defaultdict(set)
    count: collections.Counter = collections.Counter()
    for blob in blobs:
        for record in blob.records:
            position = (blob.partition_id, record["SequenceNumber"])
            number = record["Properties"].get("n")
            copies[position].add(number)
            count[position] += 1
            expected = sent.get(number)
            if expected is None:
                problems.append(f"{blob.name}: an event that was not sent: n={number}")
            elif record["Body"] != expected.body:
                problems.append(f"{blob.name}: event {number} has another body than was sent")
    inconsistent = {position: numbers for position, numbers in copies.items() if len(numbers) > 1}
    if inconsistent:
        problems.append(f"positions archived with different events: {list(inconsistent.items())[:5]}")
    archived = {number for numbers in copies.values() for number in numbers}
    missing = sorted(set(sent) - archived)
    if missing:
        bursts = sum(1 for number in missing if sent[number].properties.get("burst"))
        problems.append(f"{len(missing)} sent events are in no committed blob ({bursts} of them from the burst): {missing[:20]}")

    covered: dict[str, set[int]] = collections.defaultdict(set)
    for partition_id, sequence_number in copies:
        covered[partition_id].add(sequence_number)
    for partition_id, values in sorted(history.items()):
        safe = contiguous_end(covered[partition_id])
        ahead = [(round(moment - went_down, 2), value) for moment, value in values if value > safe]
        if ahead:
            problems.append(
                f"partition {partition_id}: checkpointed past what committed blobs hold: every event up to "
                f"{safe} is in a blob, yet checkpoints {ahead[:5]} (seconds after the stop, sequence number) "
                f"were written; the first event missing from every blob is {safe + 1}"
            )
    duplicates = sum(n - 1 for n in count.values() if n > 1)

    summary = (
        f"{len(sent)} events sent, {len(blobs)} blobs, {duplicates} duplicate copies, {etags.listings} listings "
        f"watched for rewrites; windows with staged blocks "
        f"at the stop: {sorted(staged_names)}; Azurite took {stop_took:.1f} s to stop, was down "
        f"{back - down:.1f} s; hubcap recovered {recovered:.1f} s after the restart; checkpoints before the "
        f"outage {checkpoints_before_outage}, during it {checkpoints_during_outage}; /readyz during the outage: "
        f"{sorted({(status, json.dumps(body)[:120]) for _, status, body in readyz_during_outage})[:4]}"
    )
    print(summary)
    assert pid_throughout == hubcap.pid
    if problems:
        raise ContractViolation(first_mismatches(problems, shown=15) + "\n" + summary)


# --------------------------------------------------------------------------------------------
# 3. a 200 MB window in bounded memory

PRELOAD_EVENT_SIZE = 65536
PRELOAD_EVENTS = 3300  # 216 MB of bodies: one full 200 MiB window and a small one after it
WINDOW_BYTES = 200 * 1024 * 1024
RSS_BOUND_BYTES = 120_000_000  # "120 MB"
# A window closes once a received batch (at most 256 events) takes it to max_window_bytes.
WINDOW_OVERSHOOT = 256 * (PRELOAD_EVENT_SIZE + 1024)


@pytest.mark.timeout(900)
def test_a_200_mb_window_keeps_rss_bounded(emulator, azurite_server, start_hubcap, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    http_port = free_loopback_port()
    hubcap = start_hubcap(
        blob_config(
            emulator,
            azurite_server,
            tmp_path,
            http_listen=f"127.0.0.1:{http_port}",
            max_window="10m",
            max_window_bytes="200MiB",
        )
    )
    rss = RssSampler(hubcap.pid).start()
    try:
        hubcap.wait_for(
            lambda: receiving(readyz(http_port)) == set(PARTITIONS),
            lambda: f"every partition receiving (now {readyz(http_port)})",
            60,
        )
        idle = rss.last()
        started = time.monotonic()
        answer = emulator.admin(
            "POST",
            "/preload",
            {"hub": "hub1", "partitions": ["0"], "events_per_partition": PRELOAD_EVENTS, "size": PRELOAD_EVENT_SIZE},
            timeout=300,
        )
        assert answer == {"events": PRELOAD_EVENTS}, answer
        last = PRELOAD_EVENTS - 1
        assert last_sequence_numbers(emulator) == {"0": last}

        container = azurite_server.quick_container()

        def full_window() -> Optional[Any]:
            try:
                listing = list_committed(container)
            except Exception:  # noqa: BLE001 - poll again
                return None
            full = [b for b in listing.values() if b.name.startswith("127.0.0.1/hub1/0/") and b.size >= WINDOW_BYTES]
            return full[0] if full else None

        hubcap.wait_for(
            lambda: full_window() is not None and checkpoints_reached(checkpoints, emulator, {"0": 0}),
            lambda: f"a committed blob of at least 200 MiB for partition 0 (have {sorted((b.name, b.size) for b in list_committed(container).values())}, "
            f"checkpoints {read_checkpoints(checkpoints, emulator)}, RSS {rss.last()})",
            timeout=600,
            interval=0.5,
        )
        drained = time.monotonic() - started
        peak_before_drain = rss.peak("VmHWM")
        # The rest of the backlog goes into a 10-minute window: once hubcap has received all of
        # it (its credit holds only about prefetch_bytes ahead), SIGTERM commits it.
        hubcap.wait_for(
            lambda: events_received(http_port, "0") == PRELOAD_EVENTS,
            lambda: f"hubcap received all {PRELOAD_EVENTS} events (now {events_received(http_port, '0')})",
            timeout=120,
        )
        hubcap.terminate_cleanly(timeout=120)
    finally:
        rss.stop()

    peak_rss = max(rss.peak("VmRSS"), rss.peak("VmHWM"))  # KiB
    report = (
        f"peak RSS (VmHWM) {peak_rss} KiB = {mib(peak_rss)} = {peak_rss * 1024 / 1e6:.1f} MB "
        f"(before SIGTERM: {mib(peak_before_drain)}); "
        f"idle before the preload: VmRSS {mib(idle.get('VmRSS', 0))}, growth {mib(peak_rss - idle.get('VmRSS', 0))}; "
        f"200 MiB window committed {drained:.1f} s after the preload started; "
        f"VmRSS over time (s, KiB): {rss.series()}"
    )
    print(report)

    blobs = download_capture(azurite_server.container(), tmp_path / "downloaded", read=False)
    partition_0 = sorted((b for b in blobs if b.partition_id == "0"), key=lambda b: int(b.metadata["firstsequencenumber"]))
    assert {b.partition_id for b in blobs} == {"0"}, [b.name for b in blobs]
    big = partition_0[0]
    assert WINDOW_BYTES <= big.size <= WINDOW_BYTES + WINDOW_OVERSHOOT, (
        f"the first window's blob is {big.size} bytes; expected 200 MiB plus at most one receive batch"
    )
    assert big.metadata["firstsequencenumber"] == "0"
    # committed as a block list of 4 MiB blocks (the default block_size)
    assert len(big.block_sizes) >= 50 and all(size == 4 * 1024 * 1024 for size in big.block_sizes[:-1]), (
        f"{big.name}: blocks {big.block_sizes[:5]}... ({len(big.block_sizes)} blocks)"
    )

    # every preloaded event, exactly once, in order, with its bytes
    sequence_numbers: list[int] = []
    for blob in partition_0:
        avro, error, records = read_capture_blob(blob.path)
        assert error is None, f"{blob.name}: {error}"
        assert avro.metadata.get("avro.schema") == capture_schema_text()
        numbers = [record["SequenceNumber"] for record in records]
        assert blob.metadata["firstsequencenumber"] == str(numbers[0])
        assert blob.metadata["lastsequencenumber"] == str(numbers[-1])
        assert blob.metadata["eventcount"] == str(len(numbers))
        sample = {numbers[0], numbers[-1], numbers[len(numbers) // 2]}
        for record in records:
            assert len(record["Body"]) == PRELOAD_EVENT_SIZE, (blob.name, record["SequenceNumber"])
            if record["SequenceNumber"] in sample:
                assert record["Body"] == synthetic_body(record["SequenceNumber"], PRELOAD_EVENT_SIZE), (
                    f"{blob.name}: the body of event {record['SequenceNumber']} differs from the preloaded one"
                )
        sequence_numbers += numbers
        del avro, records
    assert sequence_numbers == list(range(PRELOAD_EVENTS)), (
        f"{len(sequence_numbers)} events in {len(partition_0)} blobs, expected 0..{PRELOAD_EVENTS - 1} once each"
    )

    if peak_rss * 1024 >= RSS_BOUND_BYTES:
        raise RssBoundExceeded(
            f"hubcap's resident memory peaked at {peak_rss * 1024 / 1e6:.1f} MB ({mib(peak_rss)}) while it "
            f"wrote a 200 MiB window; bound {RSS_BOUND_BYTES / 1e6:.0f} MB: {report}"
        )


# --------------------------------------------------------------------------------------------
# 4. readiness while everything works


@pytest.mark.timeout(120)
def test_readyz_stays_ready_while_every_partition_receives(emulator, azurite_server, start_hubcap, tmp_path):
    checkpoints = tmp_path / "checkpoints"
    http_port = free_loopback_port()
    hubcap = start_hubcap(
        blob_config(emulator, azurite_server, tmp_path, http_listen=f"127.0.0.1:{http_port}", max_window="1s")
    )
    streamer = Streamer(emulator, rate=200).start()
    ready = ReadyzSampler(http_port)
    try:
        hubcap.wait_for(
            lambda: receiving(readyz(http_port)) == set(PARTITIONS) and readyz(http_port)[0] == 200,
            lambda: f"/readyz 200 with every partition receiving (now {readyz(http_port)})",
            60,
        )
        # freshness is 3 x update_interval (1 s here): watch three times that long
        ready.start()
        started = time.monotonic()
        before = read_checkpoints(checkpoints, emulator)
        hubcap.wait_for(lambda: time.monotonic() - started >= 9, "9 s of sampling", timeout=15)
        ready.stop()
        after = read_checkpoints(checkpoints, emulator)
        streamer.stop()
    finally:
        streamer.halt()
    hubcap.terminate_cleanly()

    progressed = [
        pid
        for pid in PARTITIONS
        if (after.get(pid) or {}).get("sequencenumber", -1) > (before.get(pid) or {}).get("sequencenumber", -1)
    ]
    assert progressed == PARTITIONS, f"every partition should checkpoint while sampled: {before} -> {after}"
    samples = ready.between(started, time.monotonic())
    assert len(samples) >= 40, f"only {len(samples)} /readyz samples"
    not_ready = [(round(moment - started, 1), status, body) for moment, status, body in samples if status != 200]
    if not_ready:
        first = not_ready[0]
        raise NotReady(
            f"{len(not_ready)} of {len(samples)} /readyz answers were not 200 while every partition received "
            f"and checkpointed (checkpoints {before} -> {after}); the first, {first[0]} s in: {first[1]} "
            f"{json.dumps(first[2])[:600]}"
        )
