#!/usr/bin/env python3
"""Checkpoint-store writes per committed window: hubcap's requests counted in Azurite's access log.

    python3 bench/store_writes.py                                  # target/release, defaults below
    python3 bench/store_writes.py --bin-dir /path/to/release --partitions 4 --events 200000 \\
        --size 1024 --max-window-bytes 8MiB --max-window 3s --update-interval 10s --idle-seconds 25

Standard library only (no venv needed); it reuses bench/run.py's process helpers (spawn, stop by
PID, PR_SET_PDEATHSIG, the emulator's start and preload). It needs the release binaries
`hubcap` and `hubcap-emulator` (`cargo build --release -p hubcap -p hubcap-emulator`, or
`--bin-dir` with a copy of other builds) and `node_modules/.bin/azurite-blob` (`npm ci`).

What it does, all on 127.0.0.1:

1. starts Azurite *without* `--silent`, so its stdout is an access log, one line per request
   (`"PUT /devstoreaccount1/<container>/<blob>?comp=metadata HTTP/1.1" 200`); each line is
   time-stamped as it arrives;
2. starts `hubcap-emulator` with one hub of `--partitions` partitions and preloads
   `--events` events of `--size` bytes;
3. runs `hubcap run` with the `azure_blob` checkpoint store on a fresh container, the
   `avro_file` sink (null codec, `max_window_bytes`, `max_window`), greedy balancing,
   `update_interval`, JSON logs at info;
4. waits until the events of hubcap's "window committed and checkpointed" log lines add up to
   the backlog, lets it idle `--idle-seconds` (balancing cycles only), sends SIGTERM and waits
   for it to drain, release and exit; then stops Azurite and the emulator (by PID);
5. classifies every request on the consumer group's `ownership/` and `checkpoint/` blobs and
   prints a table.

How writes are attributed (from the order of requests per partition; the access log does not
show headers or metadata):

- *claim*: Put Blob on an ownership record (a fresh container has none, so claims create them);
- *fencing renewal*: an ownership Set Blob Metadata whose partition's next record write is a
  checkpoint write (hubcap holds the partition's lease lock from that renewal to its checkpoint);
- *periodic renewal*: each balancing cycle renews every owned partition, then lists the
  ownerships; per cycle (between two ownership listings) and owned partition, one remaining
  ownership Set Blob Metadata is counted as that cycle's renewal;
- *release*: the last ownership Set Blob Metadata of a partition after SIGTERM;
- *other ownership write*: what is left; with the exactly-once protocol these are the per-window
  commit records (docs/exactly-once.md step 3), before it there should be none;
- *checkpoint writes*: successful Put Blob / Set Blob Metadata on checkpoint records; failed
  attempts (e.g. the 404 of a Set Blob Metadata on a checkpoint that does not exist yet, or a
  412 compare-and-swap conflict) are listed apart.

A commit record and a periodic renewal of the same partition in the same cycle are both plain
Set Blob Metadata and may swap labels; their counts do not change. Windows are counted from the
log lines and cross-checked with the archive's files and the successful checkpoint writes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import queue
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as harness  # noqa: E402  (bench/run.py: spawn, stop, start_emulator, ...)

REPO = harness.REPO
COMMITTED = "window committed and checkpointed"
ACCESS = re.compile(r'"(?P<method>[A-Z]+) (?P<url>\S+) HTTP/[\d.]+" (?P<status>\d{3})')


def log(message: str) -> None:
    harness.log(message)


# ------------------------------------------------------------------------------------------------
# Azurite with its access log


class AccessLog:
    """Azurite's stdout, read by a thread; every line time-stamped (monotonic) on arrival."""

    def __init__(self, process: subprocess.Popen, copy: Path) -> None:
        self.process, self.lines = process, []
        self.ready = threading.Event()
        self.copy = copy
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        with open(self.copy, "w") as out:
            for raw in iter(self.process.stdout.readline, b""):
                text = raw.decode(errors="replace").rstrip("\n")
                self.lines.append((time.monotonic(), text))
                out.write(text + "\n")
                if "successfully listens" in text:
                    self.ready.set()


def start_azurite(work: Path) -> tuple[harness.Azurite, AccessLog]:
    binary = REPO / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: run `npm ci --no-audit --no-fund` in {REPO}")
    location = work / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    port = harness.free_port()
    process = harness.spawn([str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                             str(location), "--skipApiVersionCheck", "--disableTelemetry"],
                            stdout=work / "azurite.out", stderr=work / "azurite.err", pipe_stdout=True)
    access = AccessLog(process, work / "azurite.access.log")
    if not access.ready.wait(30):
        harness.stop(process)
        raise SystemExit(f"Azurite did not start:\n{harness.tail(work / 'azurite.err')}")
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    return harness.Azurite(process, port), access


# ------------------------------------------------------------------------------------------------
# hubcap


def write_config(path: Path, emulator: harness.Emulator, azurite: harness.Azurite, container: str,
                 capture: Path, opts: argparse.Namespace) -> None:
    sections = {
        "eventhub": {"connection_string": emulator.connection_string(), "name": "bench",
                     "consumer_group": "hubcap", "start_position": "earliest"},
        "checkpoint_store": {"type": "azure_blob", "connection_string": azurite.connection_string,
                             "container": container},
        "load_balancing": {"strategy": "greedy", "update_interval": opts.update_interval},
        "sink": {"type": "avro_file", "path": str(capture), "codec": "null", "max_window": opts.max_window,
                 "max_window_bytes": opts.max_window_bytes},
        "http": {"listen": "off"},
        "log": {"format": "json", "level": "info"},
    }
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
        lines.append("")
    path.write_text("\n".join(lines))


def log_records(path: Path) -> list[dict]:
    """hubcap's JSON log lines (fields flattened beside the message)."""
    records = []
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return records
    for line in text.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        fields = obj.get("fields") if isinstance(obj.get("fields"), dict) else {}
        records.append({**obj, **fields})
    return records


def committed(records: list[dict]) -> list[dict]:
    return [r for r in records if r.get("message") == COMMITTED]


# ------------------------------------------------------------------------------------------------
# the access log, classified


def parse_requests(lines: list[tuple[float, str]], container: str) -> list[dict]:
    requests = []
    prefix = f"/{harness.AZURITE_ACCOUNT}/{container}"
    for t, text in lines:
        m = ACCESS.search(text)
        if not m:
            continue
        url = urllib.parse.urlsplit(m["url"])
        path = urllib.parse.unquote(url.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if not (path == prefix or path.startswith(prefix + "/")):
            continue
        blob = path[len(prefix) + 1:]
        method, status = m["method"], int(m["status"])
        kind, partition = None, None
        segments = blob.split("/")
        if len(segments) >= 2 and segments[-2] in ("ownership", "checkpoint"):
            kind, partition = segments[-2], segments[-1]
        if query.get("comp") == "list":
            listed = query.get("prefix", "")
            op = "List Blobs " + ("ownership" if "/ownership/" in listed else
                                  "checkpoint" if "/checkpoint/" in listed else repr(listed))
        elif query.get("restype") == "container":
            op = {"PUT": "Create Container", "GET": "Get Container Properties",
                  "HEAD": "Get Container Properties"}.get(method, method + " container")
        elif method == "PUT":
            op = "Set Blob Metadata" if query.get("comp") == "metadata" else (
                "Put Blob" if "comp" not in query else f"PUT comp={query['comp']}")
        elif method in ("GET", "HEAD"):
            op = "Get Blob Properties" if method == "HEAD" else "Get Blob"
        else:
            op = method
        requests.append({"t": t, "method": method, "op": op, "kind": kind, "partition": partition,
                         "status": status, "ok": 200 <= status < 300, "line": text})
    return requests


def classify(requests: list[dict], t_term: float) -> None:
    """Adds a 'role' to every write on an ownership or checkpoint record (see the docstring)."""
    writes = [r for r in requests if r["method"] == "PUT" and r["kind"]]
    by_partition = defaultdict(list)
    for r in writes:
        by_partition[r["partition"]].append(r)
    for seq in by_partition.values():
        for i, r in enumerate(seq):
            if r["kind"] == "checkpoint":
                r["role"] = "checkpoint" if r["ok"] else "checkpoint (failed attempt)"
            elif not r["ok"]:
                r["role"] = "ownership (failed attempt)"
            elif r["op"] == "Put Blob":
                r["role"] = "claim"
            elif i + 1 < len(seq) and seq[i + 1]["kind"] == "checkpoint":
                r["role"] = "fencing renewal"
        own = [r for r in seq if r["kind"] == "ownership" and r["ok"] and "role" not in r]
        after_term = [r for r in own if r["t"] >= t_term]
        if after_term:
            after_term[-1]["role"] = "release"
    # Periodic renewals: a cycle renews each owned partition and then lists the ownerships.
    listings = [r["t"] for r in requests if r["op"] == "List Blobs ownership" and r["ok"]]
    claimed_at = {}
    for r in writes:
        if r.get("role") == "claim":
            claimed_at.setdefault(r["partition"], r["t"])
    for previous, listing in zip(listings, listings[1:]):
        for partition, seq in by_partition.items():
            if partition not in claimed_at or claimed_at[partition] >= listing:
                continue
            candidates = [r for r in seq if r["kind"] == "ownership" and r["ok"] and "role" not in r
                          and max(previous, claimed_at[partition]) < r["t"] <= listing]
            if candidates:
                candidates[-1]["role"] = "periodic renewal"
    for r in writes:
        r.setdefault("role", "other ownership write (commit record)")


# ------------------------------------------------------------------------------------------------
# main


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="hubcap's checkpoint-store writes per committed window "
                                                 "(bench/store_writes.py docstring)")
    parser.add_argument("--bin-dir", type=Path, help="directory with hubcap and hubcap-emulator "
                                                     "(default: the workspace's target/release)")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--events", type=int, default=200_000, help="backlog, all partitions together")
    parser.add_argument("--size", type=int, default=1024, help="event body bytes")
    parser.add_argument("--max-window-bytes", default="8MiB")
    parser.add_argument("--max-window", default="3s", help="closes each partition's last, partial window")
    parser.add_argument("--update-interval", default="10s")
    parser.add_argument("--idle-seconds", type=float, default=25.0,
                        help="time hubcap keeps running after the drain (periodic renewals only)")
    parser.add_argument("--timeout", type=float, default=300.0, help="limit for the drain, s")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a new one under /tmp); kept")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def main() -> int:
    opts = parse_args()
    release = opts.bin_dir or harness.target_dir() / "release"
    for name in ("hubcap", "hubcap-emulator"):
        if not (release / name).exists():
            raise SystemExit(f"{release / name} is missing")
    work = opts.work or Path(tempfile.mkdtemp(prefix="hubcap-store-writes-"))
    work.mkdir(parents=True, exist_ok=True)
    hubcap = release / "hubcap"
    version = subprocess.run([str(hubcap), "--version"], capture_output=True, text=True).stdout.strip()
    log(f"scratch {work}; {hubcap} ({version}, sha256 {sha256(hubcap)[:16]})")
    per_partition = max(1, opts.events // opts.partitions)
    backlog = per_partition * opts.partitions
    container = "storewrites"
    capture = work / "capture"
    result: dict = {}
    try:
        azurite, access = start_azurite(work)
        emulator = harness.start_emulator(release, work, "emulator", {"bench": opts.partitions}, ["hubcap"], None)
        log(f"preloading {backlog} events of {opts.size} B over {opts.partitions} partitions")
        emulator.preload("bench", per_partition, opts.size)
        config = work / "hubcap.toml"
        write_config(config, emulator, azurite, container, capture, opts)
        err = work / "hubcap.err"
        t_start = time.monotonic()
        process = harness.spawn([str(hubcap), "run", "--config", str(config)], stdout=work / "hubcap.out",
                                stderr=err)
        done = 0
        while time.monotonic() - t_start < opts.timeout:
            if process.poll() is not None:
                raise SystemExit(f"hubcap exited with {process.returncode}:\n{harness.tail(err)}")
            done = sum(int(r.get("events", 0)) for r in committed(log_records(err)))
            if done >= backlog:
                break
            time.sleep(0.2)
        t_drained = time.monotonic()
        if done < backlog:
            raise SystemExit(f"only {done} of {backlog} events committed after {opts.timeout:.0f} s:\n"
                             f"{harness.tail(err)}")
        log(f"drained in {t_drained - t_start:.1f} s; idling {opts.idle_seconds:.0f} s")
        time.sleep(opts.idle_seconds)
        t_term = time.monotonic()
        exit_status = harness.stop(process, 60.0)
        t_exit = time.monotonic()
        log(f"hubcap stopped ({exit_status[0] if exit_status else '?'}) {t_exit - t_term:.1f} s after SIGTERM")
        time.sleep(1.0)  # the last access-log lines
        harness.stop(emulator.process)
        harness.stop(azurite.process)
        access.thread.join(10)
    finally:
        harness.stop_all()

    records = log_records(work / "hubcap.err")
    windows = committed(records)
    files = [p for p in capture.rglob("*.avro") if ".hubcap-staging" not in p.parts] if capture.exists() else []
    requests = parse_requests(access.lines, container)
    classify(requests, t_term)
    roles = Counter(r["role"] for r in requests if "role" in r)
    ops = Counter((r["method"], r["op"], r["kind"] or "-", r["status"]) for r in requests)
    listings = sum(1 for r in requests if r["op"] == "List Blobs ownership" and r["ok"])
    n = len(windows)
    warnings = [r for r in records if r.get("level") in ("WARN", "ERROR")]

    def phase(r: dict) -> str:
        return "drain" if r["t"] < t_drained else ("idle" if r["t"] < t_term else "shutdown")

    by_phase = Counter((r["role"], phase(r)) for r in requests if "role" in r)

    print()
    print(f"hubcap {version}, sha256 {sha256(hubcap)}")
    print(f"{opts.partitions} partitions, {backlog} events x {opts.size} B, max_window_bytes {opts.max_window_bytes}, "
          f"max_window {opts.max_window}, update_interval {opts.update_interval}, greedy; drain "
          f"{t_drained - t_start:.1f} s, idle {t_term - t_drained:.1f} s, shutdown {t_exit - t_term:.1f} s")
    print(f"windows committed: {n} (log lines), archive files: {len(files)}, "
          f"successful checkpoint writes: {roles['checkpoint']}; balancing cycles (ownership listings): {listings}; "
          f"hubcap warnings/errors: {len(warnings)}")
    print()
    print("| write | drain | idle | shutdown | total | per window |")
    print("|---|---|---|---|---|---|")
    order = ["claim", "periodic renewal", "other ownership write (commit record)", "fencing renewal", "release",
             "ownership (failed attempt)", "checkpoint", "checkpoint (failed attempt)"]
    for role in order + sorted(set(roles) - set(order)):
        if not roles[role] and role.endswith("(failed attempt)"):
            continue
        per = f"{roles[role] / n:.2f}" if n and role in ("other ownership write (commit record)", "fencing renewal",
                                                          "checkpoint") else ""
        print(f"| {role} | {by_phase[(role, 'drain')]} | {by_phase[(role, 'idle')]} | "
              f"{by_phase[(role, 'shutdown')]} | {roles[role]} | {per} |")
    per_window = roles["other ownership write (commit record)"] + roles["fencing renewal"] + roles["checkpoint"]
    print()
    if n:
        print(f"per committed window: {per_window / n:.2f} successful writes "
              f"({(roles['other ownership write (commit record)'] + roles['fencing renewal']) / n:.2f} ownership "
              f"Set Blob Metadata + {roles['checkpoint'] / n:.2f} checkpoint)")
    owned_cycles = max(0, listings - 1) * opts.partitions
    print(f"periodic renewals: {roles['periodic renewal']} over {max(0, listings - 1)} cycles after the claim "
          f"(= {roles['periodic renewal'] / owned_cycles if owned_cycles else float('nan'):.2f} per owned partition "
          f"per cycle), independent of windows")
    print()
    print("every request on the container (method, operation, record, status: count):")
    for (method, op, kind, status), count in sorted(ops.items()):
        print(f"  {method:<5} {op:<26} {kind:<11} {status}: {count}")
    result = {"version": version, "sha256": sha256(hubcap), "partitions": opts.partitions, "events": backlog,
              "size": opts.size, "max_window_bytes": opts.max_window_bytes, "max_window": opts.max_window,
              "update_interval": opts.update_interval, "windows": n, "archive_files": len(files),
              "cycles": listings, "writes": dict(roles),
              "writes_by_phase": {f"{k[0]}|{k[1]}": v for k, v in by_phase.items()},
              "per_window_writes": per_window / n if n else None,
              "requests": {f"{m} {o} {k} {s}": c for (m, o, k, s), c in sorted(ops.items())},
              "warnings": len(warnings), "work": str(work)}
    if opts.json:
        opts.json.write_text(json.dumps(result, indent=2))
    shutil.rmtree(capture, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
