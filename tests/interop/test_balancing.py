"""Several hubcap instances sharing one consumer group through the Azure Blob checkpoint store
(Azurite), reading the emulator: how they split the partitions, how they take over from an
instance that is killed or stopped, and that a former owner never checkpoints a partition it lost.

Every instance runs with update_interval 1 s and ownership_expiration 3 s, the stdout sink with
1 s windows, and its own owner id (hubcap-a, hubcap-b, ...). The ownership blobs are polled every
50 ms by `OwnershipWatch`; a record counts as active while its Last-Modified is less than the
expiration old (plus the one second Last-Modified rounds away).

Timing bounds used below, with INTERVAL = 1 s and the supervisor's +20% jitter (a cycle starts
at most 1.2 s after the previous one):
- kill -9: a dead owner's record expires at most EXPIRATION after its last renewal (which was
  before the kill); with the balanced strategy each survivor then claims one partition per
  cycle, and every cycle of a survivor that is below its maximum claims one of the orphans
  (a lost claim race means another survivor won that one). So k orphans are owned again within
  EXPIRATION + k cycles of the kill (+0.5 s for listing and polling).
- SIGTERM: the records are released (ownerid "") at the end of the drain. Every survivor's next
  cycle (within one 1.2 s cycle) claims one, so the first claim follows within one cycle; two
  survivors racing for the same record cost the loser one more cycle, so all k = survivors
  released partitions are owned again within two cycles (+0.5 s).
"""

from __future__ import annotations

import collections
import datetime as dt
import signal
import threading
import time

import pytest

pytest.register_assert_rewrite("balancing_support", "hubcap_process")

from balancing_support import (  # noqa: E402
    BlobRecords,
    EpochReader,
    OwnershipWatch,
    StreamingProducer,
    active_owners,
    all_delivered,
    balancing_config,
    assert_no_problem_logs,
    compress,
    delivered_counts,
    describe_log_events,
    first_log_event,
    log_time,
    hub_last_sequence_numbers,
    missing_events,
    owner_counts,
    ownership_log_events,
    partition_ids,
    steal_redeliveries,
    unique_container,
    wait_all,
)
from conftest import emulator_binary, hubcap_binary  # noqa: E402
from hubcap_process import hubcap_is_built  # noqa: E402

pytest_plugins = ["hubcap_process"]

pytestmark = pytest.mark.skipif(
    not (hubcap_is_built() and emulator_binary().is_file()),
    reason=f"{hubcap_binary()} or {emulator_binary()} is not built: run `bash scripts/test.sh`",
)

INTERVAL = 1.0
EXPIRATION = 3.0
CYCLE = INTERVAL * 1.2  # the longest gap between two cycles of one instance
SLACK = 0.5  # listing, HTTP and the 50 ms poll
CLAIM_EVENTS = ("claimed", "expired", "stolen")


def start_instances(start_hubcap, emulator, azurite, container, owners, **config):
    return {
        owner: start_hubcap(balancing_config(emulator, azurite, container, owner, **config)) for owner in owners
    }


def report(watch: OwnershipWatch, records: BlobRecords, hubcaps, origin: float) -> str:
    parts = [watch.describe_changes(origin=origin), records.describe()]
    parts += [describe_log_events(h) for h in hubcaps]
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------


def test_three_instances_split_sixteen_partitions_six_five_five_then_stay_put(start_emulator, azurite, start_hubcap):
    emulator = start_emulator(hubs={"hub1": 16})
    container = unique_container("split")
    records = BlobRecords(azurite, container, emulator)
    owners = ["hubcap-a", "hubcap-b", "hubcap-c"]
    with OwnershipWatch(records) as watch:
        origin = time.monotonic()
        hubcaps = start_instances(start_hubcap, emulator, azurite, container, owners)

        def split() -> dict[str, int]:
            return owner_counts(active_owners(watch.current(), EXPIRATION))

        def converged() -> bool:
            counts = split()
            return set(counts) == set(owners) and sorted(counts.values()) == [5, 5, 6]

        waited = wait_all(
            hubcaps.values(),
            converged,
            lambda: f"a 6/5/5 split of 16 partitions (now {split()})\n{report(watch, records, hubcaps.values(), origin)}",
            timeout=30,
        )
        converged_at = time.monotonic()
        owners_at_convergence = {pid: r.owner_id for pid, r in watch.current().items()}
        log_events_at_convergence = {o: len(ownership_log_events(h)) for o, h in hubcaps.items()}
        renewals_at_convergence = watch.renewals()
        print(f"converged to {split()} in {waited:.1f} s after start")

        # Eight more update intervals: nobody claims, steals or lets a record expire.
        hold = 8 * INTERVAL
        wait_all(hubcaps.values(), lambda: time.monotonic() >= converged_at + hold, "the hold period", hold + 5)
        watch.wait_polls(2)
        changes = watch.changes(since=converged_at)
        assert not changes, (
            f"ownership moved after the 6/5/5 split was reached:\n"
            f"{report(watch, records, hubcaps.values(), converged_at)}"
        )
        owners_now = {pid: r.owner_id for pid, r in watch.current().items()}
        assert owners_now == owners_at_convergence
        assert sorted(split().values()) == [5, 5, 6], f"a record went stale during the hold: {records.describe()}"
        # Every record was renewed meanwhile (its etag changed), each about once per cycle.
        renewals = watch.renewals()
        too_few = {
            pid: renewals.get(pid, 0) - renewals_at_convergence.get(pid, 0)
            for pid in owners_now
            if renewals.get(pid, 0) - renewals_at_convergence.get(pid, 0) < hold / CYCLE - 2
        }
        assert not too_few, f"records renewed fewer than {hold / CYCLE - 2:.0f} times in {hold:.0f} s: {too_few}"
        # And no instance logged an ownership transition.
        for owner, hubcap in hubcaps.items():
            later = ownership_log_events(hubcap)[log_events_at_convergence[owner]:]
            assert not later, f"{owner} logged ownership transitions after convergence: {later}"

        for hubcap in hubcaps.values():
            hubcap.terminate_cleanly()
        watch.wait_polls(2)
        released = {pid: r.owner_id for pid, r in watch.current().items() if r.owner_id}
        assert not released, f"records still owned after every instance drained: {released}"
        assert_no_problem_logs(hubcaps.values())


# --------------------------------------------------------------------------------------------


def wait_for_steady_state(watch, records, hubcaps, owners, partitions, split, origin, min_checkpoint=40) -> float:
    """Until the balanced split is reached and every partition is checkpointed at or past
    `min_checkpoint` (so every instance has been committing windows for a while). Returns the
    time.monotonic() at which it was seen."""

    def ready() -> bool:
        counts = owner_counts(active_owners(watch.current(), EXPIRATION))
        if set(counts) != set(owners) or sorted(counts.values()) != split:
            return False
        checkpoints = records.checkpoint_sequence_numbers()
        return all((checkpoints.get(pid) or -1) >= min_checkpoint for pid in partitions)

    wait_all(
        hubcaps,
        ready,
        lambda: f"a {split} split with every partition checkpointed past {min_checkpoint}\n"
        f"{report(watch, records, hubcaps, origin)}",
        timeout=40,
    )
    return time.monotonic()


def owned_by(watch: OwnershipWatch, owner: str) -> list[str]:
    return sorted(
        (pid for pid, o in active_owners(watch.current(), EXPIRATION).items() if o == owner), key=int
    )


def test_kill_9_instance_partitions_are_reclaimed_and_nothing_is_lost(start_emulator, azurite, start_hubcap):
    partitions = partition_ids(8)
    emulator = start_emulator(hubs={"hub1": 8})
    container = unique_container("kill")
    records = BlobRecords(azurite, container, emulator)
    owners = ["hubcap-a", "hubcap-b", "hubcap-c"]
    producer = StreamingProducer(emulator, partitions, rate=300)
    with OwnershipWatch(records, watch_checkpoints=True) as watch:
        origin = time.monotonic()
        hubcaps = start_instances(start_hubcap, emulator, azurite, container, owners)
        producer.start()
        try:
            steady_at = wait_for_steady_state(
                watch, records, list(hubcaps.values()), owners, partitions, [2, 3, 3], origin
            )

            # The victim is the instance that owns the most partitions.
            victim = max(owners, key=lambda o: len(owned_by(watch, o)))
            orphans = owned_by(watch, victim)
            survivors = {o: h for o, h in hubcaps.items() if o != victim}
            killed_wall = dt.datetime.now(dt.timezone.utc)
            hubcaps[victim].kill()
            killed_at = time.monotonic()
            checkpoint_at_kill = records.checkpoint_sequence_numbers()
            bound = EXPIRATION + len(orphans) * CYCLE + SLACK

            def reclaimed() -> bool:
                active = active_owners(watch.current(), EXPIRATION)
                return all(active.get(pid) in survivors for pid in orphans)

            wait_all(
                survivors.values(),
                reclaimed,
                lambda: f"partitions {orphans} of the killed {victim} owned by survivors\n"
                f"{report(watch, records, hubcaps.values(), killed_at)}",
                timeout=bound + 10,
            )
            # When each orphan was claimed, from the survivors' logs (same clock as the kill).
            took, kinds = {}, {}
            for pid in orphans:
                found = first_log_event(survivors.values(), pid, CLAIM_EVENTS, killed_wall)
                assert found, f"no survivor logged a claim of partition {pid}\n{report(watch, records, hubcaps.values(), killed_at)}"
                took[pid] = round((log_time(found[1]) - killed_wall).total_seconds(), 3)
                kinds[pid] = found[1]["event"]
            print(f"killed {victim} holding {orphans}; claimed after {took} s as {kinds} (bound {bound:.1f} s)")
            assert set(kinds.values()) == {"expired"}, (
                f"the orphans of a killed instance must be claimed as expired records: {kinds}"
            )
            late = {pid: t for pid, t in took.items() if t > bound}
            assert not late, (
                f"orphaned partitions owned again later than EXPIRATION + {len(orphans)} cycles = {bound:.1f} s "
                f"after the kill: {late}\n{report(watch, records, hubcaps.values(), killed_at)}"
            )
            # Keep producing a little while the survivors read the orphans.
            wait_all(survivors.values(), lambda: time.monotonic() > killed_at + bound + 1, "more events", 30)
        finally:
            producer.stop()
        assert not producer.errors, f"the producer failed: {producer.errors[:3]}"

        last = hub_last_sequence_numbers(emulator, partitions)
        wait_all(
            survivors.values(),
            lambda: all_delivered(hubcaps.values(), last),
            lambda: f"every event up to {last} on some instance's stdout; missing "
            f"{ {p: compress(s) for p, s in missing_events(delivered_counts(hubcaps.values()), last).items()} }",
            timeout=30,
        )
        for hubcap in survivors.values():
            hubcap.terminate_cleanly()
    assert_no_problem_logs(hubcaps.values())

    counts = delivered_counts(hubcaps.values())
    missing = missing_events(counts, last)
    assert not missing, f"events lost: { {p: compress(s) for p, s in missing.items()} }"
    duplicates = collections.defaultdict(list)
    for (pid, seq), count in counts.items():
        if count > 1:
            duplicates[pid].append(seq)
    print(f"{sum(counts.values())} lines for {sum(v + 1 for v in last.values())} events; duplicates: "
          f"{ {p: compress(s) for p, s in duplicates.items()} }; checkpoints at kill: "
          f"{ {p: checkpoint_at_kill.get(p) for p in orphans} }")
    # Allowed twice: what the killed instance committed past its last checkpoint, and what a
    # start-up steal's loser delivered (its last window may have missed the checkpoint).
    stolen = steal_redeliveries(watch, hubcaps, steady_at)
    not_allowed = {
        pid: compress(bad)
        for pid, seqs in duplicates.items()
        if (
            bad := [
                seq
                for seq in seqs
                if seq not in stolen.get(pid, ()) and (pid not in orphans or seq <= checkpoint_at_kill[pid])
            ]
        )
    }
    assert not not_allowed, (
        f"duplicates that are neither events of the killed instance's partitions {orphans} after its checkpoints "
        f"{ {p: checkpoint_at_kill.get(p) for p in orphans} } nor a start-up steal's redelivery "
        f"{ {p: compress(s) for p, s in stolen.items()} }: {not_allowed}"
    )
    thrice = {key: count for key, count in counts.items() if count > 2}
    assert not thrice, f"events delivered more than twice: {dict(list(thrice.items())[:10])}"


# --------------------------------------------------------------------------------------------


def test_sigterm_instance_partitions_are_taken_over_within_one_interval_without_loss_or_duplicates(
    start_emulator, azurite, start_hubcap
):
    partitions = partition_ids(8)
    emulator = start_emulator(hubs={"hub1": 8})
    container = unique_container("term")
    records = BlobRecords(azurite, container, emulator)
    owners = ["hubcap-a", "hubcap-b", "hubcap-c"]
    producer = StreamingProducer(emulator, partitions, rate=300)
    with OwnershipWatch(records, watch_checkpoints=True) as watch:
        origin = time.monotonic()
        hubcaps = start_instances(start_hubcap, emulator, azurite, container, owners)
        producer.start()
        try:
            steady_at = wait_for_steady_state(
                watch, records, list(hubcaps.values()), owners, partitions, [2, 3, 3], origin
            )

            # The victim owns the fewest partitions (2): each survivor (3, max 4 once the victim
            # is gone) takes exactly one.
            victim = min(owners, key=lambda o: len(owned_by(watch, o)))
            handed_over = owned_by(watch, victim)
            survivors = {o: h for o, h in hubcaps.items() if o != victim}
            signalled_wall = dt.datetime.now(dt.timezone.utc)
            hubcaps[victim].process.send_signal(signal.SIGTERM)
            signalled_at = time.monotonic()

            def taken_over() -> bool:
                active = active_owners(watch.current(), EXPIRATION)
                return all(active.get(pid) in survivors for pid in handed_over)

            wait_all(
                survivors.values(),
                taken_over,
                lambda: f"partitions {handed_over} of the stopped {victim} owned by survivors\n"
                f"{report(watch, records, hubcaps.values(), signalled_at)}",
                timeout=20,
            )
            code = hubcaps[victim].terminate()
            assert code == 0, f"{victim} exited with {code} after SIGTERM\n{hubcaps[victim].describe()}"
            history = report(watch, records, hubcaps.values(), signalled_at)
            # Release and claim times from the logs (one clock; the 50 ms blob poll can miss a
            # release that is claimed at once).
            released_at, claimed_at, kinds = {}, {}, {}
            for pid in handed_over:
                released = first_log_event([hubcaps[victim]], pid, ["released"], signalled_wall)
                assert released, f"{victim} did not log the release of partition {pid}\n{history}"
                released_at[pid] = log_time(released[1])
                claimed = first_log_event(survivors.values(), pid, CLAIM_EVENTS, signalled_wall)
                assert claimed, f"no survivor logged a claim of partition {pid}\n{history}"
                claimed_at[pid] = log_time(claimed[1])
                kinds[pid] = claimed[1]["event"]
            # "claimed" (not "expired"): the survivor found the record released, ownerid "".
            assert set(kinds.values()) == {"claimed"}, f"released partitions claimed as {kinds}\n{history}"
            # No other partition changed hands.
            others = [c for c in watch.changes(since=signalled_at) if c.partition_id not in handed_over]
            assert not others, f"partitions other than {handed_over} changed hands:\n{history}"
            gaps = {pid: round((claimed_at[pid] - released_at[pid]).total_seconds(), 3) for pid in handed_over}
            print(
                f"{victim} released {handed_over} "
                f"{[round((released_at[p] - signalled_wall).total_seconds(), 3) for p in handed_over]} s after "
                f"SIGTERM; claimed {gaps} s after release"
            )
            assert min(gaps.values()) <= CYCLE + SLACK, (
                f"no released partition was claimed within one cycle ({CYCLE + SLACK:.1f} s): {gaps}\n{history}"
            )
            assert max(gaps.values()) <= 2 * CYCLE + SLACK, (
                f"released partitions claimed later than two cycles ({2 * CYCLE + SLACK:.1f} s): {gaps}\n{history}"
            )
            wait_all(survivors.values(), lambda: time.monotonic() > signalled_at + 3, "more events", 30)
        finally:
            producer.stop()
        assert not producer.errors, f"the producer failed: {producer.errors[:3]}"

        last = hub_last_sequence_numbers(emulator, partitions)
        wait_all(
            survivors.values(),
            lambda: all_delivered(hubcaps.values(), last),
            lambda: f"every event up to {last} on some instance's stdout; missing "
            f"{ {p: compress(s) for p, s in missing_events(delivered_counts(hubcaps.values()), last).items()} }",
            timeout=30,
        )
        for hubcap in survivors.values():
            hubcap.terminate_cleanly()
    assert_no_problem_logs(hubcaps.values())

    counts = delivered_counts(hubcaps.values())
    missing = missing_events(counts, last)
    assert not missing, f"events lost: { {p: compress(s) for p, s in missing.items()} }"
    # Only a start-up steal's loser's last window may appear twice (see steal_redeliveries).
    stolen = steal_redeliveries(watch, hubcaps, steady_at)
    duplicates = collections.defaultdict(list)
    for (pid, seq), count in counts.items():
        if count > 1 and seq not in stolen.get(pid, ()):
            duplicates[pid].append(seq)
    assert not duplicates, (
        f"events delivered twice after a graceful handover of {handed_over}: "
        f"{ {p: compress(s) for p, s in duplicates.items()} }"
    )


# --------------------------------------------------------------------------------------------


class ThiefRenewer:
    """Renews the thief's ownership record every 0.5 s with If-Match, as a live processor does, so
    it never expires; notes every time the record was found rewritten by someone else."""

    def __init__(self, records: BlobRecords, owner_id: str, etag: str, origin: float) -> None:
        self.records = records
        self.owner_id = owner_id
        self.etag = etag
        self.origin = origin
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thief-renewer", daemon=True)

    def start(self) -> "ThiefRenewer":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                new = self.records.write_owner("0", self.owner_id, self.etag)
                if new is None:
                    current = self.records.ownerships()["0"]
                    self.failures.append(
                        f"t={time.monotonic() - self.origin:+.2f} s: record rewritten by {current.owner_id!r}"
                    )
                    new = self.records.write_owner("0", self.owner_id, current.etag)
                if new is not None:
                    self.etag = new
            except Exception as err:  # Azurite hiccup: try again next time
                self.failures.append(f"renewal error {err!r}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


STEAL_ORDERS = {
    # The service detaches hubcap's epoch-0 link (amqp:link:stolen) first; the record is taken
    # over right after.
    "link-stolen-then-record": "link",
    # The record is taken over first (an SDK processor's claim); hubcap must find out through its
    # fenced renewal or checkpoint; then the new owner's epoch-1 reader starts.
    "record-then-reader": "record",
}


@pytest.mark.parametrize("order", list(STEAL_ORDERS.values()), ids=list(STEAL_ORDERS))
def test_a_stolen_partition_is_never_checkpointed_by_the_old_owner(start_emulator, azurite, start_hubcap, order):
    emulator = start_emulator(hubs={"hub1": 1})
    container = unique_container("steal")
    records = BlobRecords(azurite, container, emulator)
    thief = "thief-processor"
    producer = StreamingProducer(emulator, ["0"], rate=100, batch=5)
    reader = None
    renewer = None
    with OwnershipWatch(records, watch_checkpoints=True) as watch:
        origin = time.monotonic()
        hubcap = start_hubcap(balancing_config(emulator, azurite, container, "hubcap-a"))
        producer.start()
        try:
            # A owns partition 0 and has checkpointed it at least twice.
            wait_all(
                [hubcap],
                lambda: active_owners(watch.current(), EXPIRATION).get("0") == "hubcap-a"
                and len(watch.checkpoint_changes(partition_id="0")) >= 2,
                lambda: f"hubcap-a owning and checkpointing partition 0\n{report(watch, records, [hubcap], origin)}",
                timeout=30,
            )

            def take_record() -> tuple[str, float]:
                """CAS the record to the thief, as a processor's claim does (retrying when A
                renewed it in between)."""
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    record = records.ownerships()["0"]
                    etag = records.write_owner("0", thief, record.etag)
                    if etag is not None:
                        return etag, time.monotonic()
                raise AssertionError("could not take the ownership record within 10 s")

            def lost_logged() -> bool:
                return any(
                    e.get("event") in ("ownership_lost", "lost")
                    for e in ownership_log_events(hubcap, "0")
                )

            if order == "link":
                reader = EpochReader(emulator, "0", owner_level=1).start()
                wait_all([hubcap], lambda: reader.count() > 0 and lost_logged(),
                         lambda: f"the epoch-1 reader reading and hubcap-a logging the loss\n{describe_log_events(hubcap)}"
                         f"\nreader errors: {reader.errors[:3]}", timeout=30)
                stolen_at = time.monotonic()  # the link is gone and A knows it
                etag, _ = take_record()
                renewer = ThiefRenewer(records, thief, etag, stolen_at).start()
            else:
                etag, stolen_at = take_record()
                renewer = ThiefRenewer(records, thief, etag, stolen_at).start()
                # A finds out through its fenced renewal (or checkpoint); then the new owner reads.
                wait_all([hubcap], lost_logged, lambda: f"hubcap-a logging the loss\n{describe_log_events(hubcap)}",
                         timeout=3 * CYCLE + SLACK)
                reader = EpochReader(emulator, "0", owner_level=1).start()

            wait_all([hubcap], lambda: reader.count() > 0 and lost_logged(),
                     lambda: f"the epoch-1 reader reading and hubcap-a logging the loss\n{describe_log_events(hubcap)}"
                     f"\nreader errors: {reader.errors[:3]}", timeout=30)
            lines_at_loss = hubcap.line_count()
            # Several intervals with events flowing: the thief reads them, A must stay silent.
            read_before = reader.count()
            observe_until = time.monotonic() + 6 * INTERVAL
            wait_all([hubcap], lambda: time.monotonic() >= observe_until, "the observation period", 6 * INTERVAL + 5)
            watch.wait_polls(2)
        finally:
            producer.stop()
            if renewer is not None:
                renewer.stop()
            if reader is not None:
                reader.close()
        renewer_failures = renewer.failures
        assert reader.count() > read_before, "the epoch-1 reader received nothing while A was watched"
        changes_after = [
            (round(c.at - stolen_at, 3), c.record.sequence_number, c.record.etag)
            for c in watch.checkpoint_changes(since=stolen_at, partition_id="0")
        ]
        history = report(watch, records, [hubcap], stolen_at)
        # The steal is when A logged the loss of its link (order "link") or when the record was
        # taken (order "record"). A checkpoint write whose fencing renewal succeeded just before
        # may land just after it (lease.rs: "the window is the duration of one checkpoint
        # write"), and the poll sees it up to 50 ms late: SLACK allows for both.
        late = [c for c in changes_after if c[0] > SLACK]
        assert not late, (
            f"hubcap-a wrote the checkpoint of partition 0 after it was stolen (t = seconds after the "
            f"steal, sequencenumber, etag): {late}\n{history}"
        )
        assert not renewer_failures, (
            f"the thief's ownership record was overwritten while it was live: {renewer_failures}\n{history}"
        )
        new_lines = hubcap.lines()[lines_at_loss:]
        assert not new_lines, (
            f"hubcap-a kept delivering partition 0 after it logged the loss: {len(new_lines)} lines, "
            f"first {new_lines[:1]}\n{history}"
        )
        events = [e.get("event") for e in ownership_log_events(hubcap, "0")]
        assert any(e in ("lost", "ownership_lost") for e in events), f"no loss in hubcap-a's log: {events}"
        print(f"order {order}: hubcap-a log events for partition 0: {events}; checkpoint writes after the "
              f"steal: {changes_after}")
        hubcap.terminate_cleanly()
        # Its drain must not release (or otherwise touch) the thief's record.
        watch.wait_polls(2)
        record = watch.current()["0"]
        assert record.owner_id == thief, f"the thief's record was rewritten at shutdown: {record}"
        assert_no_problem_logs([hubcap])
