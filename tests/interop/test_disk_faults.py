"""The `file` sink on a real small filesystem (a tmpfs) that fills up or turns read-only while
hubcap runs, for every file format: nothing is committed or checkpointed while the disk refuses
writes, operators see why (`/readyz`, `hubcap_sink_errors_total{error_type=...}`), no partial file
is ever visible, staging stays bounded, and once the disk is usable again hubcap carries on by
itself and the archive holds every event exactly once.

The archive tests keep the checkpoint store off the small disk, so what they test is the archive
alone; the last test puts the `file` checkpoint store on it instead, with the archive elsewhere.
"""

from __future__ import annotations

import collections
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("hubcap_process", "archive_formats", "disk_support")

from archive_formats import AVRO, JSONL_ZSTD, PARQUET, ArchiveFormat  # noqa: E402
from blob_support import readyz  # noqa: E402
from conftest import emulator_binary, free_loopback_port, hubcap_binary  # noqa: E402
from disk_support import FaultDisk, SmallDisk, metric_total, rss_bytes  # noqa: E402
from hubcap_process import (  # noqa: E402
    STAGING_DIR,
    hubcap_config,
    hubcap_is_built,
    last_sequence_numbers,
    make_workload,
    read_checkpoints,
    send_workload,
    staging_files,
)

pytest_plugins = ["hubcap_process"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

FORMATS = [AVRO, PARQUET, JSONL_ZSTD]
DISK_SIZE = 8 << 20
EVENTS = 1_500  # per phase; ~250 bytes each: well inside the disk when it has room


@pytest.fixture
def small_disk(tmp_path):
    disk = SmallDisk(tmp_path / "disk", DISK_SIZE)
    yield disk
    disk.unmount()


def disk_config(emulator, tmp_path: Path, disk: SmallDisk, fmt: ArchiveFormat, http_port: int) -> str:
    sink: dict[str, Any] = {"type": "avro_file"} if fmt is AVRO else {"type": "file", **fmt.sink}
    return hubcap_config(
        emulator,
        checkpoints=tmp_path / "checkpoints",
        sink={**sink, "path": str(disk.mountpoint / "capture"), "max_window": "1s"},
        http_listen=f"127.0.0.1:{http_port}",
    )


def file_digests(fmt: ArchiveFormat, root: Path) -> dict[Path, str]:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in fmt.committed(root)}


def failing_reasons(port: int, what: str) -> list[str]:
    """The /readyz reasons naming `what` ("sink failing", "checkpoint failing")."""
    status, body = readyz(port)
    if status != 503 or not isinstance(body, dict):
        return []
    return [reason for reason in body.get("reasons", []) if what in reason]


def wait_until_operators_see(hubcap, port: int, what: str, metric: str, error_type: str) -> list[str]:
    """Waits for /readyz to name a partition's `what` with `error_type` and for `metric` to count
    that error type; returns the reasons /readyz gave."""
    hubcap.wait_for(
        lambda: any(f"({error_type})" in reason for reason in failing_reasons(port, what))
        and (metric_total(port, metric, error_type=error_type) or 0) > 0,
        lambda: f"/readyz 503 naming a partition's {what} ({error_type}) and "
        f"{metric}{{error_type={error_type!r}}} > 0 (readyz: {readyz(port)})",
        timeout=30,
    )
    return failing_reasons(port, what)


def checkpointed(tmp_path: Path, emulator) -> dict[str, int]:
    return {pid: record["sequencenumber"] for pid, record in read_checkpoints(tmp_path / "checkpoints", emulator).items()}


def refused_phase(hubcap, fmt, root, port, error_type, checkpoints_now, hold=3.0):
    """While the disk refuses writes: waits until operators can see it, then watches for `hold`
    seconds that nothing is committed or checkpointed and staging stays bounded. Returns what
    /readyz said."""
    committed = file_digests(fmt, root)
    checkpoints_before = checkpoints_now()
    reasons = wait_until_operators_see(hubcap, port, "sink failing", "hubcap_sink_errors_total", error_type)
    held_until = time.monotonic() + hold
    most_staged: dict[str, int] = collections.Counter()
    while time.monotonic() < held_until:
        per_partition = collections.Counter(path.name.split("-", 1)[0] for path in staging_files(root))
        for partition, count in per_partition.items():
            most_staged[partition] = max(most_staged[partition], count)
        time.sleep(0.02)
    too_many = {p: n for p, n in most_staged.items() if n > 1}
    assert not too_many, f"more than one staging file per partition while the disk refused writes: {too_many}"
    assert file_digests(fmt, root) == committed, "a window was committed while the disk refused writes"
    assert checkpoints_now() == checkpoints_before, (
        f"checkpoints moved while nothing could be committed: {checkpoints_before} -> {checkpoints_now()}"
    )
    return reasons


def assert_archive_exact(fmt: ArchiveFormat, root: Path, sent) -> None:
    """Every committed file whole and non-empty, every event in exactly one place."""
    copies: dict[int, list[tuple[str, int]]] = collections.defaultdict(list)
    for path in fmt.committed(root):
        assert path.stat().st_size > 0, f"{path} is empty"
        for record in fmt.capture_records(path):
            number = record["Properties"]["n"]
            copies[number].append((path.name, record["SequenceNumber"]))
            assert record["Body"] == sent[number].body, f"{path}: event {number} has another body"
    missing = sorted(set(sent) - set(copies))
    assert not missing, f"{len(missing)} events not in the archive: {missing[:20]}"
    twice = {n: where for n, where in copies.items() if len(where) > 1}
    assert not twice, f"{len(twice)} events archived more than once: {list(twice.items())[:5]}"
    visible = [path for path in root.rglob("*" + fmt.extension) if STAGING_DIR in path.relative_to(root).parts]
    assert not visible, f"staging files named like committed files: {visible}"


def recover(hubcap, emulator, tmp_path, port) -> None:
    last = last_sequence_numbers(emulator)
    hubcap.wait_for_checkpoints(tmp_path / "checkpoints", emulator, last, timeout=90)
    hubcap.wait_for(
        lambda: readyz(port)[0] == 200,
        lambda: f"/readyz 200 again after the disk recovered (readyz: {readyz(port)})",
        timeout=30,
    )


def start_and_checkpoint(emulator, start_hubcap, tmp_path, small_disk, fmt):
    """hubcap archiving onto the small disk, with a first batch archived and checkpointed:
    (archive root, http port, hubcap, the events sent)."""
    root = small_disk.mountpoint / "capture"
    port = free_loopback_port()
    hubcap = start_hubcap(disk_config(emulator, tmp_path, small_disk, fmt, port))
    before = make_workload(EVENTS, prefix="before", padding=150)
    send_workload(emulator, before)
    hubcap.wait_for_checkpoints(tmp_path / "checkpoints", emulator, last_sequence_numbers(emulator), timeout=60)
    return root, port, hubcap, before


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.id)
def test_a_full_disk_commits_nothing_and_hubcap_recovers_by_itself_once_space_is_freed(
    emulator, start_hubcap, tmp_path, small_disk, fmt
):
    root, port, hubcap, before = start_and_checkpoint(emulator, start_hubcap, tmp_path, small_disk, fmt)
    committed_before = file_digests(fmt, root)

    filled = small_disk.fill()
    during = make_workload(EVENTS, start=EVENTS, prefix="while full", padding=150)
    send_workload(emulator, during)
    reasons = refused_phase(hubcap, fmt, root, port, "no_space", lambda: checkpointed(tmp_path, emulator))
    print(f"filled {filled} bytes; /readyz said {reasons}")

    small_disk.empty()
    after = make_workload(EVENTS, start=2 * EVENTS, prefix="after", padding=150)
    send_workload(emulator, after)
    recover(hubcap, emulator, tmp_path, port)
    # Once everything is committed no window is open: all space in use is visible files. A
    # staging file deleted while still open (or one never deleted) would show here.
    hubcap.wait_for(
        lambda: not staging_files(root) and small_disk.used_bytes() == small_disk.file_bytes(),
        lambda: f"the disk's used space back to what its files take: used {small_disk.used_bytes()}, "
        f"files {small_disk.file_bytes()}, staging {staging_files(root)}",
        timeout=10,
    )
    hubcap.terminate_cleanly()

    for path, digest in committed_before.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} was rewritten"
    sent = {event.number: event for event in before + during + after}
    assert_archive_exact(fmt, root, sent)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda fmt: fmt.id)
def test_a_disk_remounted_read_only_commits_nothing_and_hubcap_recovers_once_it_is_writable(
    emulator, start_hubcap, tmp_path, small_disk, fmt
):
    root, port, hubcap, before = start_and_checkpoint(emulator, start_hubcap, tmp_path, small_disk, fmt)
    # Every window is committed and none is open (no events arrive): nothing is open for
    # writing, so the kernel lets the filesystem go read-only.
    small_disk.remount("ro")
    committed_before = file_digests(fmt, root)

    during = make_workload(EVENTS, start=EVENTS, prefix="while read-only", padding=150)
    send_workload(emulator, during)
    reasons = refused_phase(hubcap, fmt, root, port, "read_only", lambda: checkpointed(tmp_path, emulator))
    print(f"/readyz said {reasons}")

    small_disk.remount("rw")
    recover(hubcap, emulator, tmp_path, port)
    hubcap.terminate_cleanly()

    assert not staging_files(root), f"staging files left after a clean stop: {staging_files(root)}"
    for path, digest in committed_before.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} was rewritten"
    sent = {event.number: event for event in before + during}
    assert_archive_exact(fmt, root, sent)


# --------------------------------------------------------------------------------------------
# the file checkpoint store on the small disk (the archive on a healthy one)


def store_temp_files(checkpoints: Path) -> list[Path]:
    return [path for path in checkpoints.rglob("*") if ".tmp-" in path.name]


@pytest.mark.parametrize("fault", ["no_space", "read_only"])
def test_a_checkpoint_store_disk_that_refuses_writes_holds_checkpoints_back_and_recovers(
    emulator, start_hubcap, tmp_path, small_disk, fault
):
    """The file checkpoint store on a disk that fills up or turns read-only: the archive goes on
    (its disk is fine) but no checkpoint moves, operators see which partitions cannot
    checkpoint and why, no partition is given up, and once the disk takes writes again every
    checkpoint catches up by itself, with each event archived exactly once."""
    checkpoints = small_disk.mountpoint / "checkpoints"
    root = tmp_path / "capture"
    port = free_loopback_port()
    hubcap = start_hubcap(
        hubcap_config(
            emulator,
            checkpoints=checkpoints,
            sink={"type": "avro_file", "path": str(root), "max_window": "1s"},
            http_listen=f"127.0.0.1:{port}",
        )
    )
    before = make_workload(EVENTS, prefix="before", padding=150)
    send_workload(emulator, before)
    hubcap.wait_for_checkpoints(checkpoints, emulator, last_sequence_numbers(emulator), timeout=60)
    if fault == "no_space":
        small_disk.fill()
    else:
        small_disk.remount("ro")

    during = make_workload(EVENTS, start=EVENTS, prefix="while refused", padding=150)
    send_workload(emulator, during)
    wait_until_operators_see(hubcap, port, "checkpoint failing", "hubcap_checkpoint_errors_total", fault)
    checkpoints_before = read_checkpoints(checkpoints, emulator)
    held_until = time.monotonic() + 3.0
    while time.monotonic() < held_until:
        assert read_checkpoints(checkpoints, emulator) == checkpoints_before, "a checkpoint moved on a refusing disk"
        assert not store_temp_files(checkpoints), f"temporary records left: {store_temp_files(checkpoints)}"
        time.sleep(0.05)
    assert hubcap.process.poll() is None, "hubcap exited while its checkpoint disk refused writes"

    if fault == "no_space":
        small_disk.empty()
    else:
        small_disk.remount("rw")
    hubcap.wait_for_checkpoints(checkpoints, emulator, last_sequence_numbers(emulator), timeout=90)
    hubcap.wait_for(
        lambda: readyz(port)[0] == 200,
        lambda: f"/readyz 200 again after the disk recovered (readyz: {readyz(port)})",
        timeout=30,
    )
    hubcap.terminate_cleanly()
    assert not store_temp_files(checkpoints), f"temporary records left: {store_temp_files(checkpoints)}"
    sent = {event.number: event for event in before + during}
    assert_archive_exact(AVRO, root, sent)


# --------------------------------------------------------------------------------------------
# a disk that fails (EIO) or is slow: the archive on a FUSE passthrough mount


@pytest.fixture
def fault_disk(tmp_path):
    disk = FaultDisk(tmp_path / "fuse")
    yield disk
    disk.stop()


def fault_disk_config(emulator, tmp_path: Path, disk: FaultDisk, http_port: int, **sink: Any) -> str:
    return hubcap_config(
        emulator,
        checkpoints=tmp_path / "checkpoints",
        sink={"type": "avro_file", "path": str(disk.mountpoint / "capture"), "max_window": "1s", **sink},
        http_listen=f"127.0.0.1:{http_port}",
    )


def test_an_fsync_that_fails_with_eio_never_commits_its_file_and_hubcap_recovers(
    emulator, start_hubcap, tmp_path, fault_disk
):
    """Every fsync answers EIO for a while. After a failed fsync Linux may have dropped the
    file's dirty pages and report a later fsync as success, so the staging file must never be
    fsynced again or committed: the window is dropped and rebuilt from the events. Meanwhile
    nothing is committed or checkpointed and operators see `sink failing (io_error)`."""
    root = fault_disk.mountpoint / "capture"
    port = free_loopback_port()
    hubcap = start_hubcap(fault_disk_config(emulator, tmp_path, fault_disk, port))
    before = make_workload(EVENTS, prefix="before", padding=150)
    send_workload(emulator, before)
    hubcap.wait_for_checkpoints(tmp_path / "checkpoints", emulator, last_sequence_numbers(emulator), timeout=60)
    committed_before = file_digests(AVRO, root)

    fault_disk.set(eio=("fsync",))
    during = make_workload(EVENTS, start=EVENTS, prefix="while failing", padding=150)
    send_workload(emulator, during)
    reasons = refused_phase(hubcap, AVRO, root, port, "io_error", lambda: checkpointed(tmp_path, emulator))
    print(f"/readyz said {reasons}")

    fault_disk.set()
    recover(hubcap, emulator, tmp_path, port)
    hubcap.terminate_cleanly()

    operations = fault_disk.operations()
    failed = {op[1] for op in operations if op[0] == "fsync" and op[-1] == "EIO"}
    assert failed, "no fsync failed: the fault was not exercised"
    for index, op in enumerate(operations):
        if op[0] == "fsync" and op[-1] == "EIO":
            later = [o for o in operations[index + 1 :] if o[1] == op[1] and o[0] in ("fsync", "link", "rename")]
            assert not later, f"{op[1]} was used again after its fsync failed: {later}"
    assert not staging_files(root), f"staging files left after a clean stop: {staging_files(root)}"
    for path, digest in committed_before.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} was rewritten"
    assert_archive_exact(AVRO, root, {event.number: event for event in before + during})


SLOW_FSYNC = 2.0
PREFETCH = 300
WINDOW_BYTES = 64 << 10


def test_a_slow_disk_holds_receiving_back_and_loses_nothing(emulator, start_hubcap, tmp_path, fault_disk):
    """Every fsync takes seconds while far more events wait in the hub than hubcap may hold:
    it stops taking events while its windows wait on the disk (events received but not
    committed stay within the prefetch and one window per partition), its memory stays flat,
    and once the disk is quick again everything is archived exactly once."""
    root = fault_disk.mountpoint / "capture"
    port = free_loopback_port()
    hubcap = start_hubcap(
        hubcap_config(
            emulator,
            checkpoints=tmp_path / "checkpoints",
            sink={
                "type": "avro_file",
                "path": str(root),
                "max_window": "1s",
                "max_window_bytes": f"{WINDOW_BYTES // 1024}KiB",
            },
            eventhub={"prefetch": PREFETCH},
            http_listen=f"127.0.0.1:{port}",
        )
    )
    before = make_workload(400, prefix="before", padding=1000)
    send_workload(emulator, before)
    hubcap.wait_for_checkpoints(tmp_path / "checkpoints", emulator, last_sequence_numbers(emulator), timeout=60)
    rss_before = rss_bytes(hubcap.pid)

    fault_disk.set(fsync_delay=SLOW_FSYNC)
    during = make_workload(12_000, start=400, prefix="while slow", padding=1000)
    send_workload(emulator, during)
    partitions = len(last_sequence_numbers(emulator))
    # Per partition: the prefetched events, the window waiting on its fsync and the one
    # being filled (a window closes at WINDOW_BYTES: under 70 events of ~1 KB).
    bound = partitions * (PREFETCH + 2 * 70 + 50)
    most_held, most_rss = 0, rss_before
    held_until = time.monotonic() + 4 * SLOW_FSYNC
    while time.monotonic() < held_until:
        received = metric_total(port, "hubcap_events_received_total") or 0
        committed = metric_total(port, "hubcap_events_committed_total") or 0
        most_held = max(most_held, int(received - committed))
        most_rss = max(most_rss, rss_bytes(hubcap.pid))
        time.sleep(0.1)
    received = metric_total(port, "hubcap_events_received_total") or 0
    print(f"held at most {most_held} events (bound {bound}); rss {rss_before >> 20} -> {most_rss >> 20} MiB; "
          f"received {received:.0f} of {len(before) + len(during)}")
    assert most_held <= bound, f"{most_held} events received but not committed, more than {bound}"
    assert received < len(before) + len(during) - bound, "hubcap took every event in while its disk was slow"
    assert most_rss - rss_before < 64 << 20, f"memory grew {(most_rss - rss_before) >> 20} MiB while the disk was slow"

    fault_disk.set()
    hubcap.wait_for_checkpoints(tmp_path / "checkpoints", emulator, last_sequence_numbers(emulator), timeout=120)
    hubcap.terminate_cleanly()
    assert_archive_exact(AVRO, root, {event.number: event for event in before + during})
