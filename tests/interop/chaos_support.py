"""The machinery of test_chaos.py: a fleet of three `hubcap run` instances under a seeded schedule
of faults, a producer that keeps a ledger of what it sent, and the readers that judge the archive.

- `ChaosSettings.from_env()`: the short form (default, ~80 s of faults per sink) or the soak
  (`HUBCAP_CHAOS_SOAK=1`, 10 minutes per sink, more of everything); `HUBCAP_CHAOS_SECONDS`
  overrides the duration (the fault counts scale with it).
- `chaos_seed()`: `HUBCAP_CHAOS_SEED`, else a fresh random seed. Every random choice of the run
  comes from `random.Random` streams derived from it: the schedule (what happens when, and to
  whom by preference), and per instance the sequence of incarnations (crash hook armed or not,
  restart delay). The same seed gives the same schedule; what the processes make of it depends
  on timing, which is the point.
- `build_schedule(seed, settings)`: kill -9 at random moments, SIGTERM restarts, SIGSTOP zombies
  (paused until their ownership expired and was taken, then SIGCONT), emulator connection drops
  and link detaches, Azurite outages (stopped and started again on the same port and data
  directory). Zombies and outages get time slots of their own so they never overlap.
- `LedgerProducer`: the official SDK's `EventHubProducerClient` (retry_total=0) sends to every
  partition at a steady rate; each event carries a unique id (property `chaos_id`). A send that
  returned is *acknowledged*; one that raised is *uncertain* (it may or may not be in the hub):
  excluded from what must be archived, still counted for duplicates. The SDK may still put a
  batch into the hub twice (it sends its in-flight batch again after a connection drop), so the
  hub is read back at the end (`read_hub`, its own consumer group): an id the hub holds at two
  sequence numbers is rightly archived twice, and counted, not failed.
- `Fleet`: the instances (same owner id across restarts), each incarnation with its own stderr
  file of JSON logs; exits are classified (our kill -9, the crash hook by its stderr line,
  SIGTERM drain, anything else) and killed instances restart after a seeded delay.
- `read_file_archive` / `read_blob_archive`: every committed archive file read with fastavro;
  `run_verify`: `hubcap verify --config F --json`.

Every wait polls a condition against a deadline; the only sleeps are the schedule's own delays
and the poll interval. Every process is stopped by PID.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime as dt
import io
import json
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import fastavro
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.storage.blob import ContainerClient

from balancing_support import BlobRecords, active_owners, hub_last_sequence_numbers
from conftest import Emulator, _die_with_parent, hubcap_binary, tail
from hubcap_process import STAGING_DIR, parse_container, toml_text

HUB = "hub1"
CONSUMER_GROUP = "$Default"
CHECKPOINT_CONTAINER = "checkpoints"
CAPTURE_CONTAINER = "capture"
# The consumer group that reads the hub back at the end (hubcap's epoch-0 receivers in $Default
# would refuse a reader without an epoch).
REFERENCE_CONSUMER_GROUP = "chaos-reference"
OWNERS = ("chaos-a", "chaos-b", "chaos-c")
HOOK_LINE = "test crash hook: "  # + "after_commit" / "after_record"
HOOK_KINDS = ("after_commit", "after_record")

UPDATE_INTERVAL_S = 1.0
OWNERSHIP_EXPIRATION_S = 5.0
DRAIN_TIMEOUT_S = 10.0
TICK_S = 0.05
# A random kill -9 hits an incarnation at least this old (younger ones have not connected yet:
# killing them tests nothing), or, armed with a crash hook, this old (its chance to crash there).
KILL_MIN_AGE_S = 0.5
ARMED_GRACE_S = 4.0
# SIGTERM and SIGSTOP go to incarnations that are up and have logged: hubcap installs its signal
# handlers as its runtime starts, before its first log line; a SIGTERM before that just ends it
# (-15), which would be noise, not a drain.
TERM_MIN_AGE_S = 0.5


# --------------------------------------------------------------------------------------------
# settings and seed


def chaos_seed() -> int:
    text = os.environ.get("HUBCAP_CHAOS_SEED", "").strip()
    if text:
        return int(text, 0)
    return random.SystemRandom().randrange(1, 2**31)


def soak_requested() -> bool:
    return os.environ.get("HUBCAP_CHAOS_SOAK", "").strip() not in ("", "0", "false", "no")


@dataclass(frozen=True)
class ChaosSettings:
    soak: bool
    duration_s: float  # the scheduled faults run this long
    partitions: int
    rate: float  # events per second sent, over all partitions
    batch: int  # events per send
    max_window: str
    kills: int  # scheduled random kill -9 (some may find no eligible target)
    min_kills: int  # random kill -9 that must have happened
    sigterms: int
    min_sigterms: int
    zombies: int
    outages: int
    drops: int
    detaches: int
    min_hook_commit: int  # kills by HUBCAP_TEST_CRASH=after_commit:N that must have happened
    min_hook_record: int
    p_hook_commit: float  # chance that an incarnation is armed with after_commit:N
    p_hook_record: float
    extension_s: float  # how long the faults may go on past duration_s to reach the minimums
    catch_up_s: float  # after the producer stops: deadline for every partition to be checkpointed
    test_timeout_s: float

    @staticmethod
    def from_env() -> "ChaosSettings":
        soak = soak_requested()
        base = 600.0 if soak else 80.0
        duration = float(os.environ.get("HUBCAP_CHAOS_SECONDS") or base)
        scale = duration / 80.0
        return ChaosSettings(
            soak=soak,
            duration_s=duration,
            partitions=16,
            rate=160.0,
            batch=4,
            max_window="2s",
            kills=max(1, round(70 * scale)),
            min_kills=max(1, round(50 * scale)),
            sigterms=max(1, round(8 * scale)),
            min_sigterms=max(1, round(5 * scale)),
            zombies=max(2, round(2 * scale)),
            outages=max(1, round(1 * scale)),
            drops=max(1, round(4 * scale)),
            detaches=max(1, round(6 * scale)),
            min_hook_commit=max(1, round(20 * scale)),
            min_hook_record=max(1, round(3 * scale)),
            p_hook_commit=0.35,
            p_hook_record=0.1,
            extension_s=40.0 if not soak else 120.0,
            catch_up_s=90.0,
            test_timeout_s=duration + 420.0,
        )


# --------------------------------------------------------------------------------------------
# the schedule


@dataclass(frozen=True)
class Action:
    at: float  # seconds after the start of the faults
    kind: str  # kill | term | zombie | outage | drop | detach
    hint: int  # preferred instance (index into OWNERS); others are tried in turn
    params: tuple = ()  # kind-specific: outage (seconds,), detach (partition or None, condition)

    def describe(self) -> str:
        extra = f" {self.params}" if self.params else ""
        return f"t={self.at:6.2f} {self.kind} (prefers {OWNERS[self.hint]}){extra}"


DETACH_CONDITIONS = (
    "amqp:link:detach-forced",
    "com.microsoft:server-busy",
    "amqp:link:detach-forced",
    "amqp:link:stolen",  # a link stolen with nobody in the store: hubcap abandons, claims again
)

WARMUP_S = 4.0  # no faults while the fleet starts


def build_schedule(seed: int, settings: ChaosSettings) -> list[Action]:
    """The faults of one run, from `seed` alone. Long faults (zombies, outages) get disjoint
    slots: the run is cut into one slot per long fault, each fault starts in the first part of
    its slot, and a slot is long enough for the longest outage or a zombie's takeover."""
    rng = random.Random(f"chaos-schedule:{seed}")
    span = settings.duration_s - WARMUP_S
    actions: list[Action] = []

    def moment() -> float:
        return WARMUP_S + rng.uniform(0, span)

    for _ in range(settings.kills):
        actions.append(Action(moment(), "kill", rng.randrange(len(OWNERS))))
    for _ in range(settings.sigterms):
        actions.append(Action(moment(), "term", rng.randrange(len(OWNERS))))
    for _ in range(settings.drops):
        actions.append(Action(moment(), "drop", 0))
    for _ in range(settings.detaches):
        partition = None if rng.random() < 0.3 else str(rng.randrange(settings.partitions))
        actions.append(Action(moment(), "detach", 0, (partition, rng.choice(DETACH_CONDITIONS))))

    long_faults = ["zombie"] * settings.zombies + ["outage"] * settings.outages
    rng.shuffle(long_faults)
    slot = span / len(long_faults)
    for index, kind in enumerate(long_faults):
        start = WARMUP_S + index * slot + rng.uniform(0, max(0.0, slot - 22.0)) + 1.0
        if kind == "outage":
            actions.append(Action(start, "outage", 0, (round(rng.uniform(8.0, 15.0), 2),)))
        else:
            # Once its partitions are taken, the zombie stays paused a little longer, so the new
            # owners commit over what its open windows hold before it wakes up.
            actions.append(Action(start, "zombie", rng.randrange(len(OWNERS)), (round(rng.uniform(0.0, 3.0), 2),)))
    actions.sort(key=lambda a: (a.at, a.kind))
    return actions


class IncarnationPlan:
    """Per instance, the seeded sequence of incarnations: which crash hook each is armed with
    and how long to wait before starting it."""

    def __init__(self, seed: int, owner: str, settings: ChaosSettings) -> None:
        self.rng = random.Random(f"chaos-incarnations:{seed}:{owner}")
        self.settings = settings

    def next(self, index: int, want: Optional[str]) -> tuple[Optional[str], float]:
        """(HUBCAP_TEST_CRASH value or None, restart delay in seconds). `want` forces a hook kind
        (the extension phase, short of a minimum) or "" for none (the final phase)."""
        u = self.rng.random()
        n = self.rng.randint(1, 4)
        delay = round(self.rng.uniform(0.2, 1.2), 3)
        if index == 0 or want == "":
            return None, delay
        if want is not None:
            return f"{want}:{n}", delay
        if u < self.settings.p_hook_commit:
            return f"after_commit:{n}", delay
        if u < self.settings.p_hook_commit + self.settings.p_hook_record:
            return f"after_record:{n}", delay
        return None, delay


# --------------------------------------------------------------------------------------------
# the producer and its ledger


class LedgerProducer:
    """Sends to every partition at `rate` events/s in all; every event carries a unique id.

    One thread and one `EventHubProducerClient` per partition: after a connection drop the SDK
    re-attaches a partition's link on its next send, which takes about a second, and one client
    doing that for every partition in turn would stall the whole producer for many seconds."""

    def __init__(self, emulator: Emulator, partitions: list[str], rate: float, batch: int, seed: int) -> None:
        self.emulator = emulator
        self.partitions = partitions
        self.rate = rate
        self.batch = batch
        self.seed = seed
        self.acked: dict[int, str] = {}  # id -> partition, the send returned
        self.uncertain: dict[int, str] = {}  # id -> partition, the send raised
        self.failures: list[str] = []
        self.failure_count = 0
        self.sends = 0
        self.send_seconds: list[float] = []
        self.slow_sends: list[tuple[float, str, float]] = []  # (t, partition, seconds) of sends over 0.2 s
        self.started_at: Optional[float] = None
        self.stopped_at: Optional[float] = None
        self._next_id = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(pid,), name=f"chaos-producer-{pid}", daemon=True)
            for pid in partitions
        ]
        self._crashes: list[BaseException] = []

    def start(self) -> "LedgerProducer":
        self.started_at = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def _client(self) -> EventHubProducerClient:
        # retry_total=0: the SDK never re-sends a batch whose outcome it did not learn, so an
        # event is in the hub at most once and a raised send is exactly "uncertain".
        return EventHubProducerClient.from_connection_string(
            self.emulator.connection_string(), eventhub_name=HUB, retry_total=0
        )

    def _run(self, pid: str) -> None:
        client: Optional[EventHubProducerClient] = None
        period = self.batch * len(self.partitions) / self.rate
        # Spread the partitions' sends over the period.
        next_send = time.monotonic() + period * self.partitions.index(pid) / len(self.partitions)
        self._stop.wait(max(0.0, next_send - time.monotonic()))
        try:
            while not self._stop.is_set():
                ids: list[int] = []
                try:
                    if client is None:
                        client = self._client()
                    batch = client.create_batch(partition_id=pid)
                    for _ in range(self.batch):
                        with self._lock:
                            event_id = self._next_id
                            self._next_id += 1
                        event = EventData(f"chaos {self.seed} {event_id}")
                        event.properties = {"chaos_id": event_id, "chaos_partition": pid}
                        batch.add(event)
                        ids.append(event_id)
                    sending = time.monotonic()
                    client.send_batch(batch, timeout=10)
                    took = time.monotonic() - sending
                    with self._lock:
                        self.send_seconds.append(took)
                        if took > 0.2:
                            self.slow_sends.append((round(sending - self.started_at, 2), pid, round(took, 3)))
                        self.sends += 1
                        for event_id in ids:
                            self.acked[event_id] = pid
                except Exception as err:  # noqa: BLE001 - every failure is recorded, none stops us
                    with self._lock:
                        self.failure_count += 1
                        if len(self.failures) < 10:
                            self.failures.append(f"partition {pid}: {type(err).__name__}: {err}"[:300])
                        for event_id in ids:
                            self.uncertain[event_id] = pid
                    if client is not None:
                        try:
                            client.close()
                        except Exception:  # noqa: BLE001
                            pass
                        client = None
                # A steady rate on average: a slow send is made up by the next ones, up to a
                # second's worth.
                next_send = max(next_send + period, time.monotonic() - 1.0)
                delay = next_send - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
        except BaseException as err:  # noqa: BLE001
            with self._lock:
                self._crashes.append(err)
        finally:
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass

    def halt(self, timeout: float = 60.0) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout=timeout)
        self.stopped_at = self.stopped_at or time.monotonic()

    def stop(self) -> None:
        self.halt()
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"producer threads did not stop within 60 s: {alive}"
        assert not self._crashes, f"the chaos producer crashed: {self._crashes[0]!r}"

    def counts(self) -> dict[str, Any]:
        with self._lock:
            seconds = sorted(self.send_seconds)
            elapsed = (self.stopped_at or time.monotonic()) - (self.started_at or time.monotonic())
            return {
                "acked": len(self.acked),
                "uncertain": len(self.uncertain),
                "failed_sends": self.failure_count,
                "per_s": round(len(self.acked) / elapsed, 1) if elapsed > 0 else None,
                "send_p50_ms": round(1000 * seconds[len(seconds) // 2]) if seconds else None,
                "send_p95_ms": round(1000 * seconds[int(len(seconds) * 0.95)]) if seconds else None,
            }


# --------------------------------------------------------------------------------------------
# the fleet


@dataclass
class Incarnation:
    owner: str
    index: int
    crash: Optional[str]
    stderr_path: Path
    process: subprocess.Popen = field(repr=False)
    started: float  # monotonic
    started_wall: dt.datetime
    ended: Optional[float] = None
    ended_wall: Optional[dt.datetime] = None
    exit_code: Optional[int] = None
    cause: Optional[str] = None  # kill9 | hook_after_commit | hook_after_record | sigterm | exit
    sent: list[str] = field(default_factory=list)  # signals we sent, in order

    @property
    def name(self) -> str:
        return f"{self.owner}#{self.index}"

    def describe(self, origin: float) -> str:
        end = f"{self.ended - origin:7.2f}" if self.ended is not None else "   (up)"
        return (
            f"{self.name:12} pid {self.process.pid:7} t={self.started - origin:7.2f}..{end} "
            f"crash={self.crash or '-':15} exit={self.exit_code} cause={self.cause} sent={','.join(self.sent) or '-'} "
            f"log={self.stderr_path.name}"
        )


@dataclass
class Member:
    owner: str
    config_path: Path
    plan: IncarnationPlan
    state: str = "down"  # running | paused | terminating | down
    current: Optional[Incarnation] = None
    restart_at: float = 0.0
    next_delay: float = 0.5  # the restart delay drawn with the current incarnation
    deadline: float = 0.0  # terminating: when to give up on the drain; paused: when to SIGCONT anyway
    paused_partitions: tuple = ()
    paused_at: float = 0.0
    linger: float = 0.0  # paused: how long to stay paused once the partitions are taken
    taken_at: Optional[float] = None  # paused: when the takeover was seen
    protected_until: float = 0.0  # a zombie just resumed: left alone for a moment
    incarnations: list[Incarnation] = field(default_factory=list)


def hubcap_chaos_config(
    emulator: Emulator, azurite: Any, owner: str, sink: dict[str, Any], max_window: str
) -> str:
    return toml_text(
        {
            "eventhub": {
                "connection_string": emulator.connection_string(),
                "name": HUB,
                "consumer_group": CONSUMER_GROUP,
                "start_position": "earliest",
                "retry_min_backoff": "50ms",
                "retry_max_backoff": "1s",
                "stuck_partition_timeout": "10s",
            },
            "checkpoint_store": {
                "type": "azure_blob",
                "connection_string": azurite.connection_string,
                "container": CHECKPOINT_CONTAINER,
            },
            "load_balancing": {
                "strategy": "balanced",
                "update_interval": f"{UPDATE_INTERVAL_S:g}s",
                "ownership_expiration": f"{OWNERSHIP_EXPIRATION_S:g}s",
                "owner_id": owner,
            },
            "sink": {**sink, "max_window": max_window},
            "http": {"listen": "off"},
            "log": {"format": "json", "level": "info"},
            "shutdown": {"drain_timeout": f"{DRAIN_TIMEOUT_S:g}s"},
        }
    )


class Fleet:
    """Three `hubcap run` instances, restarted with the same owner id whenever they die."""

    def __init__(self, workdir: Path, configs: dict[str, str], seed: int, settings: ChaosSettings) -> None:
        self.workdir = workdir
        self.seed = seed
        self.settings = settings
        self.origin = time.monotonic()
        self.members: list[Member] = []
        for owner, text in configs.items():
            path = workdir / f"{owner}.toml"
            path.write_text(text)
            self.members.append(Member(owner, path, IncarnationPlan(seed, owner, settings)))
        self.want_hook: Optional[str] = None  # None: as planned; "after_commit"/...: forced; "": none
        self.restarting = True  # False once the final drain starts
        self.findings: list[str] = []  # things that went wrong with the processes themselves
        self.events: list[str] = []  # a log of what the harness did, for the report

    # ---- bookkeeping

    def note(self, text: str) -> None:
        self.events.append(f"t={time.monotonic() - self.origin:7.2f} {text}")

    def all_incarnations(self) -> list[Incarnation]:
        return [i for m in self.members for i in m.incarnations]

    def counts(self) -> collections.Counter:
        counts: collections.Counter = collections.Counter()
        for inc in self.all_incarnations():
            if inc.cause:
                counts[inc.cause] += 1
        return counts

    # ---- starting and stopping

    def _start(self, member: Member) -> None:
        index = len(member.incarnations)
        crash, delay = member.plan.next(index, self.want_hook)
        stderr_path = self.workdir / f"{member.owner}.{index:03d}.log"
        env = {**os.environ, "NO_COLOR": "1"}
        env.pop("HUBCAP_TEST_CRASH", None)
        if crash:
            env["HUBCAP_TEST_CRASH"] = crash
        with open(stderr_path, "wb") as stderr_file:
            process = subprocess.Popen(
                [str(hubcap_binary()), "run", "--config", str(member.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr_file,
                preexec_fn=_die_with_parent,
                env=env,
            )
        inc = Incarnation(member.owner, index, crash, stderr_path, process, time.monotonic(), now_utc())
        member.incarnations.append(inc)
        member.current = inc
        member.state = "running"
        member.next_delay = delay  # used when this incarnation dies

    def start_all(self) -> None:
        for member in self.members:
            self._start(member)
            self.note(f"started {member.current.name}")

    def _classify(self, member: Member) -> None:
        inc = member.current
        assert inc is not None and inc.process.poll() is not None
        inc.exit_code = inc.process.returncode
        inc.ended = time.monotonic()
        inc.ended_wall = now_utc()
        text = read_text(inc.stderr_path)
        hook = next((kind for kind in HOOK_KINDS if HOOK_LINE + kind in text), None)
        if hook is not None:
            inc.cause = f"hook_{hook}"
            if not inc.crash or not inc.crash.startswith(hook):
                self.findings.append(f"{inc.name} printed the {hook} crash hook line but was armed with {inc.crash!r}")
        elif "SIGKILL" in inc.sent and inc.exit_code == -signal.SIGKILL:
            inc.cause = "kill9"
        elif "SIGTERM" in inc.sent:
            inc.cause = "sigterm"
            if inc.exit_code != 0:
                self.findings.append(f"{inc.name} exited with {inc.exit_code} after SIGTERM (log {inc.stderr_path})")
        else:
            inc.cause = "exit"
        if "panicked at" in text:
            self.findings.append(f"{inc.name} panicked (log {inc.stderr_path}): {panic_line(text)}")
        member.state = "down"
        member.restart_at = time.monotonic() + (member.next_delay if self.want_hook != "" else 0.2)
        self.note(f"{inc.name} exited {inc.exit_code} ({inc.cause})")

    def tick(self, records: Optional["OwnershipReader"] = None) -> None:
        now = time.monotonic()
        for member in self.members:
            inc = member.current
            if member.state in ("running", "terminating") and inc is not None and inc.process.poll() is not None:
                self._classify(member)
            elif member.state == "terminating" and now > member.deadline:
                self.findings.append(
                    f"{inc.name} did not exit within {DRAIN_TIMEOUT_S + 10:.0f} s of SIGTERM; killed (log {inc.stderr_path})"
                )
                self._signal(inc, signal.SIGKILL)
            elif member.state == "paused":
                self._maybe_resume(member, records, now)
            if member.state == "down" and self.restarting and now >= member.restart_at:
                self._start(member)
                self.note(f"started {member.current.name} crash={member.current.crash}")

    def _signal(self, inc: Incarnation, sig: int) -> None:
        inc.sent.append(signal.Signals(sig).name)
        try:
            os.kill(inc.process.pid, sig)
        except ProcessLookupError:
            pass

    # ---- faults

    def eligible(self, armed_grace: Optional[float], min_age: float, need_log: bool = False) -> list[Member]:
        """Running members whose incarnation is at least `min_age` old (and, armed with a crash
        hook, `armed_grace` old: it gets the chance to reach its crash point)."""
        now = time.monotonic()
        chosen = []
        for member in self.members:
            if member.state != "running" or now < member.protected_until:
                continue
            inc = member.current
            if inc is None or inc.process.poll() is not None or now - inc.started < min_age:
                continue
            if need_log and not has_logged(inc):
                continue
            if armed_grace is not None and inc.crash and now - inc.started < armed_grace:
                continue
            chosen.append(member)
        return chosen

    def pick(self, hint: int, candidates: list[Member]) -> Optional[Member]:
        if not candidates:
            return None
        for step in range(len(self.members)):
            member = self.members[(hint + step) % len(self.members)]
            if member in candidates:
                return member
        return None

    def kill(self, hint: int) -> Optional[str]:
        member = self.pick(hint, self.eligible(armed_grace=ARMED_GRACE_S, min_age=KILL_MIN_AGE_S))
        if member is None:
            return None
        self._signal(member.current, signal.SIGKILL)
        member.current.process.wait(timeout=10)
        self._classify(member)
        return member.current.name

    def terminate(self, hint: int) -> Optional[str]:
        member = self.pick(hint, self.eligible(armed_grace=None, min_age=TERM_MIN_AGE_S, need_log=True))
        if member is None:
            return None
        self._signal(member.current, signal.SIGTERM)
        member.state = "terminating"
        member.deadline = time.monotonic() + DRAIN_TIMEOUT_S + 10
        return member.current.name

    def pause(self, hint: int, records: "OwnershipReader", linger: float = 0.0) -> Optional[str]:
        owners = records.active()
        if owners is None:
            return None
        candidates = self.eligible(armed_grace=None, min_age=TERM_MIN_AGE_S, need_log=True)
        holding = {m.owner: sorted((p for p, o in owners.items() if o == m.owner), key=int) for m in candidates}
        candidates = [m for m in candidates if holding[m.owner]]
        if not candidates:
            return None
        most = max(len(holding[m.owner]) for m in candidates)
        member = self.pick(hint, [m for m in candidates if len(holding[m.owner]) == most])
        self._signal(member.current, signal.SIGSTOP)
        member.state = "paused"
        member.paused_partitions = tuple(holding[member.owner])
        member.paused_at = time.monotonic()
        member.deadline = member.paused_at + OWNERSHIP_EXPIRATION_S + 20
        member.linger = linger
        member.taken_at = None
        return f"{member.current.name} holding {list(member.paused_partitions)}"

    def _maybe_resume(self, member: Member, records: Optional["OwnershipReader"], now: float) -> None:
        if member.taken_at is None and records is not None and now - member.paused_at > OWNERSHIP_EXPIRATION_S:
            owners = records.active(cached_for=0.25)
            if owners is not None and all(owners.get(p) not in (None, member.owner) for p in member.paused_partitions):
                member.taken_at = now
        taken = member.taken_at is not None
        if (taken and now >= member.taken_at + member.linger) or now > member.deadline or not self.restarting:
            self._signal(member.current, signal.SIGCONT)
            member.state = "running"
            member.protected_until = now + 3.0
            how = "taken over" if taken else "NOT taken over before the deadline"
            self.note(
                f"SIGCONT {member.current.name} after {now - member.paused_at:.1f} s paused; its partitions "
                f"{list(member.paused_partitions)} were {how}"
            )
            if not taken and self.restarting:
                member.current.sent.append("zombie-not-taken")

    def resume_all(self) -> None:
        for member in self.members:
            if member.state == "paused":
                self._maybe_resume(member, None, time.monotonic())

    def terminate_all(self) -> None:
        for member in self.members:
            if member.state in ("running", "paused") and member.current is not None:
                if member.state == "paused":
                    self._signal(member.current, signal.SIGCONT)
                self._signal(member.current, signal.SIGTERM)
                member.state = "terminating"
                member.deadline = time.monotonic() + DRAIN_TIMEOUT_S + 10

    def all_down(self) -> bool:
        return all(m.state == "down" for m in self.members)

    def close(self) -> None:
        """Stops every process still running, by PID (SIGCONT first: a stopped process must be
        able to die)."""
        for inc in self.all_incarnations():
            if inc.process.poll() is None:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    try:
                        os.kill(inc.process.pid, sig)
                    except ProcessLookupError:
                        pass
                inc.process.wait(timeout=10)

    def timeline(self) -> str:
        lines = [inc.describe(self.origin) for inc in sorted(self.all_incarnations(), key=lambda i: i.started)]
        return "incarnations (t = seconds after the fleet started):\n  " + "\n  ".join(lines)


class OwnershipReader:
    """The ownership records, read with a client that fails fast (Azurite may be down)."""

    def __init__(self, azurite: Any, emulator: Emulator) -> None:
        self.records = BlobRecords(azurite, CHECKPOINT_CONTAINER, emulator)
        self.records.client = ContainerClient.from_connection_string(
            azurite.connection_string, CHECKPOINT_CONTAINER, retry_total=0, connection_timeout=2, read_timeout=5
        )
        self._cached: Optional[dict[str, str]] = None
        self._cached_at = 0.0

    def active(self, cached_for: float = 0.0) -> Optional[dict[str, str]]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached_at < cached_for:
            return self._cached
        try:
            owners = active_owners(self.records.ownerships(), OWNERSHIP_EXPIRATION_S)
        except Exception:  # noqa: BLE001 - Azurite down or busy: no answer this time
            return None
        self._cached, self._cached_at = owners, now
        return owners

    def checkpoints(self) -> Optional[dict[str, Optional[int]]]:
        try:
            return self.records.checkpoint_sequence_numbers()
        except Exception:  # noqa: BLE001
            return None

    def checkpoint_records(self) -> dict[str, Any]:
        return self.records.checkpoints()


# --------------------------------------------------------------------------------------------
# the archive


@dataclass
class ArchiveFile:
    name: str  # relative path (avro_file) or blob name (avro_blob)
    partition_id: Optional[str]  # from the name (Capture's default layout)
    records: list[tuple[int, str, Optional[int], Optional[str]]]  # (sequence number, offset, chaos id, partition prop)
    raw_records: list[dict] = field(default_factory=list, repr=False)
    error: Optional[str] = None
    metadata: dict[str, str] = field(default_factory=dict)
    modified: Optional[dt.datetime] = None
    local_path: Optional[Path] = None

    def sequence_numbers(self) -> list[int]:
        return [r[0] for r in self.records]


def partition_from_name(name: str) -> Optional[str]:
    """`<namespace>/hub1/<partition>/<Y>/<M>/<D>/<h>/<m>/<s>[-N].avro` -> partition."""
    parts = name.split("/")
    if len(parts) >= 3 and parts[1] == HUB and parts[2].isdigit():
        return parts[2]
    return None


def _read_records(data: bytes, name: str) -> tuple[list[dict], Optional[str]]:
    records: list[dict] = []
    try:
        for record in fastavro.reader(io.BytesIO(data)):
            records.append(record)
    except Exception as err:  # noqa: BLE001 - the finding is the error
        return records, f"{type(err).__name__}: {err}"
    return records, None


def _archive_file(name: str, data: bytes, **extra: Any) -> ArchiveFile:
    records, error = _read_records(data, name)
    rows = []
    for record in records:
        props = record.get("Properties") or {}
        event_id = props.get("chaos_id")
        rows.append((record["SequenceNumber"], record["Offset"], event_id, props.get("chaos_partition")))
    return ArchiveFile(name, partition_from_name(name), rows, records, error, **extra)


def read_file_archive(root: Path) -> list[ArchiveFile]:
    files = []
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*.avro")):
        relative = path.relative_to(root)
        if STAGING_DIR in relative.parts or not path.is_file():
            continue
        stat = path.stat()
        modified = dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc)
        item = _archive_file(relative.as_posix(), path.read_bytes(), modified=modified, local_path=path)
        if item.error is None:
            try:
                parse_container(path)  # framing checked by hand too
            except Exception as err:  # noqa: BLE001
                item.error = f"framing: {type(err).__name__}: {err}"
        files.append(item)
    return files


def read_blob_archive(connection_string: str, container: str, download_dir: Path) -> list[ArchiveFile]:
    client = ContainerClient.from_connection_string(connection_string, container)
    listing = [blob for blob in client.list_blobs(include=["metadata"]) if blob.name.endswith(".avro")]

    def fetch(blob: Any) -> ArchiveFile:
        data = client.get_blob_client(blob.name).download_blob().readall()
        path = download_dir / blob.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        metadata = {key.lower(): value for key, value in (blob.metadata or {}).items()}
        item = _archive_file(blob.name, data, metadata=metadata, modified=blob.last_modified, local_path=path)
        if item.error is None:
            try:
                parse_container(path)
            except Exception as err:  # noqa: BLE001
                item.error = f"framing: {type(err).__name__}: {err}"
        return item

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        files = list(pool.map(fetch, listing))
    return sorted(files, key=lambda f: f.name)


# --------------------------------------------------------------------------------------------
# hubcap verify and hubcap cat


@dataclass
class VerifyResult:
    exit_code: int
    document: Optional[dict]
    stdout: str
    stderr: str
    seconds: float


def run_verify(config_path: Path, timeout: float = 180.0) -> VerifyResult:
    started = time.monotonic()
    try:
        done = subprocess.run(
            [str(hubcap_binary()), "verify", "--config", str(config_path), "--json"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            preexec_fn=_die_with_parent,
            env={**{k: v for k, v in os.environ.items() if k != "HUBCAP_TEST_CRASH"}, "NO_COLOR": "1"},
        )
    except subprocess.TimeoutExpired as err:
        return VerifyResult(-1, None, (err.stdout or b"").decode(errors="replace"),
                            f"timed out after {timeout:.0f} s", time.monotonic() - started)
    stdout = done.stdout.decode(errors="replace")
    document = None
    try:
        document = json.loads(stdout)
    except ValueError:
        pass
    return VerifyResult(done.returncode, document, stdout, done.stderr.decode(errors="replace"),
                        time.monotonic() - started)


def run_cat(paths: list[Path]) -> tuple[int, list[dict], str]:
    done = subprocess.run(
        [str(hubcap_binary()), "cat", *map(str, paths)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
        preexec_fn=_die_with_parent,
    )
    lines = []
    for line in done.stdout.decode(errors="replace").splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append({"unparsed": line})
    return done.returncode, lines, done.stderr.decode(errors="replace")


# --------------------------------------------------------------------------------------------
# small helpers


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def has_logged(inc: "Incarnation") -> bool:
    try:
        return inc.stderr_path.stat().st_size > 0
    except FileNotFoundError:
        return False


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def panic_line(text: str) -> str:
    for line in text.splitlines():
        if "panicked at" in line:
            return line.strip()[:300]
    return ""


def ranges(numbers: Iterable[int]) -> list[list[int]]:
    """[1,2,3,7,9,10] -> [[1,3],[7,7],[9,10]]."""
    out: list[list[int]] = []
    for n in sorted(set(numbers)):
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


def compress(numbers: Iterable[int], limit: int = 12) -> str:
    spans = ranges(numbers)
    shown = ",".join(f"{a}-{b}" if a != b else f"{a}" for a, b in spans[:limit])
    return shown + (f",... ({len(spans) - limit} more runs)" if len(spans) > limit else "")


def log_lines_mentioning(incarnations: Iterable[Incarnation], needles: Iterable[str], limit: int = 40) -> list[str]:
    """Lines of the instances' JSON logs that mention any of `needles` (file names, sequence
    numbers), as `owner#n: timestamp level message {fields}`."""
    needles = [n for n in needles if n]
    found = []
    for inc in incarnations:
        for line in read_text(inc.stderr_path).splitlines():
            if any(needle in line for needle in needles):
                found.append(f"{inc.name}: {summarize_log_line(line)}")
                if len(found) >= limit:
                    return found
    return found


def summarize_log_line(line: str) -> str:
    try:
        record = json.loads(line)
    except ValueError:
        return line.strip()[:400]
    fields = dict(record.get("fields") or {})
    message = fields.pop("message", "")
    return f"{record.get('timestamp', '?')} {record.get('level', '?')} {message} {json.dumps(fields, sort_keys=True)}"[:600]


def commit_log_lines(incarnations: Iterable[Incarnation], partition_id: str, limit: int = 60) -> list[str]:
    """Every log line of a partition that names a location (a committed window) or an ownership
    transition, in time order, from all instances."""
    found = []
    for inc in incarnations:
        for line in read_text(inc.stderr_path).splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            fields = record.get("fields") or {}
            if str(fields.get("partition_id")) != partition_id:
                continue
            if "location" in fields or "event" in fields or "commit" in str(fields.get("message", "")):
                found.append((str(record.get("timestamp", "")), f"{inc.name}: {summarize_log_line(line)}"))
    found.sort()
    return [text for _, text in found[-limit:]]


# --------------------------------------------------------------------------------------------
# one run


class OutageRunner:
    """Stops Azurite (SIGTERM by PID: it saves its database on the way out), keeps it down for
    the scheduled seconds, and starts it again on the same port and data directory. Driven by
    the main loop's `tick()`, never from another thread: the processes the tests start die with
    the thread that started them (PR_SET_PDEATHSIG), so Azurite must be started by the thread
    that outlives it."""

    def __init__(self, azurite: Any, note: Callable[[str], None]) -> None:
        self.azurite = azurite
        self.note = note
        self.count = 0
        self.errors: list[str] = []
        self.intervals: list[list[float]] = []  # [stopped, started again] (monotonic)
        self._up_at: Optional[float] = None

    def busy(self) -> bool:
        return self._up_at is not None

    def start(self, seconds: float) -> None:
        assert not self.busy()
        stopping = time.monotonic()
        waited = self.azurite.stop()
        self.intervals.append([stopping, float("inf")])
        self.count += 1
        self._up_at = time.monotonic() + seconds
        self.note(f"Azurite stopped (took {waited:.1f} s); down for {seconds:.1f} s")

    def tick(self, now: Optional[float] = None) -> None:
        if self._up_at is not None and (now or time.monotonic()) >= self._up_at:
            self._restart()

    def _restart(self) -> None:
        try:
            self.azurite.restart()
            self.note(f"Azurite started again on port {self.azurite.port}")
        except Exception as err:  # noqa: BLE001
            self.errors.append(f"restarting Azurite: {err!r}")
        self._up_at = None
        self.intervals[-1][1] = time.monotonic()

    def finish(self) -> None:
        """Ends an outage now: the final phase needs the store."""
        if self._up_at is not None:
            self._restart()


@dataclass
class ChaosRun:
    seed: int
    sink_kind: str
    settings: ChaosSettings
    workdir: Path
    schedule: list[Action]
    fleet: Fleet
    producer: LedgerProducer
    config_path: Path  # one instance's config, for hubcap verify
    capture_dir: Path
    partitions: list[str]
    executed: collections.Counter = field(default_factory=collections.Counter)
    skipped: collections.Counter = field(default_factory=collections.Counter)
    zombies_taken: int = 0
    problems: list[str] = field(default_factory=list)  # harness-level failures (drain, catch-up, minimums)
    hub_last: dict[str, int] = field(default_factory=dict)
    checkpoints: dict[str, Optional[int]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    outages: int = 0
    outage_intervals: list[list[float]] = field(default_factory=list)


def run_chaos(
    *,
    seed: int,
    settings: ChaosSettings,
    sink_kind: str,
    emulator: Emulator,
    azurite: Any,
    workdir: Path,
) -> ChaosRun:
    """Starts the fleet and the producer, plays the schedule, then stops the producer, lets every
    partition be checkpointed up to the hub's last event, and drains the fleet with SIGTERM.
    Processes are stopped by PID however this ends."""
    started = time.monotonic()
    partitions = [str(i) for i in range(settings.partitions)]
    capture_dir = workdir / "capture"
    if sink_kind == "avro_file":
        sink = {"type": "avro_file", "path": str(capture_dir)}
    elif sink_kind == "avro_blob":
        sink = {"type": "avro_blob", "connection_string": azurite.connection_string, "container": CAPTURE_CONTAINER}
    else:
        raise ValueError(sink_kind)
    configs = {owner: hubcap_chaos_config(emulator, azurite, owner, sink, settings.max_window) for owner in OWNERS}
    fleet = Fleet(workdir, configs, seed, settings)
    schedule = build_schedule(seed, settings)
    (workdir / "schedule.txt").write_text(
        f"seed {seed}, {sink_kind}\n" + "\n".join(action.describe() for action in schedule) + "\n"
    )
    run = ChaosRun(
        seed, sink_kind, settings, workdir, schedule, fleet,
        LedgerProducer(emulator, partitions, settings.rate, settings.batch, seed),
        fleet.members[0].config_path, capture_dir, partitions,
    )
    reader = OwnershipReader(azurite, emulator)
    outage = OutageRunner(azurite, fleet.note)
    extra_rng = random.Random(f"chaos-extension:{seed}")
    try:
        fleet.start_all()
        run.producer.start()
        origin = time.monotonic()
        # (when, attempts so far, action, added by the extension)
        pending: list[tuple[float, int, Action, bool]] = [(a.at, 0, a, False) for a in schedule]

        def execute(action: Action) -> bool:
            """True when done; False to try again a moment later (no eligible target now)."""
            kind = action.kind
            if kind == "kill":
                target = fleet.kill(action.hint)
                what = f"kill -9 {target}"
            elif kind == "term":
                target = fleet.terminate(action.hint)
                what = f"SIGTERM {target}"
            elif kind == "zombie":
                if outage.busy():
                    return False
                target = fleet.pause(action.hint, reader, linger=action.params[0])
                what = f"SIGSTOP {target}"
            elif kind == "outage":
                if outage.busy() or any(m.state == "paused" for m in fleet.members):
                    return False
                outage.start(action.params[0])
                target, what = "azurite", f"Azurite outage of {action.params[0]} s"
            elif kind == "drop":
                answer = emulator.admin("POST", "/faults/drop-connections", timeout=5)
                target, what = "emulator", f"drop connections {answer}"
            elif kind == "detach":
                partition, condition = action.params
                body = {"hub": HUB, "condition": condition}
                if partition is not None:
                    body["partition"] = partition
                answer = emulator.admin("POST", "/faults/detach", body, timeout=5)
                target, what = "emulator", f"detach {partition or 'all'} {condition} {answer}"
            else:
                raise ValueError(kind)
            if target is None:
                return False
            fleet.note(what)
            return True

        retries = {"kill": (0.3, 40), "term": (0.5, 20), "zombie": (1.0, 20), "outage": (1.0, 30)}
        next_extra: collections.Counter = collections.Counter()  # kind -> earliest next extension action
        while True:
            now = time.monotonic() - origin
            while pending and pending[0][0] <= now:
                at, attempts, action, extra = pending.pop(0)
                try:
                    done = execute(action)
                except Exception as err:  # noqa: BLE001 - an admin call that failed is noted, not fatal
                    fleet.note(f"{action.kind} failed: {err!r}")
                    done = True
                if done:
                    run.executed[action.kind] += 1
                else:
                    step, limit = retries.get(action.kind, (0.5, 0))
                    if attempts < limit:
                        pending.append((now + step, attempts + 1, action, extra))
                        pending.sort(key=lambda item: item[0])
                    else:
                        run.skipped[action.kind] += 1
                        fleet.note(f"{action.kind} skipped: no eligible target")
            outage.tick()
            fleet.tick(reader)
            scheduled_left = any(not extra for *_, extra in pending)
            if not scheduled_left and now >= settings.duration_s and not outage.busy():
                short = shortfalls(run)
                if not short:
                    break
                if now >= settings.duration_s + settings.extension_s:
                    run.problems.append(
                        f"the faults ran {settings.extension_s:.0f} s past the schedule and still fell short of "
                        f"the minimums: {short}"
                    )
                    break
                if "hook_after_commit" in short:
                    fleet.want_hook = "after_commit"
                elif "hook_after_record" in short:
                    fleet.want_hook = "after_record"
                else:
                    fleet.want_hook = None
                # Short of a fault that needs a target (none was eligible when its time came):
                # one more of it, one at a time.
                for need, kind in (("kill9", "kill"), ("term", "term"), ("zombie", "zombie")):
                    waiting = any(extra and a.kind == kind for _, _, a, extra in pending)
                    if need in short and not waiting and now >= next_extra[kind]:
                        params = (round(extra_rng.uniform(0.0, 3.0), 2),) if kind == "zombie" else ()
                        pending.append((now, 0, Action(now, kind, extra_rng.randrange(len(OWNERS)), params), True))
                        pending.sort(key=lambda item: item[0])
                        next_extra[kind] = now + extra_rng.uniform(0.8, 2.0)
                        fleet.note(f"extension: one more {kind} ({short[need]})")
            time.sleep(TICK_S)
        run.timings["faults_s"] = time.monotonic() - origin

        # ---- the end: no more faults, no more events; every partition checkpointed; drain
        fleet.want_hook = ""
        outage.finish()
        run.outages = outage.count
        run.outage_intervals = outage.intervals
        run.problems += outage.errors
        fleet.resume_all()
        run.producer.stop()
        run.hub_last = hub_last_sequence_numbers(emulator, partitions)
        caught_up_at = time.monotonic()
        deadline = caught_up_at + settings.catch_up_s
        next_read = 0.0
        behind: dict[str, Optional[int]] = {pid: None for pid, last in run.hub_last.items() if last >= 0}
        while True:
            fleet.tick(reader)
            if time.monotonic() >= next_read:
                next_read = time.monotonic() + 0.5
                checkpoints = reader.checkpoints()
                if checkpoints is not None:
                    run.checkpoints = checkpoints
                    behind = {
                        pid: checkpoints.get(pid)
                        for pid, last in run.hub_last.items()
                        if last >= 0 and (checkpoints.get(pid) is None or checkpoints[pid] < last)
                    }
                    if not behind:
                        break
            if time.monotonic() > deadline:
                run.problems.append(
                    f"catch-up: {settings.catch_up_s:.0f} s after the producer stopped, partitions still "
                    f"checkpointed short of the hub's last event: "
                    f"{ {p: (run.checkpoints.get(p), run.hub_last[p]) for p in behind} } (checkpoint, last)"
                )
                break
            time.sleep(TICK_S)
        run.timings["catch_up_s"] = time.monotonic() - caught_up_at
        drain_started = time.monotonic()
        fleet.restarting = False
        fleet.terminate_all()
        deadline = drain_started + DRAIN_TIMEOUT_S + 15
        while not fleet.all_down():
            fleet.tick(reader)
            if time.monotonic() > deadline:
                run.problems.append(f"drain: instances still running {DRAIN_TIMEOUT_S + 15:.0f} s after SIGTERM")
                break
            time.sleep(TICK_S)
        run.timings["drain_s"] = time.monotonic() - drain_started
        checkpoints = reader.checkpoints()
        if checkpoints is not None:
            run.checkpoints = checkpoints
        run.zombies_taken = zombies_taken(fleet)
    finally:
        run.producer.halt(timeout=30)
        outage.finish()
        fleet.close()
        slow = run.producer.slow_sends
        (workdir / "harness-events.txt").write_text(
            "\n".join(fleet.events) + "\n\n" + fleet.timeline() + "\n\n"
            + f"producer: {run.producer.counts()}; sends over 0.2 s (t after the producer started, partition, s):\n  "
            + "\n  ".join(map(str, slow)) + "\n"
        )
    run.timings["run_s"] = time.monotonic() - started
    return run


def zombies_taken(fleet: Fleet) -> int:
    return sum(1 for e in fleet.events if "were taken over" in e)


def shortfalls(run: ChaosRun) -> dict[str, str]:
    counts = run.fleet.counts()
    counts["term"] = run.executed["term"]
    counts["zombie"] = zombies_taken(run.fleet)
    wanted = {
        "kill9": run.settings.min_kills,
        "hook_after_commit": run.settings.min_hook_commit,
        "hook_after_record": run.settings.min_hook_record,
        "term": run.settings.min_sigterms,
        "zombie": run.settings.zombies,
    }
    return {kind: f"{counts[kind]} < {need}" for kind, need in wanted.items() if counts[kind] < need}


# --------------------------------------------------------------------------------------------
# judging


@dataclass
class Finding:
    judge: str  # harness | verify | ledger | cross-check
    title: str
    details: list[str] = field(default_factory=list)

    def render(self, shown: int = 12) -> str:
        more = f"\n    ... and {len(self.details) - shown} more" if len(self.details) > shown else ""
        body = "".join(f"\n    {line}" for line in self.details[:shown])
        return f"[{self.judge}] {self.title}{body}{more}"


@dataclass
class Archive:
    files: list[ArchiveFile]
    # (partition, sequence number) -> [(file index, chaos id)]
    positions: dict[tuple[str, int], list[tuple[int, Optional[int]]]]
    # chaos id -> [(file index, partition, sequence number)]
    ids: dict[int, list[tuple[int, str, int]]]
    no_id: list[tuple[int, int]]  # (file index, sequence number) of records without a chaos id

    @staticmethod
    def index(files: list[ArchiveFile]) -> "Archive":
        positions: dict = collections.defaultdict(list)
        ids: dict = collections.defaultdict(list)
        no_id = []
        for index, item in enumerate(files):
            pid = item.partition_id if item.partition_id is not None else "?"
            for seq, _offset, event_id, _prop in item.records:
                positions[(pid, seq)].append((index, event_id))
                if event_id is None:
                    no_id.append((index, seq))
                else:
                    ids[event_id].append((index, pid, seq))
        return Archive(files, dict(positions), dict(ids), no_id)

    def partition_stats(self) -> dict[str, dict]:
        stats: dict[str, dict] = {}
        for index, item in enumerate(self.files):
            pid = item.partition_id if item.partition_id is not None else "?"
            entry = stats.setdefault(pid, {"files": 0, "records": 0, "seqs": collections.Counter()})
            entry["files"] += 1
            entry["records"] += len(item.records)
            entry["seqs"].update(item.sequence_numbers())
        for entry in stats.values():
            seqs = entry["seqs"]
            entry["distinct"] = len(seqs)
            entry["duplicate_events"] = sum(count - 1 for count in seqs.values())
            entry["first"] = min(seqs) if seqs else None
            entry["last"] = max(seqs) if seqs else None
            entry["ranges"] = ranges(seqs)
        return stats


def judge_harness(run: ChaosRun) -> list[Finding]:
    findings = []
    settings = run.settings
    counts = run.fleet.counts()
    for problem in run.problems:
        findings.append(Finding("harness", problem))
    for problem in run.fleet.findings:
        findings.append(Finding("harness", problem))
    minimums = {
        "kill -9 at random moments": (counts["kill9"], settings.min_kills),
        "kills by HUBCAP_TEST_CRASH=after_commit:N (stderr line)": (counts["hook_after_commit"], settings.min_hook_commit),
        "kills by HUBCAP_TEST_CRASH=after_record:N (stderr line)": (counts["hook_after_record"], settings.min_hook_record),
        "zombies (SIGSTOP until the ownership was taken, then SIGCONT)": (run.zombies_taken, settings.zombies),
        "Azurite outages": (run.outages, settings.outages),
        "SIGTERM restarts": (run.executed["term"], settings.min_sigterms),
    }
    short = [f"{what}: {got} < {need}" for what, (got, need) in minimums.items() if got < need]
    if short:
        findings.append(Finding("harness", "the run fell short of its minimum faults", short))
    # An instance that exited without being told to, outside an Azurite outage (plus the time
    # a start takes to give up), is a finding; during one, a failed start is expected.
    def in_outage(moment: float) -> bool:
        return any(start - 1 <= moment <= end + 15 for start, end in run.outage_intervals)

    unexpected = [
        inc for inc in run.fleet.all_incarnations()
        if inc.cause == "exit" and inc.ended is not None and not in_outage(inc.ended)
    ]
    if unexpected:
        findings.append(Finding("harness", f"{len(unexpected)} instances exited on their own (not during an Azurite outage)", [
            f"{inc.name} exit {inc.exit_code}: {last_error_line(inc.stderr_path)} (log {inc.stderr_path})"
            for inc in unexpected
        ]))
    return findings


def last_error_line(path: Path) -> str:
    lines = [l for l in read_text(path).splitlines() if '"ERROR"' in l or "Error" in l or "error" in l]
    return summarize_log_line(lines[-1]) if lines else tail(path, 3).replace("\n", " | ")


def judge_verify(run: ChaosRun, verify: VerifyResult) -> list[Finding]:
    findings = []
    doc = verify.document
    if verify.exit_code != 0 or doc is None or doc.get("ok") is not True:
        findings.append(Finding("verify", f"hubcap verify exited {verify.exit_code} with ok={None if doc is None else doc.get('ok')}", [
            f"stderr: {verify.stderr.strip()[:800]}" if verify.stderr.strip() else "stderr: (empty)",
            *( [f"stdout (not JSON): {verify.stdout.strip()[:400]}"] if doc is None else [] ),
        ]))
    if doc is None:
        return findings
    for key in ("unreadable", "problems"):
        if doc.get(key):
            findings.append(Finding("verify", f"verify reports {key}", [json.dumps(x)[:300] for x in doc[key]]))
    reported = {str(p.get("partition_id")): p for p in doc.get("partitions") or []}
    gaps, dups, ahead, coverage = [], [], [], []
    for pid, entry in sorted(reported.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else -1):
        if entry.get("gaps"):
            gaps.append(f"partition {pid}: gaps {entry['gaps'][:8]}")
        if entry.get("duplicate_events"):
            dups.append(
                f"partition {pid}: {entry['duplicate_events']} duplicate events, "
                + "; ".join(
                    f"{d.get('first')}..{d.get('last')} x{d.get('copies')} in {d.get('files')}"
                    for d in (entry.get("duplicates") or [])[:4]
                )
            )
        if entry.get("checkpoint_ahead"):
            ahead.append(f"partition {pid}: checkpoint {entry.get('checkpoint')} ahead of the data "
                         f"(last archived {entry.get('last_sequence_number')})")
    for pid, last in sorted(run.hub_last.items(), key=lambda kv: int(kv[0])):
        if last < 0:
            continue
        entry = reported.get(pid)
        if entry is None:
            coverage.append(f"partition {pid}: not in verify's report (the hub holds 0..{last})")
        elif entry.get("first_sequence_number") != 0 or entry.get("last_sequence_number") != last:
            coverage.append(f"partition {pid}: verify saw {entry.get('first_sequence_number')}.."
                            f"{entry.get('last_sequence_number')}, the hub holds 0..{last}")
    if gaps:
        findings.append(Finding("verify", "verify reports gaps", gaps))
    if dups:
        findings.append(Finding("verify", "verify reports duplicate events", dups))
    if ahead:
        findings.append(Finding("verify", "verify reports checkpoints ahead of the data", ahead))
    if coverage:
        findings.append(Finding("verify", "verify's ranges do not cover what the hub holds", coverage))
    return findings


def suspect_positions(archive: "Archive") -> dict[str, tuple[int, int]]:
    """partition -> (first, last) sequence numbers to read back from the hub: where an id is
    archived at more than one sequence number (the producer may have put it into the hub twice,
    or the archive holds an event at the wrong number; only the hub can tell)."""
    spans: dict[str, tuple[int, int]] = {}
    for where in archive.ids.values():
        if len({(pid, seq) for _, pid, seq in where}) < 2:
            continue
        for _, pid, seq in where:
            first, last = spans.get(pid, (seq, seq))
            spans[pid] = (min(first, seq), max(last, seq))
    return spans


def read_hub(
    emulator: Emulator, spans: dict[str, tuple[int, int]], timeout: float = 120.0
) -> tuple[dict[tuple[str, int], Optional[int]], Optional[str]]:
    """What the hub holds in each partition's span, read with the SDK's consumer in its own
    consumer group: (partition, sequence number) -> chaos id. The second value says why the read
    is incomplete."""
    held: dict[tuple[str, int], Optional[int]] = {}
    problems = []
    deadline = time.monotonic() + timeout
    for pid, (first, last) in sorted(spans.items()):
        lock = threading.Lock()
        client = EventHubConsumerClient.from_connection_string(
            emulator.connection_string(), consumer_group=REFERENCE_CONSUMER_GROUP, eventhub_name=HUB,
            retry_total=5, retry_backoff_factor=0.3,
        )
        failure: list[BaseException] = []
        top = [-1]

        def on_batch(context, events) -> None:
            with lock:
                for event in events:
                    props = event.properties or {}
                    held[(pid, event.sequence_number)] = props.get(b"chaos_id", props.get("chaos_id"))
                    top[0] = max(top[0], event.sequence_number)

        def run() -> None:
            try:
                client.receive_batch(
                    on_event_batch=on_batch, partition_id=pid, starting_position=first,
                    starting_position_inclusive=True, max_batch_size=500, max_wait_time=1,
                )
            except BaseException as err:  # noqa: BLE001
                failure.append(err)

        thread = threading.Thread(target=run, name=f"chaos-hub-reader-{pid}", daemon=True)
        thread.start()
        try:
            while True:
                with lock:
                    if top[0] >= last:
                        break
                if failure:
                    problems.append(f"partition {pid}: the SDK consumer raised {failure[0]!r}")
                    break
                if time.monotonic() > deadline:
                    problems.append(f"partition {pid}: {first}..{last} not read within {timeout:.0f} s")
                    break
                time.sleep(0.05)
        finally:
            client.close()
            thread.join(timeout=30)
    return held, ("; ".join(problems) or None)


def judge_ledger(
    run: ChaosRun, archive: Archive, hub: dict[tuple[str, int], Optional[int]], hub_problem: Optional[str]
) -> tuple[list[Finding], dict]:
    """(2) The producer's ledger and the hub's own content against the archive.

    What must hold: every sequence number the hub holds (0..last) is archived exactly once;
    every acknowledged id is archived; no id is archived at more places than the hub holds it.
    The SDK's producer can put one batch into the hub twice (after a connection drop it sends
    again what it had in flight, even with retry_total=0): such an id is in the hub at two
    sequence numbers, and archiving both is right, so where the archive holds an id at two
    sequence numbers the hub is read back there (`hub`, see `suspect_positions`) and the
    archive must hold exactly what the hub holds at those numbers."""
    findings = []
    acked, uncertain = run.producer.acked, run.producer.uncertain
    files = archive.files
    if hub_problem:
        findings.append(Finding("ledger", f"could not read the hub back: {hub_problem}"))
    unreadable = [f"{f.name}: {f.error}" for f in files if f.error]
    if unreadable:
        findings.append(Finding("ledger", f"{len(unreadable)} archive files do not read whole with fastavro", unreadable))

    hub_ids: dict[int, list[tuple[str, int]]] = collections.defaultdict(list)
    for (pid, seq), event_id in hub.items():
        if event_id is not None:
            hub_ids[event_id].append((pid, seq))
    # Acknowledged ids: archived at least once; the hub must have them too.
    lost = sorted(i for i in acked if i not in archive.ids)
    if lost:
        not_in_hub = [i for i in lost if i not in hub_ids]
        findings.append(Finding("ledger", f"{len(lost)} acknowledged events are in no archive file (lost)"
                                + (f"; {len(not_in_hub)} of them are not in the hub either" if not_in_hub else ""), [
            f"id {i} (partition {acked[i]}, in the hub at {hub_ids.get(i) or 'no sequence number'})" for i in lost[:20]
        ] + [f"ids: {compress(lost)}"]))
    # No id archived more often than the hub holds it.
    over = {i: where for i, where in archive.ids.items() if len(where) > max(1, len(hub_ids.get(i, ())))}
    if over:
        details = []
        for event_id in sorted(over)[:20]:
            status = "acked" if event_id in acked else "uncertain" if event_id in uncertain else "unknown"
            details.append(f"id {event_id} ({status}, {len(hub_ids.get(event_id, ()))}x in the hub): " + "; ".join(
                f"{files[i].name} seq {seq}" for i, _pid, seq in over[event_id]))
        findings.append(Finding("ledger", f"{len(over)} event ids are archived more often than the hub holds them "
                                          f"({sum(len(w) - max(1, len(hub_ids.get(i, ()))) for i, w in over.items())} "
                                          f"extra copies)", details))
    unknown = sorted(i for i in archive.ids if i not in acked and i not in uncertain)
    if unknown or archive.no_id:
        findings.append(Finding("ledger", "archive records the producer never sent", [
            f"id {i} in {files[archive.ids[i][0][0]].name}" for i in unknown[:10]
        ] + [f"no chaos_id: {files[i].name} seq {seq}" for i, seq in archive.no_id[:10]]))
    misplaced = [
        f"id {i}: sent to partition {(acked.get(i) or uncertain.get(i))}, archived under {pid} ({files[f].name})"
        for i, where in archive.ids.items() for f, pid, _seq in where
        if (acked.get(i) or uncertain.get(i)) not in (None, pid)
    ]
    if misplaced:
        findings.append(Finding("ledger", f"{len(misplaced)} events archived under the wrong partition", misplaced))
    # The hub is the truth of what there is to archive: sequence numbers 0..last, each once,
    # each the event the hub holds there.
    missing_from_hub = {}
    for pid, last in run.hub_last.items():
        gone = [seq for seq in range(last + 1) if (pid, seq) not in archive.positions]
        if gone:
            missing_from_hub[pid] = gone
    if missing_from_hub:
        findings.append(Finding("ledger", "events in the hub that are in no archive file", [
            f"partition {pid}: sequence numbers {compress(seqs)} (hub last {run.hub_last[pid]})"
            for pid, seqs in sorted(missing_from_hub.items(), key=lambda kv: int(kv[0]))
        ]))
    beyond = [f"partition {pid} seq {seq}" for (pid, seq) in archive.positions
              if pid in run.hub_last and seq > run.hub_last[pid]]
    if beyond:
        findings.append(Finding("ledger", "archived sequence numbers the hub never had", beyond[:10]))
    if not hub_problem:
        different = [
            f"partition {pid} seq {seq}: the hub holds id {hub.get((pid, seq))}, "
            + "; ".join(f"{files[f].name} holds id {i}" for f, i in copies if i != hub.get((pid, seq)))
            for (pid, seq), copies in sorted(archive.positions.items())
            if (pid, seq) in hub and any(i != hub[(pid, seq)] for _, i in copies)
        ]
        if different:
            findings.append(Finding("ledger", f"{len(different)} archived events differ from what the hub holds at "
                                              f"their sequence number", different))
    duplicated_positions = {key: copies for key, copies in archive.positions.items() if len(copies) > 1}
    if duplicated_positions:
        findings.append(Finding("ledger", f"{len(duplicated_positions)} sequence numbers are archived more than once "
                                          f"({sum(len(c) - 1 for c in duplicated_positions.values())} extra copies)", [
            f"partition {pid} seq {seq}: in {[files[f].name for f, _ in copies]}"
            for (pid, seq), copies in sorted(duplicated_positions.items())[:20]
        ]))
    in_hub_twice = {i: w for i, w in hub_ids.items() if len(w) > 1}
    stats = {
        "archived_records": sum(len(f.records) for f in files),
        "archived_distinct": len(archive.positions),
        "duplicate_records": sum(len(c) - 1 for c in duplicated_positions.values()),
        "duplicate_ids": len(over),
        "lost_acked": len(lost),
        "missing_from_hub": sum(len(v) for v in missing_from_hub.values()),
        "hub_read": len(hub),
        "producer_duplicates_in_hub": len(in_hub_twice),
    }
    stats["producer_duplicates_sample"] = [f"id {i} at {w}" for i, w in sorted(in_hub_twice.items())[:5]]
    return findings, stats


def judge_cross_check(run: ChaosRun, archive: Archive, verify: VerifyResult, sample: int = 12) -> list[Finding]:
    """(3) What verify reported against what fastavro reads: per partition (files, events,
    first/last, ranges, duplicates, checkpoint), and a sample of files record by record:
    fastavro against `hubcap cat` field by field, and (blobs) against the blob's metadata."""
    findings = []
    mine = archive.partition_stats()
    doc = verify.document
    if doc is not None:
        disagreements = []
        if doc.get("files") != len(archive.files):
            disagreements.append(f"files: verify {doc.get('files')}, fastavro read {len(archive.files)}")
        records = sum(len(f.records) for f in archive.files)
        if doc.get("events") != records:
            disagreements.append(f"events: verify {doc.get('events')}, fastavro read {records} records")
        reported = {str(p.get("partition_id")): p for p in doc.get("partitions") or []}
        for pid in sorted(set(mine) | set(reported), key=lambda p: int(p) if p.isdigit() else -1):
            a, v = mine.get(pid), reported.get(pid)
            if a is None or v is None:
                disagreements.append(f"partition {pid}: {'only verify' if a is None else 'only fastavro'} has it")
                continue
            checks = {
                "files": (v.get("files"), a["files"]),
                "first_sequence_number": (v.get("first_sequence_number"), a["first"]),
                "last_sequence_number": (v.get("last_sequence_number"), a["last"]),
                "ranges": ([list(r) for r in v.get("ranges") or []], a["ranges"]),
                "duplicate_events": (v.get("duplicate_events"), a["duplicate_events"]),
            }
            for key, (theirs, ours) in checks.items():
                if theirs != ours:
                    disagreements.append(f"partition {pid} {key}: verify {str(theirs)[:200]}, fastavro {str(ours)[:200]}")
            if v.get("events") != a["records"]:
                disagreements.append(f"partition {pid} events: verify {v.get('events')}, fastavro {a['records']} records")
            gaps = [[x[1] + 1, y[0] - 1] for x, y in zip(a["ranges"], a["ranges"][1:])]
            if [list(g) for g in v.get("gaps") or []] != gaps:
                disagreements.append(f"partition {pid} gaps: verify {v.get('gaps')}, fastavro {gaps}")
            # Every duplicate verify names: fastavro finds those numbers `copies` times, in
            # exactly the files verify names.
            for d in v.get("duplicates") or []:
                named = sorted(d.get("files") or [])
                first, last = d.get("first", 0), d.get("last", -1)
                holding = sorted({archive.files[i].name for seq in range(first, last + 1)
                                  for i, _ in archive.positions.get((pid, seq), [])})
                copies = {len(archive.positions.get((pid, seq), [])) for seq in range(first, last + 1)}
                if named != holding or copies != {d.get("copies")}:
                    disagreements.append(f"partition {pid}: verify's duplicate {d}; fastavro finds {sorted(copies)} "
                                         f"copies in {holding[:6]}")
            found = a["duplicate_events"]
            listed = sum((d.get("last", 0) - d.get("first", 0) + 1) * (d.get("copies", 1) - 1)
                         for d in v.get("duplicates") or [])
            if found and listed != found:
                disagreements.append(f"partition {pid}: verify lists duplicates worth {listed} extra copies, "
                                     f"fastavro finds {found}")
            checkpoint = v.get("checkpoint")
            stored = run.checkpoints.get(pid)
            if (checkpoint or {}).get("sequence_number") != stored:
                disagreements.append(f"partition {pid} checkpoint: verify {checkpoint}, the store holds {stored}")
        if disagreements:
            findings.append(Finding("cross-check", "verify's report disagrees with fastavro", disagreements))

    # A sample of files, record by record.
    rng = random.Random(f"chaos-sample:{run.seed}")
    readable = [f for f in archive.files if f.error is None and f.local_path is not None]
    chosen = rng.sample(readable, min(sample, len(readable)))
    mismatches = []
    for item in chosen:
        code, lines, stderr = run_cat([item.local_path])
        if code != 0:
            mismatches.append(f"{item.name}: hubcap cat exited {code}: {stderr.strip()[:200]}")
            continue
        if len(lines) != len(item.raw_records):
            mismatches.append(f"{item.name}: hubcap cat printed {len(lines)} events, fastavro read {len(item.raw_records)}")
            continue
        for position, (line, record) in enumerate(zip(lines, item.raw_records)):
            expected = cat_view(record)
            got = {key: line.get(key) for key in expected}
            if got != expected:
                mismatches.append(f"{item.name} record {position}: hubcap cat {got}, fastavro {expected}")
                break
        if item.metadata:
            seqs = item.sequence_numbers()
            want = {"eventcount": str(len(seqs)),
                    "firstsequencenumber": str(seqs[0]) if seqs else None,
                    "lastsequencenumber": str(seqs[-1]) if seqs else None}
            got_meta = {key: item.metadata.get(key) for key in want}
            if got_meta != want:
                mismatches.append(f"{item.name}: blob metadata {got_meta}, the records say {want}")
        seqs = item.sequence_numbers()
        if seqs and seqs != list(range(seqs[0], seqs[0] + len(seqs))):
            mismatches.append(f"{item.name}: sequence numbers not consecutive: {compress(seqs)}")
    if mismatches:
        findings.append(Finding("cross-check", f"sampled files ({len(chosen)}) disagree with fastavro", mismatches))
    return findings


def cat_view(record: dict) -> dict:
    """What `hubcap cat` prints for a record, from fastavro's reading of it (the fields the chaos
    events use: no partition key, text bodies, integer and string properties)."""
    ms = record["SystemProperties"].get("x-opt-enqueued-time")
    moment = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc) if ms is not None else None
    body = record["Body"]
    return {
        "sequence_number": record["SequenceNumber"],
        "offset": record["Offset"],
        "enqueued_time": None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z",
        "properties": dict(record["Properties"]),
        "body": None if body is None else body.decode("utf-8", errors="replace"),
    }


def duplicate_forensics(run: ChaosRun, archive: Archive, shown: int = 3) -> list[str]:
    """For the first few duplicated sequence numbers: the files holding them (with their
    modification time), the log lines naming those files, and the partition's commit and
    ownership log lines around then."""
    out = []
    duplicated = sorted(
        ((pid, seq), copies) for (pid, seq), copies in archive.positions.items() if len(copies) > 1
    )
    seen_files: set = set()
    incarnations = run.fleet.all_incarnations()
    for (pid, seq), copies in duplicated:
        names = tuple(sorted({archive.files[i].name for i, _ in copies}))
        if names in seen_files:
            continue
        seen_files.add(names)
        out.append(f"partition {pid} seq {seq} is in {len(copies)} files:")
        for i, _ in copies:
            item = archive.files[i]
            seqs = item.sequence_numbers()
            out.append(f"  {item.name}: seq {seqs[0]}..{seqs[-1]} ({len(seqs)} events), modified "
                       f"{item.modified.isoformat() if item.modified else '?'} {item.metadata or ''}")
        needles = list(names)  # the file sink logs absolute paths, which end in these
        mentioning = log_lines_mentioning(incarnations, needles)
        out.append("  log lines naming these files:" + ("".join(f"\n    {l}" for l in mentioning) or " (none)"))
        partition_lines = commit_log_lines(incarnations, pid)
        out.append(f"  partition {pid}'s commit/ownership log lines (last {len(partition_lines)}):"
                   + "".join(f"\n    {l}" for l in partition_lines))
        if len(seen_files) >= shown:
            break
    return out


def summary(run: ChaosRun, stats: dict, verify: Optional[VerifyResult], files: int) -> dict:
    counts = run.fleet.counts()
    doc = verify.document if verify else None
    return {
        "seed": run.seed,
        "sink": run.sink_kind,
        "soak": run.settings.soak,
        "partitions": run.settings.partitions,
        "faults_s": round(run.timings.get("faults_s", 0), 1),
        "run_s": round(run.timings.get("run_s", 0), 1),
        "catch_up_s": round(run.timings.get("catch_up_s", 0), 1),
        "drain_s": round(run.timings.get("drain_s", 0), 1),
        "kill9": counts["kill9"],
        "hook_after_commit": counts["hook_after_commit"],
        "hook_after_record": counts["hook_after_record"],
        "sigterm": counts["sigterm"],
        "other_exits": counts["exit"],
        "incarnations": len(run.fleet.all_incarnations()),
        "zombies_taken": run.zombies_taken,
        "outages": run.outages,
        "drops": run.executed["drop"],
        "detaches": run.executed["detach"],
        "skipped": dict(run.skipped),
        **{f"events_{k}": v for k, v in run.producer.counts().items()},
        "hub_events": sum(last + 1 for last in run.hub_last.values()),
        "files": files,
        **stats,
        "verify_exit": None if verify is None else verify.exit_code,
        "verify_ok": None if doc is None else doc.get("ok"),
        "verify_s": None if verify is None else round(verify.seconds, 1),
    }
