"""Blob Storage that misbehaves rather than disappears: hubcap with the `avro_blob` sink and the
`azure_blob` checkpoint store, both through a fault-injecting proxy in front of a real Azurite
(blob_faults.BlobFaultProxy). One run goes through the faults in phases while events keep coming:
throttling with Retry-After, 500s, writes applied and then answered with an error or a cut
connection, connections cut before the write, and an answer held back past hubcap's timeouts.

Judged at the end against Azurite itself (not through the proxy): every event archived exactly
once (`hubcap verify` and a fastavro read), no checkpoint ahead of the archive, no partition
given up as "lost" because a retry found its own earlier write, and the proxy's log shows each
fault happened and what hubcap did next.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Optional

import pytest

pytest.register_assert_rewrite("blob_faults", "blob_support")

from balancing_support import BlobRecords, ownership_log_events  # noqa: E402
from blob_faults import BlobFaultProxy, Fault, Seen  # noqa: E402
from blob_support import ReadyzSampler, download_capture  # noqa: E402
from chaos_support import run_verify  # noqa: E402
from conftest import emulator_binary, free_loopback_port, hubcap_binary, storage_connection_string  # noqa: E402
from disk_support import metric_total  # noqa: E402
from hubcap_process import (  # noqa: E402
    hubcap_config,
    hubcap_is_built,
    last_sequence_numbers,
    make_workload,
    producer_client,
    send_workload,
)

pytest_plugins = ["hubcap_process", "blob_support"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

PARTITIONS = ["0", "1", "2", "3"]
ARCHIVE = "capture"
RECORDS = "checkpoints"
# What the test's throttling answers ask for; the SDK and hubcap's backoff must both wait it.
RETRY_AFTER_S = 2
# hubcap's storage read timeout is 30 s: an answer held back longer than that is given up on.
HELD_BACK_S = 35
COMMITS = ("put_blob", "put_block_list")


def config(emulator, proxy: BlobFaultProxy, http_port: int) -> str:
    through_proxy = storage_connection_string(proxy.endpoint)
    return hubcap_config(
        emulator,
        checkpoint_store={"type": "azure_blob", "connection_string": through_proxy, "container": RECORDS},
        # Long enough that a renewal held back past the timeouts does not expire the claim:
        # the subject is the write's answer, not expiry.
        load_balancing={"ownership_expiration": "90s"},
        sink={"type": "avro_blob", "connection_string": through_proxy, "container": ARCHIVE, "max_window": "1s"},
        http_listen=f"127.0.0.1:{http_port}",
        log={"format": "json"},
    )


class Feed:
    """Sends numbered events to every partition, a batch at a time, and remembers them."""

    def __init__(self, emulator) -> None:
        self.emulator = emulator
        self.next_number = 0
        self.producer = producer_client(emulator)

    def send(self, per_partition: int = 20) -> dict[str, int]:
        events = make_workload(per_partition * len(PARTITIONS), start=self.next_number, prefix="faults", padding=200)
        self.next_number += len(events)
        for index, event in enumerate(events):
            event.partition_key, event.partition_id = None, PARTITIONS[index // per_partition]
        send_workload(self.emulator, events, self.producer)
        return last_sequence_numbers(self.emulator, PARTITIONS)

    def close(self) -> None:
        self.producer.close()


def checkpointed(records: BlobRecords, targets: dict[str, int], partitions=PARTITIONS) -> bool:
    try:
        have = records.checkpoint_sequence_numbers()
    except Exception:  # noqa: BLE001 - poll again
        return False
    return all((have.get(pid) if have.get(pid) is not None else -1) >= targets[pid] for pid in partitions)


def gaps_after(proxy: BlobFaultProxy, answered: list[Seen]) -> dict[str, float]:
    """For each request answered with a Retry-After, how long until the same request came again
    (keyed by what it was and when)."""
    gaps = {}
    for seen in answered:
        later = proxy.after(seen)
        if later:
            gaps[f"{seen.op} {seen.kind} {seen.partition} at {seen.at:.2f}"] = later[0].at - seen.at
    return gaps


@pytest.mark.timeout(300)
def test_storage_errors_throttling_and_ambiguous_writes_lose_nothing_and_duplicate_nothing(
    emulator, azurite_server, start_hubcap, tmp_path
):
    azurite = azurite_server
    for name in (ARCHIVE, RECORDS):
        azurite.service().create_container(name)
    proxy = BlobFaultProxy(azurite.port).start()
    records = BlobRecords(azurite, RECORDS, emulator)
    http_port = free_loopback_port()
    config_text = config(emulator, proxy, http_port)
    feed = Feed(emulator)
    ready = ReadyzSampler(http_port).start()
    checkpoint_history: list[tuple[float, dict[str, Optional[int]]]] = []
    hubcap = start_hubcap(config_text)
    try:
        targets = feed.send()
        hubcap.wait_for(
            lambda: checkpointed(records, targets),
            lambda: f"checkpoints at {targets} (have {records.checkpoint_sequence_numbers()})",
            timeout=60,
        )

        # 1. throttling: 429 and 503 ServerBusy with Retry-After, more answers than the client's
        #    own retries, on checkpoint writes (partition 0) and ownership renewals (partition 1)
        throttled_checkpoint = proxy.inject(Fault(
            "status", op="set_metadata", kind="checkpoint", partition="0", status=429, code="TooManyRequests",
            retry_after=RETRY_AFTER_S, times=4,
        ))
        throttled_claim = proxy.inject(Fault(
            "status", op="set_metadata", kind="ownership", partition="1", status=503, code="ServerBusy",
            retry_after=RETRY_AFTER_S, times=4,
        ))
        targets = feed.send()
        hubcap.wait_for(
            lambda: throttled_checkpoint.hits == 4 and throttled_claim.hits == 4 and checkpointed(records, targets),
            lambda: f"4 throttled checkpoint writes ({throttled_checkpoint.hits}), 4 throttled renewals "
            f"({throttled_claim.hits}) and checkpoints at {targets} (have {records.checkpoint_sequence_numbers()})",
            timeout=60,
        )

        # 2. 500s on partition 2's archive commits, more than one operation's retries: the sink
        #    fails (readyz, metric), nothing is checkpointed past the archive, hubcap retries
        failing_commits = proxy.inject(Fault("status", op=COMMITS, kind="archive", partition="2", times=6))
        errors_before = metric_total(http_port, "hubcap_sink_errors_total", error_type="blob") or 0
        failing_from = time.monotonic()
        targets = feed.send()
        hubcap.wait_for(
            lambda: failing_commits.hits == 6 and checkpointed(records, targets),
            lambda: f"6 failed commits ({failing_commits.hits}) and checkpoints at {targets} "
            f"(have {records.checkpoint_sequence_numbers()})",
            timeout=60,
        )
        failing_until = time.monotonic()
        sink_errors = (metric_total(http_port, "hubcap_sink_errors_total", error_type="blob") or 0) - errors_before

        # 3. writes applied, then answered 500 (the client's retry finds its own write): on an
        #    archive commit (partition 1), a checkpoint (partition 2) and a renewal (partition 3)
        applied = [
            proxy.inject(Fault("apply_then_fail", op=COMMITS, kind="archive", partition="1")),
            proxy.inject(Fault("apply_then_fail", op="set_metadata", kind="checkpoint", partition="2")),
            proxy.inject(Fault("apply_then_fail", op="set_metadata", kind="ownership", partition="3")),
        ]
        targets = feed.send()
        hubcap.wait_for(
            lambda: all(f.hits == 1 for f in applied) and checkpointed(records, targets),
            lambda: f"the applied-then-failed writes ({[f.hits for f in applied]}) and checkpoints at {targets} "
            f"(have {records.checkpoint_sequence_numbers()})",
            timeout=60,
        )

        # 4. a checkpoint write whose answer is held back past the timeouts (partition 0), while
        #    connections are cut: before an archive commit (partition 3) and after a checkpoint
        #    write was applied (partition 1)
        held = proxy.inject(Fault("delay", op="set_metadata", kind="checkpoint", partition="0", delay=HELD_BACK_S))
        cut = [
            proxy.inject(Fault("drop", op=COMMITS, kind="archive", partition="3")),
            proxy.inject(Fault("apply_then_drop", op="set_metadata", kind="checkpoint", partition="1")),
        ]
        targets = feed.send()
        hubcap.wait_for(
            lambda: all(f.hits == 1 for f in cut) and checkpointed(records, targets, ["1", "2", "3"]),
            lambda: f"the cut connections ({[f.hits for f in cut]}) and checkpoints at {targets} "
            f"(have {records.checkpoint_sequence_numbers()})",
            timeout=60,
        )
        hubcap.wait_for(
            lambda: held.hits == 1 and checkpointed(records, targets),
            lambda: f"partition 0's held-back checkpoint ({held.hits}) given up on and written again: checkpoints "
            f"at {targets} (have {records.checkpoint_sequence_numbers()})",
            timeout=HELD_BACK_S + 45,
        )

        # the end: a last batch, with no fault armed
        targets = feed.send()
        hubcap.wait_for(
            lambda: checkpointed(records, targets),
            lambda: f"checkpoints at {targets} (have {records.checkpoint_sequence_numbers()})",
            timeout=60,
        )
        checkpoint_history.append((time.monotonic(), records.checkpoint_sequence_numbers()))
        assert hubcap.process.poll() is None, "hubcap exited"
        hubcap.terminate_cleanly()
    finally:
        ready.stop()
        feed.close()
        proxy.stop()

    sent = feed.next_number
    problems: list[str] = []

    # ---- the archive, read from Azurite directly
    blobs = download_capture(azurite.container(ARCHIVE), tmp_path / "downloaded")
    copies: collections.Counter = collections.Counter()
    for blob in blobs:
        if blob.error:
            problems.append(f"{blob.name} does not read whole: {blob.error}")
        for record in blob.records:
            copies[(blob.partition_id, record["SequenceNumber"])] += 1
    last = last_sequence_numbers(emulator, PARTITIONS)
    missing = {pid: [s for s in range(last[pid] + 1) if copies[(pid, s)] == 0] for pid in PARTITIONS}
    missing = {pid: seqs for pid, seqs in missing.items() if seqs}
    duplicated = {key: n for key, n in copies.items() if n > 1}
    if missing:
        problems.append(f"events in no blob: { {pid: seqs[:10] for pid, seqs in missing.items()} }")
    if duplicated:
        problems.append(f"events in more than one blob: {dict(list(duplicated.items())[:10])}")
    if sum(copies.values()) != sent:
        problems.append(f"{sum(copies.values())} records archived for {sent} events sent")

    final = checkpoint_history[-1][1]
    for pid in PARTITIONS:
        if final.get(pid) is None or final[pid] > last[pid] or any(copies[(pid, s)] == 0 for s in range(final[pid] + 1)):
            problems.append(f"partition {pid}: checkpoint {final.get(pid)} is not covered by the archive (last {last[pid]})")

    verify_config = tmp_path / "verify.toml"
    verify_config.write_text(config_text.replace(proxy.endpoint, azurite.blob_endpoint))
    verify = run_verify(verify_config)
    if verify.exit_code != 0 or not verify.document or verify.document.get("ok") is not True:
        problems.append(f"hubcap verify exited {verify.exit_code}: {verify.stdout[:600]} {verify.stderr[-600:]}")

    # ---- what hubcap did with each fault
    lost = [e for e in ownership_log_events(hubcap) if e.get("event") in ("lost", "ownership_lost")]
    if lost:
        problems.append(f"partitions given up although nobody else wrote their records: {lost[:4]}")

    throttled = proxy.seen(status=429) + proxy.seen(status=503)
    gaps = gaps_after(proxy, throttled)
    if len(gaps) < 7 or min(gaps.values()) < RETRY_AFTER_S - 0.1:
        problems.append(f"after a Retry-After of {RETRY_AFTER_S} s the request came again after {gaps} s")

    if sink_errors < 2:
        problems.append(f"hubcap_sink_errors_total{{error_type=\"blob\"}} grew by {sink_errors} over 6 failed commits")
    named = [
        body for _, status, body in ready.between(failing_from, failing_until)
        if status == 503 and isinstance(body, dict) and "partition 2: sink failing (blob)" in body.get("reasons", [])
    ]
    if not named:
        problems.append("/readyz never answered 503 naming partition 2's failing sink while its commits failed")

    for fault in applied + cut[1:]:
        first = next(s for s in proxy.seen(fault=fault.action, kind=fault.kind, partition=fault.partition))
        retried = proxy.after(first)
        if not retried or retried[0].upstream_status not in (409, 412):
            problems.append(
                f"{fault.action} on {fault.kind} {fault.partition}: the retry was answered "
                f"{[(s.status, s.error_code) for s in retried[:2]]}, not the conflict with its own write"
            )

    summary = (
        f"{sent} events, {len(blobs)} blobs; Retry-After gaps {sorted(round(g, 2) for g in gaps.values())}; "
        f"{sink_errors:g} blob sink errors; faults seen: "
        f"{collections.Counter((s.fault, s.kind, s.status) for s in proxy.seen() if s.fault)}"
    )
    print(summary)
    assert not problems, "\n".join(problems) + "\n" + summary
