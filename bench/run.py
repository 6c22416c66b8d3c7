#!/usr/bin/env python3
"""hubcap's drain and steady-rate benchmark: hubcap against the alternatives, in one run, against
one emulator.

    python3 bench/run.py --quick     1 KB events, 4 partitions, null codec, 20k events (~3 min)
    python3 bench/run.py             the full matrix (bench/README.md says what it runs)

It creates bench/.venv from bench/requirements.txt (once) and re-runs itself there, builds the
release binaries, makes a throwaway CA and a leaf certificate for localhost/127.0.0.1 with the
`openssl` CLI, starts Azurite, and then for every workload (event size x partition count) starts
hubcap-emulator (plain AMQP, then TLS), preloads the backlog through its admin API, and runs each
contestant until it has drained it:

  fe2o3         bench/src/bin/fe2o3_drain.rs: plain fe2o3-amqp receive loop, discards (the ceiling)
  rust-sdk      bench/src/bin/rust_sdk_drain.rs: azure_messaging_eventhubs, discards (TLS only), on
                tokio's current-thread scheduler like hubcap and the fe2o3 drain; and again on
                the multi-thread one (`#[tokio::main]`, as the SDK's examples run), "rust-sdk-mt"
  python        bench/python_capture.py: azure-eventhub receive_batch + fastavro Capture files +
                BlobCheckpointStore on Azurite
  hubcap-file   `hubcap run`: avro_file sink, file checkpoint store
  hubcap-blob   `hubcap run`: avro_file sink, checkpoint store in Azurite

Per run it records wall time, events/s, MB/s (event bodies), CPU seconds per million events
(user+sys of the contestant, exact, from os.wait4's rusage), peak RSS (ru_maxrss), and the CPU
the emulator, Azurite and everything else on the machine used meanwhile (/proc deltas). A run
whose emulator used >= 0.9 core-seconds per second was limited by the emulator: its throughput is
flagged invalid (the contestant's CPU per event stays comparable). The steady-rate run feeds 32
partitions at half hubcap's measured drain rate and reports p50/p99 from enqueue to durable
commit. Results: bench/results/RESULTS.md, results.json and cpu_per_million.png.

Every process it starts is stopped by PID (SIGTERM, then SIGKILL) and dies with it
(PR_SET_PDEATHSIG). Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import datetime as dt
import hashlib
import json
import math
import os
import platform
import queue
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
VENV = BENCH / ".venv"
REQUIREMENTS = BENCH / "requirements.txt"
SAS_KEY_NAME = "RootManageSharedAccessKey"
NAMESPACE = "benchns"
AZURITE_ACCOUNT = "devstoreaccount1"
# The well-known development account key (public: Azurite README).
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
EMULATOR_SATURATED_CORES = 0.9
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
RUSAGE_EXEC = Path("/nonexistent")  # set by build(): target/release/rusage_exec


# ------------------------------------------------------------------------------------------------
# bootstrap: bench/.venv


def ensure_venv() -> None:
    """Re-executes this script with bench/.venv's python, creating/updating the venv first."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    stamp = VENV / ".requirements.sha256"
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not python.exists():
        log(f"creating {VENV.relative_to(REPO)}")
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    if not stamp.exists() or stamp.read_text().strip() != digest:
        log(f"installing {REQUIREMENTS.relative_to(REPO)} into {VENV.relative_to(REPO)}")
        subprocess.check_call([str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)])
        stamp.write_text(digest)
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


# ------------------------------------------------------------------------------------------------
# small helpers


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _die_with_parent() -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


STARTED: list[subprocess.Popen] = []


def spawn(args: list[str], *, stdout: Path, stderr: Path, env: Optional[dict] = None,
          pipe_stdout: bool = False) -> subprocess.Popen:
    out = subprocess.PIPE if pipe_stdout else open(stdout, "wb")
    err = open(stderr, "wb")
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO,
        env={**os.environ, "NO_COLOR": "1", **(env or {})}, preexec_fn=_die_with_parent,
    )
    if not pipe_stdout:
        out.close()
    err.close()
    STARTED.append(process)
    return process


def reap(process: subprocess.Popen, timeout: float) -> Optional[tuple[int, Any]]:
    """wait4 with a timeout: (status, rusage) or None if it is still running."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.005)


def stop(process: subprocess.Popen, timeout: float = 10.0) -> Optional[tuple[int, Any]]:
    """SIGTERM by PID, bounded wait, then SIGKILL. Returns wait4's (exit code, rusage)."""
    if process.returncode is not None:
        return None
    try:
        process.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    result = reap(process, timeout)
    if result is None:
        try:
            process.kill()
        except ProcessLookupError:
            pass
        result = reap(process, 10.0)
    return result


def stop_all() -> None:
    for process in reversed(STARTED):
        if process.returncode is None and process.poll() is None:
            stop(process, 5.0)


def proc_cpu_seconds(pid: int) -> float:
    """utime+stime of a running process, from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def system_busy_seconds() -> float:
    """CPU-seconds the whole machine spent busy (every core), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICKS


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: Any = None, timeout: float = 900.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read().decode()
    return json.loads(text) if text.strip() else None


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no output)"


def human_size(size: int) -> str:
    return f"{size // 1024} KB" if size >= 1024 else f"{size} B"


# ------------------------------------------------------------------------------------------------
# build, certificates, Azurite


def target_dir() -> Path:
    meta = json.loads(subprocess.check_output(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO))
    return Path(meta["target_directory"])


def build(skip: bool) -> dict[str, Any]:
    """Release binaries; the SDK contestant is a separate build because its feature drags in its
    own dependency tree (and must not change the features hubcap is built with)."""
    release = target_dir() / "release"
    result: dict[str, Any] = {"sdk_error": None}
    if not skip:
        log("cargo build --release (hubcap, hubcap-emulator, fe2o3_drain)")
        subprocess.check_call(
            ["cargo", "build", "--release", "-p", "hubcap", "-p", "hubcap-emulator", "-p", "hubcap-bench"],
            cwd=REPO)
        log("cargo build --release --features rust-sdk --bin rust_sdk_drain")
        sdk = subprocess.run(
            ["cargo", "build", "--release", "-p", "hubcap-bench", "--features", "rust-sdk",
             "--bin", "rust_sdk_drain"], cwd=REPO, capture_output=True, text=True)
        if sdk.returncode != 0:
            result["sdk_error"] = "cargo build of rust_sdk_drain failed:\n" + sdk.stderr[-3000:]
    global RUSAGE_EXEC
    RUSAGE_EXEC = release / "rusage_exec"
    for name in ("hubcap", "hubcap-emulator", "fe2o3_drain", "rusage_exec"):
        if not (release / name).exists():
            raise SystemExit(f"{release / name} is missing: run without --no-build")
    if not (release / "rust_sdk_drain").exists() and result["sdk_error"] is None:
        result["sdk_error"] = f"{release / 'rust_sdk_drain'} was not built"
    result["release"] = release
    return result


def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a leaf for localhost + 127.0.0.1 (EC P-256), with the openssl CLI."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = directory / "ca.key", directory / "ca.pem"
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    ext = directory / "server.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(ca_key))
    run("req", "-x509", "-new", "-key", str(ca_key), "-sha256", "-days", "2", "-subj", "/CN=hubcap bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        "-out", str(ca_cert))
    run("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    run("req", "-new", "-key", str(key), "-subj", "/CN=localhost", "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert))
    return {"ca": ca_cert, "cert": cert, "key": key}


@dataclass
class Azurite:
    process: subprocess.Popen
    port: int

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};")


def start_azurite(work: Path) -> Azurite:
    binary = REPO / "node_modules" / ".bin" / "azurite-blob"
    if not binary.exists():
        log("installing Azurite (npm ci)")
        subprocess.check_call(["npm", "ci", "--no-audit", "--no-fund"], cwd=REPO)
    location = work / "azurite"
    location.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = spawn([str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
                     str(location), "--skipApiVersionCheck", "--disableTelemetry", "--silent"],
                    stdout=work / "azurite.log", stderr=work / "azurite.err")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return Azurite(process, port)
        except OSError:
            time.sleep(0.1)
    stop(process)
    raise SystemExit(f"Azurite did not start:\n{tail(work / 'azurite.err')}")


# ------------------------------------------------------------------------------------------------
# the emulator


@dataclass
class Emulator:
    process: subprocess.Popen
    amqp_port: int
    admin_url: str
    sas_key: str
    tls: bool

    @property
    def host(self) -> str:
        return "localhost" if self.tls else "127.0.0.1"

    def connection_string(self) -> str:
        text = f"Endpoint=sb://{self.host}:{self.amqp_port};SharedAccessKeyName={SAS_KEY_NAME};SharedAccessKey={self.sas_key}"
        return text if self.tls else text + ";UseDevelopmentEmulator=true"

    def preload(self, hub: str, events_per_partition: int, size: int) -> None:
        http("POST", f"{self.admin_url}/preload",
             {"hub": hub, "events_per_partition": events_per_partition, "size": size})

    def cpu(self) -> float:
        return proc_cpu_seconds(self.process.pid)


def start_emulator(release: Path, work: Path, name: str, hubs: dict[str, int], groups: list[str],
                   tls: Optional[dict[str, Path]]) -> Emulator:
    sas_key = base64.b64encode(secrets.token_bytes(32)).decode()
    args = [str(release / "hubcap-emulator"), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
            "--namespace", NAMESPACE, "--sas-key-name", SAS_KEY_NAME]
    for hub, partitions in hubs.items():
        args += ["--hub", f"{hub}:{partitions}"]
    for group in groups:
        args += ["--consumer-group", group]
    if tls:
        args += ["--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"]), "--accept-jwt"]
    process = spawn(args, stdout=work / f"{name}.out", stderr=work / f"{name}.err", pipe_stdout=True,
                    env={"HUBCAP_EMULATOR_SAS_KEY": sas_key, "RUST_LOG": "warn"})
    lines: "queue.Queue[Optional[str]]" = queue.Queue()

    def forward() -> None:
        for raw in iter(process.stdout.readline, b""):
            lines.put(raw.decode(errors="replace"))
        lines.put(None)

    threading.Thread(target=forward, daemon=True).start()
    try:
        line = lines.get(timeout=30)
    except queue.Empty:
        line = None
    if not line:
        stop(process)
        raise SystemExit(f"hubcap-emulator printed no ready line:\n{tail(work / f'{name}.err')}")
    ready = json.loads(line)
    port = int(ready["amqp_addr"].rpartition(":")[2])
    return Emulator(process, port, f"http://{ready['admin_addr']}", sas_key, tls is not None)


# ------------------------------------------------------------------------------------------------
# one measured run


@dataclass
class Run:
    workload: str          # e.g. "1 KB x 4p"
    size: int
    partitions: int
    transport: str         # "amqp" | "amqps"
    contestant: str
    codec: str
    events: int
    ok: bool = False
    error: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    max_rss_mib: float = 0.0
    emulator_cores: float = 0.0
    azurite_cores: float = 0.0
    other_cores: float = 0.0
    events_per_s: float = 0.0
    mb_per_s: float = 0.0
    cpu_s_per_million: float = 0.0
    throughput_valid: bool = True
    detail: dict = field(default_factory=dict)

    def finish(self, usage: dict, wall: float, emulator_cpu: float, azurite_cpu: float, busy: float) -> None:
        self.wall_s = wall
        self.user_s, self.sys_s = usage["user_s"], usage["sys_s"]
        self.cpu_s = self.user_s + self.sys_s
        self.max_rss_mib = usage["max_rss_kib"] / 1024
        self.emulator_cores = emulator_cpu / wall
        self.azurite_cores = azurite_cpu / wall
        self.other_cores = max(0.0, (busy - self.cpu_s - emulator_cpu - azurite_cpu) / wall)
        self.events_per_s = self.events / wall
        self.mb_per_s = self.events * self.size / wall / 1e6
        self.cpu_s_per_million = self.cpu_s / self.events * 1e6
        self.throughput_valid = self.emulator_cores < EMULATOR_SATURATED_CORES


def measure(run: Run, args: list[str], work: Path, emulator: Emulator, azurite: Optional[Azurite],
            checkpoints: Optional[Checkpoints], timeout: float, env: Optional[dict] = None,
            stall_seconds: float = 30.0) -> Run:
    """Starts the contestant (under rusage_exec) and waits until it exits by itself
    (checkpoints=None) or until its checkpoints reach the end of the backlog (then SIGTERM).
    Records its rusage and the peers' CPU over the same interval. A run whose checkpoints do not
    move for stall_seconds fails as stalled."""
    done = checkpoints.done if checkpoints else None
    name = re.sub(r"[^A-Za-z0-9]+", "-", f"{run.workload}-{run.transport}-{run.contestant}-{run.codec}").strip("-")
    out, err = work / f"{name}.out", work / f"{name}.err"
    azurite_pid = azurite.process.pid if azurite else None
    emu0, busy0 = emulator.cpu(), system_busy_seconds()
    az0 = proc_cpu_seconds(azurite_pid) if azurite_pid else 0.0
    usage_file = work / f"{name}.rusage.json"
    t0 = time.monotonic()
    process = spawn([str(RUSAGE_EXEC), str(usage_file), "--", *args], stdout=out, stderr=err, env=env)
    result = None
    deadline = t0 + timeout
    try:
        progress, progress_at = -1, t0
        while time.monotonic() < deadline:
            result = reap(process, 0.0)
            if result is not None:
                break
            if done is not None and done():
                break
            if checkpoints is not None:
                now = time.monotonic()
                if checkpoints.checkpointed != progress:
                    progress, progress_at = checkpoints.checkpointed, now
                elif now - progress_at > stall_seconds:
                    run.error = (f"stalled: {checkpoints.checkpointed} of {run.events} events checkpointed, "
                                 f"no progress for {stall_seconds:.0f} s")
                    break
            time.sleep(0.01 if done is None else 0.05)
        t1 = time.monotonic()
        emu1, busy1 = emulator.cpu(), system_busy_seconds()
        az1 = proc_cpu_seconds(azurite_pid) if azurite_pid else 0.0
        if result is None:
            finished = checkpoints is not None and checkpoints.done(force=True)
            result = stop(process, 30.0)
            if not finished and not run.error:
                run.error = f"timed out after {timeout:.0f} s"
        code, _ = result
        try:
            usage = json.loads(usage_file.read_text())
        except (OSError, ValueError):
            usage = None
        if usage is None:
            run.error = run.error or f"no rusage report (exit code {code})"
        else:
            code = usage["exit_code"]
            if not run.error and code not in (0, 128 + signal.SIGTERM):
                run.error = f"exit code {code}"
            if not run.error and checkpoints is not None and not checkpoints.done(force=True):
                run.error = f"exited (code {code}) before draining the backlog"
            run.finish(usage, t1 - t0, emu1 - emu0, az1 - az0, busy1 - busy0)
    finally:
        if process.returncode is None:
            stop(process)
    run.ok = not run.error
    if run.ok and done is None:
        try:
            report = json.loads(out.read_text().strip().splitlines()[-1])
            run.detail["reported"] = report
            if report.get("events", run.events) < run.events:
                run.ok, run.error = False, f"received {report['events']} of {run.events} events"
        except (IndexError, ValueError):
            run.ok, run.error = False, "no JSON report on stdout"
    if not run.ok:
        run.detail["stderr_tail"] = tail(err)
        log(f"  FAILED {run.contestant}: {run.error}\n{tail(err, 8)}")
    else:
        flag = "" if run.throughput_valid else "  [emulator-bound]"
        log(f"  {run.contestant:<18} {run.transport:<5} {run.codec:<8} {run.events:>9} ev  {run.wall_s:7.2f} s"
            f"  {run.events_per_s:>9.0f} ev/s  {run.cpu_s_per_million:7.2f} CPU-s/M  rss {run.max_rss_mib:6.1f} MiB"
            f"  emu {run.emulator_cores:.2f}  other {run.other_cores:.2f}{flag}")
    return run


# ------------------------------------------------------------------------------------------------
# completion checks: checkpoints at the last sequence number


class Checkpoints:
    """Polls a checkpoint store until every partition's checkpoint is at the last sequence number.
    `done()` is cheap to call often (blob listings are rate-limited); `checkpointed` is the number
    of events checkpointed so far, for stall detection."""

    def __init__(self, partitions: int, last_sequence: int, interval: float) -> None:
        self.partitions, self.last_sequence, self.interval = partitions, last_sequence, interval
        self.next_poll, self.finished, self.checkpointed = 0.0, False, 0

    def sequence_numbers(self) -> list[int]:
        raise NotImplementedError

    def done(self, force: bool = False) -> bool:
        now = time.monotonic()
        if self.finished or (now < self.next_poll and not force):
            return self.finished
        self.next_poll = now + self.interval
        try:
            seqs = self.sequence_numbers()
        except Exception:  # not created yet, or a record being replaced
            return False
        self.checkpointed = sum(seq + 1 for seq in seqs)
        self.finished = len(seqs) >= self.partitions and all(seq >= self.last_sequence for seq in seqs)
        return self.finished


class FileCheckpoints(Checkpoints):
    """hubcap's file store: <root>/<namespace>/<hub>/<group>/checkpoint/<partition>, JSON."""

    def __init__(self, root: Path, partitions: int, last_sequence: int) -> None:
        super().__init__(partitions, last_sequence, 0.05)
        self.root = root

    def sequence_numbers(self) -> list[int]:
        seqs = []
        for path in self.root.glob("*/*/*/checkpoint/*"):
            if not path.name.startswith("."):
                seq = json.loads(path.read_text()).get("sequencenumber")
                seqs.append(-1 if seq is None else int(seq))
        return seqs


class BlobCheckpoints(Checkpoints):
    """The SDK layout in Blob Storage: .../checkpoint/<partition> with metadata sequencenumber."""

    def __init__(self, azurite: Azurite, container: str, partitions: int, last_sequence: int) -> None:
        from azure.storage.blob import ContainerClient
        super().__init__(partitions, last_sequence, 0.25)
        self.client = ContainerClient.from_connection_string(azurite.connection_string, container)

    def sequence_numbers(self) -> list[int]:
        return [int((b.metadata or {}).get("sequencenumber") or -1)
                for b in self.client.list_blobs(include=["metadata"]) if "/checkpoint/" in b.name]


# ------------------------------------------------------------------------------------------------
# contestants


# `--codecs` names an archive format with its codec: an Avro codec alone ("null", "zstd", ...), or
# "parquet" (zstd), "parquet-snappy", "jsonl" (plain), "jsonl-gzip", "jsonl-zstd".
ARCHIVE_SUFFIXES = (".avro", ".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst")


def duration_seconds(text: str) -> float:
    """A hubcap duration ("1s", "20s", "5m", "1h") in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]


def sink_format(spec: str) -> dict[str, str]:
    """The [sink] keys of a `--codecs` entry."""
    fmt, _, codec = spec.partition("-")
    if fmt in ("parquet", "jsonl"):
        return {"format": fmt, **({"codec": codec} if codec else {})}
    return {"format": "avro", "codec": spec}


def hubcap_config(path: Path, emulator: Emulator, *, hub: str, group: str, capture: Path, codec: str,
                  store: dict[str, str], window: str, ca: Optional[Path]) -> Path:
    eventhub = {
        "connection_string": emulator.connection_string(),
        "name": hub,
        "consumer_group": group,
        "start_position": "earliest",
    }
    if ca:
        eventhub["ca_file"] = str(ca)
    sections = {
        "eventhub": eventhub,
        "checkpoint_store": store,
        "load_balancing": {"strategy": "greedy"},
        "sink": {"type": "file", "path": str(capture), **sink_format(codec), "max_window": window,
                 **json.loads(os.environ.get("BENCH_SINK", "{}"))},
        "http": {"listen": "off"},
        "log": {"level": os.environ.get("BENCH_HUBCAP_LOG", "warn")},
    }
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Bench:
    def __init__(self, opts: argparse.Namespace, release: Path, sdk_error: Optional[str], work: Path,
                 certs: dict[str, Path], azurite: Azurite) -> None:
        self.opts, self.release, self.sdk_error = opts, release, sdk_error
        self.work, self.certs, self.azurite = work, certs, azurite
        self.runs: list[Run] = []
        self.counter = 0

    def timeout_for(self, events: int, size: int, slow: bool = False) -> float:
        """Generous: 60 s + 20k events/s (1.5k for Python) + 20 MB/s (deflate at 64 KB)."""
        return 60 + events / (1500 if slow else 20000) + events * size / 20e6

    def scratch(self, name: str) -> Path:
        self.counter += 1
        path = self.work / "runs" / f"{self.counter:03d}-{name}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- one workload ---------------------------------------------------------------------------

    def workload(self, size: int, partitions: int, events: int, python_events: int) -> None:
        label = f"{human_size(size)} x {partitions}p"
        per_partition = max(1, events // partitions)
        events = per_partition * partitions
        py_per_partition = max(1, python_events // partitions)
        wanted = set(self.opts.contestants)

        plain = [c for c in ("fe2o3", "hubcap-file", "hubcap-blob", "python") if c in wanted]
        if plain:
            groups = ["fe2o3", "python"] + [f"hubcap-file-{c}" for c in self.opts.codecs] + ["hubcap-blob"]
            hubs = {"bench": partitions}
            if "python" in plain:
                hubs["bench-py"] = partitions
            emulator = start_emulator(self.release, self.work, f"emulator-{self.counter}", hubs, groups, None)
            try:
                log(f"{label}, amqp: preloading {events} events of {size} B"
                    + (f" (+{py_per_partition * partitions} for python)" if "python" in plain else ""))
                emulator.preload("bench", per_partition, size)
                if "python" in plain:
                    emulator.preload("bench-py", py_per_partition, size)
                common = dict(label=label, size=size, partitions=partitions, emulator=emulator)
                if "fe2o3" in plain:
                    self.fe2o3(**common, per_partition=per_partition)
                if "hubcap-file" in plain:
                    for codec in self.opts.codecs:
                        self.hubcap(**common, per_partition=per_partition, codec=codec, store="file")
                if "hubcap-blob" in plain:
                    self.hubcap(**common, per_partition=per_partition, codec="null", store="blob")
                if "python" in plain:
                    self.python(**common, per_partition=py_per_partition)
            finally:
                stop(emulator.process)

        tls = [c for c in ("fe2o3", "rust-sdk", "hubcap-file") if c in wanted and self.opts.tls]
        if tls:
            emulator = start_emulator(self.release, self.work, f"emulator-{self.counter}-tls", {"bench": partitions},
                                      ["fe2o3", "rust-sdk", "rust-sdk-mt", "hubcap-file-null"], self.certs)
            try:
                log(f"{label}, amqps: preloading {events} events of {size} B")
                emulator.preload("bench", per_partition, size)
                common = dict(label=label, size=size, partitions=partitions, emulator=emulator)
                if "fe2o3" in tls:
                    self.fe2o3(**common, per_partition=per_partition)
                if "rust-sdk" in tls:
                    self.rust_sdk(**common, per_partition=per_partition, scheduler="current-thread")
                    self.rust_sdk(**common, per_partition=per_partition, scheduler="multi-thread")
                if "hubcap-file" in tls:
                    self.hubcap(**common, per_partition=per_partition, codec="null", store="file")
            finally:
                stop(emulator.process)

    def new_run(self, label: str, size: int, partitions: int, emulator: Emulator, contestant: str,
                codec: str, events: int) -> Run:
        return Run(workload=label, size=size, partitions=partitions,
                   transport="amqps" if emulator.tls else "amqp", contestant=contestant, codec=codec,
                   events=events)

    def fe2o3(self, *, label, size, partitions, emulator: Emulator, per_partition: int) -> None:
        run = self.new_run(label, size, partitions, emulator, "fe2o3", "-", per_partition * partitions)
        args = [str(self.release / "fe2o3_drain"), "--host", emulator.host, "--port", str(emulator.amqp_port),
                "--hub", "bench", "--consumer-group", "fe2o3", "--partitions", str(partitions),
                "--events-per-partition", str(per_partition)]
        if emulator.tls:
            args += ["--tls", "--ca-file", str(self.certs["ca"])]
        self.runs.append(measure(run, args, self.scratch("fe2o3"), emulator, None, None,
                                 self.timeout_for(run.events, size), env={"BENCH_SAS_KEY": emulator.sas_key}))

    def rust_sdk(self, *, label, size, partitions, emulator: Emulator, per_partition: int, scheduler: str) -> None:
        contestant = "rust-sdk" if scheduler == "current-thread" else "rust-sdk-mt"
        run = self.new_run(label, size, partitions, emulator, contestant, "-", per_partition * partitions)
        if self.sdk_error:
            run.error = self.sdk_error
            self.runs.append(run)
            return
        args = [str(self.release / "rust_sdk_drain"), "--namespace", f"localhost:{emulator.amqp_port}",
                "--hub", "bench", "--consumer-group", contestant, "--partitions", str(partitions),
                "--events-per-partition", str(per_partition), "--scheduler", scheduler]
        # The SDK's fe2o3-amqp 0.14 does TLS with native-tls (OpenSSL): trust the test CA only.
        env = {"SSL_CERT_FILE": str(self.certs["ca"]), "SSL_CERT_DIR": "/nonexistent", "RUST_LOG": "warn"}
        self.runs.append(measure(run, args, self.scratch(contestant), emulator, None, None,
                                 self.timeout_for(run.events, size), env=env))

    def hubcap(self, *, label, size, partitions, emulator: Emulator, per_partition: int, codec: str,
               store: str, window: Optional[str] = None) -> None:
        window = window or self.opts.window
        contestant = f"hubcap-{store}"
        run = self.new_run(label, size, partitions, emulator, contestant, codec, per_partition * partitions)
        scratch = self.scratch(f"{contestant}-{codec}")
        capture = scratch / "capture"
        group = "hubcap-blob" if store == "blob" else f"hubcap-file-{codec}"
        if store == "file":
            checkpoints = scratch / "checkpoints"
            store_config = {"type": "file", "path": str(checkpoints)}
            tracker: Checkpoints = FileCheckpoints(checkpoints, partitions, per_partition - 1)
            peer = None
        else:
            container = f"hubcap-{self.counter}"
            store_config = {"type": "azure_blob", "connection_string": self.azurite.connection_string,
                            "container": container}
            tracker = BlobCheckpoints(self.azurite, container, partitions, per_partition - 1)
            peer = self.azurite
        config = hubcap_config(scratch / "hubcap.toml", emulator, hub="bench", group=group, capture=capture,
                               codec=codec, store=store_config, window=window,
                               ca=self.certs["ca"] if emulator.tls else None)
        args = [*os.environ.get("BENCH_HUBCAP_WRAP", "").split(), str(self.release / "hubcap"), "run", "--config", str(config)]
        # Nothing is checkpointed before a window closes: a long window is not a stall.
        window_s = duration_seconds(window)
        measure(run, args, scratch, emulator, peer, tracker, self.timeout_for(run.events, size) + window_s,
                stall_seconds=max(30.0, window_s + 30.0))
        if run.ok:
            files = [p for p in capture.rglob("*") if p.name.endswith(ARCHIVE_SUFFIXES)
                     and ".hubcap-staging" not in p.parts]
            run.detail["files"] = len(files)
            run.detail["archive_bytes"] = sum(p.stat().st_size for p in files)
        self.runs.append(run)
        shutil.rmtree(capture, ignore_errors=True)

    def python(self, *, label, size, partitions, emulator: Emulator, per_partition: int) -> None:
        run = self.new_run(label, size, partitions, emulator, "python", "null", per_partition * partitions)
        scratch = self.scratch("python")
        container = f"python-{self.counter}"
        args = [sys.executable, str(BENCH / "python_capture.py"), "--connection-string", emulator.connection_string(),
                "--hub", "bench-py", "--consumer-group", "python",
                "--storage-connection-string", self.azurite.connection_string, "--container", container,
                "--out", str(scratch / "capture"), "--partitions", str(partitions),
                "--events-per-partition", str(per_partition), "--codec", "null", "--max-window", "1"]
        # Measured like hubcap: until its last checkpoint is in the store, then SIGTERM (it would
        # also exit by itself, after closing its 32 consumers one by one).
        tracker = BlobCheckpoints(self.azurite, container, partitions, per_partition - 1)
        self.runs.append(measure(run, args, scratch, emulator, self.azurite, tracker,
                                 self.timeout_for(run.events, size, slow=True), stall_seconds=90.0))
        shutil.rmtree(scratch / "capture", ignore_errors=True)

    # --- steady rate ------------------------------------------------------------------------------

    def steady(self, rate: float, seconds: float, partitions: int, size: int, window_s: int) -> dict:
        """hubcap at a steady rate; latency from x-opt-enqueued-time to the file's commit (ctime)."""
        import fastavro
        emulator = start_emulator(self.release, self.work, "emulator-steady", {"steady": partitions},
                                  ["hubcap"], None)
        scratch = self.scratch("steady")
        capture, checkpoints = scratch / "capture", scratch / "checkpoints"
        config = hubcap_config(scratch / "hubcap.toml", emulator, hub="steady", group="hubcap", capture=capture,
                               codec="null", store={"type": "file", "path": str(checkpoints)},
                               window=f"{window_s}s", ca=None)
        result: dict[str, Any] = {"partitions": partitions, "size": size, "target_rate": rate,
                                  "seconds": seconds, "window_s": window_s}
        usage_file = scratch / "hubcap.rusage.json"
        process = spawn([str(RUSAGE_EXEC), str(usage_file), "--", str(self.release / "hubcap"), "run", "--config",
                         str(config)], stdout=scratch / "hubcap.out", stderr=scratch / "hubcap.err")
        try:
            ownership = lambda: len(list(checkpoints.glob("*/*/*/ownership/*"))) >= partitions  # noqa: E731
            deadline = time.monotonic() + 30
            while not ownership() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # receivers attached
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
            hubcap_pid = int(children[0]) if children else process.pid
            log(f"steady: {rate:.0f} events/s of {size} B over {partitions} partitions for {seconds:.0f} s, "
                f"window {window_s} s")
            tick, sent = 0.1, 0
            emu0, cpu0 = emulator.cpu(), proc_cpu_seconds(hubcap_pid)
            t0 = time.monotonic()
            while (now := time.monotonic()) - t0 < seconds:
                due = int(rate * (now - t0)) // partitions - sent
                if due > 0:
                    emulator.preload("steady", due, size)
                    sent += due
                time.sleep(max(0.0, tick - (time.monotonic() - now)))
            produce_wall = time.monotonic() - t0
            result["produced"] = sent * partitions
            result["achieved_rate"] = sent * partitions / produce_wall
            done = FileCheckpoints(checkpoints, partitions, sent - 1).done
            deadline = time.monotonic() + window_s + 30
            while not done() and time.monotonic() < deadline:
                time.sleep(0.1)
            result["drained"] = done()
            t1 = time.monotonic()
            result["emulator_cores"] = (emulator.cpu() - emu0) / (t1 - t0)
            result["hubcap_cores"] = (proc_cpu_seconds(hubcap_pid) - cpu0) / (t1 - t0)
            stop(process, 30.0)
            usage = json.loads(usage_file.read_text())
            result["hubcap_cpu_s"] = usage["user_s"] + usage["sys_s"]
            result["hubcap_max_rss_mib"] = usage["max_rss_kib"] / 1024
        finally:
            if process.returncode is None:
                stop(process)
            stop(emulator.process)
        latencies, latencies_mtime, count = [], [], 0
        for path in capture.rglob("*.avro"):
            if ".hubcap-staging" in path.parts:
                continue
            st = path.stat()
            committed_ms, written_ms = st.st_ctime_ns / 1e6, st.st_mtime_ns / 1e6
            with open(path, "rb") as f:
                for record in fastavro.reader(f):
                    enqueued = record["SystemProperties"]["x-opt-enqueued-time"]
                    latencies.append(committed_ms - enqueued)
                    latencies_mtime.append(written_ms - enqueued)
                    count += 1
        result["events_committed"] = count
        if latencies:
            latencies.sort()
            latencies_mtime.sort()
            pick = lambda xs, q: xs[min(len(xs) - 1, int(q * len(xs)))] / 1000  # noqa: E731
            result.update(p50_s=pick(latencies, 0.5), p99_s=pick(latencies, 0.99), max_s=latencies[-1] / 1000,
                          p50_mtime_s=pick(latencies_mtime, 0.5), p99_mtime_s=pick(latencies_mtime, 0.99))
        shutil.rmtree(capture, ignore_errors=True)
        log(f"steady: {json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()})}")
        return result


# ------------------------------------------------------------------------------------------------
# environment and report


def machine_info() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model.group(1).strip() if model else "unknown",
        "memory_gib": round(int(mem.group(1)) / 1024 / 1024, 1) if mem else None,
        "kernel": platform.release(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def versions() -> dict[str, Any]:
    from importlib import metadata
    out: dict[str, Any] = {}
    for cmd in (["rustc", "--version"], ["cargo", "--version"], ["node", "--version"], ["openssl", "version"]):
        try:
            out[cmd[0]] = subprocess.check_output(cmd, text=True).strip()
        except (OSError, subprocess.CalledProcessError):
            out[cmd[0]] = "unavailable"
    lock = (REPO / "Cargo.lock").read_text()
    crates = {}
    for name in ("fe2o3-amqp", "azure_messaging_eventhubs", "azure_core_amqp", "apache-avro", "zstd", "flate2",
                 "tokio", "rustls"):
        found = re.findall(rf'name = "{re.escape(name)}"\nversion = "([^"]+)"', lock)
        if found:
            crates[name] = ", ".join(sorted(set(found)))
    out["crates"] = crates
    out["python"] = platform.python_version()
    out["python_packages"] = {p: metadata.version(p) for p in (
        "azure-eventhub", "azure-eventhub-checkpointstoreblob", "azure-storage-blob", "fastavro", "matplotlib")}
    try:
        out["azurite"] = json.loads((REPO / "node_modules/azurite/package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        out["azurite"] = "unknown"
    try:
        commit = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True).strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD"], cwd=REPO).returncode != 0
        out["git"] = commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        out["git"] = "unknown"
    return out


CONTESTANT_LABEL = {
    "fe2o3": "fe2o3 drain (ceiling)",
    "rust-sdk": "Rust SDK drain",
    "rust-sdk-mt": "Rust SDK drain, multi-thread",
    "python": "Python SDK + fastavro + blob ckpt",
    "hubcap-file": "hubcap (file ckpt)",
    "hubcap-blob": "hubcap (blob ckpt)",
}


def find(runs: list[Run], **match) -> Optional[Run]:
    for run in runs:
        if run.ok and all(getattr(run, k) == v for k, v in match.items()):
            return run
    return None


def targets(runs: list[Run], steady: Optional[dict]) -> list[tuple[str, str, str, str]]:
    """(target, measured, limit, verdict) rows."""
    rows = []

    def ratio_row(title, num, den, limit, lower_is_better=True):
        if not num or not den:
            rows.append((title, "not measured", limit, "—"))
            return
        value = num.cpu_s_per_million / den.cpu_s_per_million
        verdict = value <= float(limit.split()[-1].rstrip("x×")) if lower_is_better else value >= float(limit.split()[-1].rstrip("x×"))
        rows.append((title, f"{value:.2f}x ({num.cpu_s_per_million:.2f} / {den.cpu_s_per_million:.2f} CPU-s/M)",
                     limit, "met" if verdict else "NOT met"))

    partitions = sorted({r.partitions for r in runs if r.size == 1024})
    for p in partitions:
        hub = find(runs, size=1024, partitions=p, contestant="hubcap-file", codec="null", transport="amqp")
        hub_tls = find(runs, size=1024, partitions=p, contestant="hubcap-file", codec="null", transport="amqps")
        fe = find(runs, size=1024, partitions=p, contestant="fe2o3", transport="amqp")
        sdk = find(runs, size=1024, partitions=p, contestant="rust-sdk", transport="amqps")
        sdk_mt = find(runs, size=1024, partitions=p, contestant="rust-sdk-mt", transport="amqps")
        py = find(runs, size=1024, partitions=p, contestant="python", transport="amqp")
        ratio_row(f"1 KB x {p}p: hubcap / fe2o3 drain (CPU per event)", hub, fe, "<= 1.25x")
        ratio_row(f"1 KB x {p}p, TLS: hubcap / Rust SDK, same scheduler (CPU per event)", hub_tls, sdk, "<= 0.5x")
        ratio_row(f"1 KB x {p}p, TLS: hubcap / Rust SDK on `#[tokio::main]` (CPU per event)", hub_tls, sdk_mt, "<= 0.5x")
        ratio_row(f"1 KB x {p}p: Python pipeline / hubcap (CPU per event)", py, hub, ">= 10x", lower_is_better=False)
    deep = find(runs, size=1024, partitions=32, contestant="hubcap-file", codec="null", transport="amqp")
    if deep:
        rows.append((f"1 KB x 32p, {deep.events} events backlog: hubcap peak RSS (defaults: prefetch 300, prefetch_bytes 1 MiB)",
                     f"{deep.max_rss_mib:.1f} MiB", "< 64 MiB", "met" if deep.max_rss_mib < 64 else "NOT met"))
    else:
        rows.append(("1 KB x 32p, deep backlog: hubcap peak RSS", "not measured", "< 64 MiB", "—"))
    for p in partitions:
        avro = find(runs, size=1024, partitions=p, contestant="hubcap-file", codec="null", transport="amqp")
        parquet = find(runs, size=1024, partitions=p, contestant="hubcap-file", codec="parquet", transport="amqp")
        if parquet:
            ratio_row(f"1 KB x {p}p: hubcap Parquet (zstd) / Avro null (CPU per event)", parquet, avro, "<= 2x")
        if parquet and p == 32:
            rows.append((f"1 KB x 32p, {parquet.events} events backlog, Parquet: hubcap peak RSS (default row groups)",
                         f"{parquet.max_rss_mib:.1f} MiB", "< 160 MiB",
                         "met" if parquet.max_rss_mib < 160 else "NOT met"))
    if steady and "p99_s" in steady:
        limit = steady["window_s"] + 1
        rows.append((f"steady {steady['achieved_rate']:.0f} ev/s over {steady['partitions']}p: p99 enqueue-to-commit",
                     f"{steady['p99_s']:.2f} s (p50 {steady['p50_s']:.2f} s)", f"<= {limit} s (window + 1 s)",
                     "met" if steady["p99_s"] <= limit else "NOT met"))
    else:
        rows.append(("steady rate: p99 enqueue-to-commit", "not measured", "<= window + 1 s", "—"))
    return rows


def write_report(out_dir: Path, opts, runs: list[Run], steady: Optional[dict], info: dict, vers: dict,
                 started: dt.datetime, elapsed: float) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps({
        "mode": opts.mode, "date": started.isoformat(timespec="seconds"), "elapsed_s": elapsed,
        "machine": info, "versions": vers, "runs": [asdict(r) for r in runs], "steady": steady}, indent=2))
    plot(out_dir / "cpu_per_million.png", runs, opts.mode)

    lines = [
        "# hubcap benchmark results",
        "",
        f"Mode **{opts.mode}**{' (small counts: start-up dominates, figures are noisy)' if opts.mode != 'full' else ''}, "
        f"run {started.strftime('%Y-%m-%d %H:%M UTC')} in {elapsed / 60:.1f} min by `{opts.command}`.",
        "",
        f"Machine: {info['nproc']} × {info['cpu_model']}, {info['memory_gib']} GiB, Linux {info['kernel']}; "
        f"load average at start {' '.join(info['loadavg_at_start'])} (a shared machine: see *other cores*).",
        f"Versions: {vers['rustc']}; hubcap {vers['git']}; "
        + ", ".join(f"{k} {v}" for k, v in vers["crates"].items())
        + f"; Python {vers['python']}, " + ", ".join(f"{k} {v}" for k, v in vers["python_packages"].items())
        + f"; Azurite {vers['azurite']}; Node {vers['node']}.",
        "",
        "![CPU seconds per million events](cpu_per_million.png)",
        "",
        "## Targets (ratios from this run; reported, not asserted)",
        "",
        "| target | measured | limit | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(runs, steady)]
    wide = [r for r in runs if r.ok and r.contestant.startswith("hubcap") and r.partitions == 32]
    if wide:
        lines += ["", "Peak RSS of every 32-partition hubcap run (MiB): " + "; ".join(
            f"{r.workload} {r.transport} {r.contestant} {r.codec}: {r.max_rss_mib:.0f}" for r in wide) + "."]
    formats = [r for r in runs if r.ok and r.contestant == "hubcap-file" and r.detail.get("archive_bytes")]
    if formats:
        lines += ["", "## Archive formats (hubcap-file)", "",
                  "`--codecs` entries are Avro codecs, or `parquet` (zstd), `parquet-snappy`, `jsonl`, `jsonl-gzip`, "
                  f"`jsonl-zstd`. Drain windows: max_window {opts.window}. *vs Avro null*: CPU per event relative to "
                  "the Avro null run of the same workload and transport. *MB/M*: archive bytes on disk per million events.",
                  "", "| workload | transport | format | CPU-s/M | vs Avro null | MB/M | files | peak RSS MiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in formats:
            base = find(runs, size=r.size, partitions=r.partitions, contestant="hubcap-file", codec="null",
                        transport=r.transport)
            vs = f"{r.cpu_s_per_million / base.cpu_s_per_million:.2f}x" if base else "—"
            per_million = r.detail["archive_bytes"] / r.events * 1e6 / 1e6
            lines.append(f"| {r.workload} | {r.transport} | {r.codec} | {r.cpu_s_per_million:.2f} | {vs} | "
                         f"{per_million:,.0f} | {r.detail['files']} | {r.max_rss_mib:.1f} |")
    lines += [
        "",
        "## Drain runs",
        "",
        "Each contestant drains the same preloaded backlog from the earliest event in its own consumer group. "
        "*CPU-s/M*: user+sys CPU seconds of the contestant process per million events (wait4 rusage). "
        "*emu*: the emulator's CPU over the run in cores; at ≥ 0.9 the emulator was the limit and the "
        "run's throughput is marked † (not a figure for the contestant). *other*: CPU used by everything "
        "else on the machine meanwhile (other jobs; the harness itself). hubcap's wall time runs from "
        "process start to the last checkpoint, so it includes start-up and the last 1 s window (the drain "
        "loops stop at their last event; Python, like hubcap, at its last checkpoint).",
        "",
        "| workload | transport | contestant | codec | events | wall s | events/s | MB/s | CPU-s/M | peak RSS MiB | emu | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        name = CONTESTANT_LABEL.get(r.contestant, r.contestant)
        if not r.ok:
            reason = r.error.splitlines()[0] if r.error else "failed"
            lines.append(f"| {r.workload} | {r.transport} | {name} | {r.codec} | {r.events} | — | — | — | — | — | — | — |"
                         f" <!-- {reason} -->")
            continue
        mark = "" if r.throughput_valid else " †"
        lines.append(
            f"| {r.workload} | {r.transport} | {name} | {r.codec} | {r.events} | {r.wall_s:.2f} | "
            f"{r.events_per_s:,.0f}{mark} | {r.mb_per_s:.1f}{mark} | {r.cpu_s_per_million:.2f} | {r.max_rss_mib:.1f} | "
            f"{r.emulator_cores:.2f} | {r.other_cores:.2f} |")
    failed = [r for r in runs if not r.ok]
    if failed:
        lines += ["", "Runs that did not complete:", ""]
        for r in failed:
            lines.append(f"- {r.workload} {r.transport} {r.contestant} {r.codec}: {r.error.splitlines()[0] if r.error else 'failed'}")
    if steady:
        lines += ["", "## Steady rate (hubcap, file store, null codec)", ""]
        if "p99_s" in steady:
            lines += [
                f"{steady['produced']} events of {steady['size']} B fed to {steady['partitions']} partitions at "
                f"{steady['achieved_rate']:.0f} events/s (target {steady['target_rate']:.0f}: half of hubcap's drain rate "
                f"measured above) for {steady['seconds']:.0f} s, window {steady['window_s']} s. Latency = the committed "
                "file's ctime (set when it is linked into place after fsync) minus the event's `x-opt-enqueued-time`.",
                "",
                "| p50 | p99 | max | p99 by mtime | events committed | hubcap cores | hubcap peak RSS | emulator cores |",
                "|---|---|---|---|---|---|---|---|",
                f"| {steady['p50_s']:.2f} s | {steady['p99_s']:.2f} s | {steady['max_s']:.2f} s | {steady['p99_mtime_s']:.2f} s | "
                f"{steady['events_committed']} | {steady.get('hubcap_cores', float('nan')):.2f} | "
                f"{steady.get('hubcap_max_rss_mib', float('nan')):.1f} MiB | {steady.get('emulator_cores', float('nan')):.2f} |",
            ]
        else:
            lines.append(f"Not measured: {json.dumps(steady)}")
    lines.append("")
    (out_dir / "RESULTS.md").write_text("\n".join(lines))


def plot(path: Path, runs: list[Run], mode: str) -> None:
    """One panel per event size; in each, a group of bars per partition count, one bar per
    contestant/transport/codec: CPU seconds per million events, log scale, values on the bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    ok = [r for r in runs if r.ok]
    if not ok:
        return
    sizes = sorted({r.size for r in ok})
    order = ["fe2o3", "rust-sdk", "rust-sdk-mt", "hubcap-file", "hubcap-blob", "python"]
    codec_order = ["-", "null", "zstd", "deflate", "snappy", "parquet", "parquet-snappy", "jsonl", "jsonl-gzip",
                   "jsonl-zstd"]
    series = sorted(dict.fromkeys((r.contestant, r.transport, r.codec) for r in ok),
                    key=lambda k: (k[1], order.index(k[0]) if k[0] in order else 99,
                                   codec_order.index(k[2]) if k[2] in codec_order else 99))
    colors = {"fe2o3": "#7f7f7f", "rust-sdk": "#9467bd", "rust-sdk-mt": "#c5b0d5", "hubcap-file": "#1f77b4", "hubcap-blob": "#17becf",
              "python": "#d62728"}
    width = 0.84 / max(1, len(series))
    groups = max(len({r.partitions for r in ok if r.size == size}) for size in sizes)
    legend_rows = math.ceil(len(series) / 3)
    height = 3.6 * len(sizes) + 0.6 + 0.22 * legend_rows
    fig, axes = plt.subplots(len(sizes), 1, squeeze=False,
                             figsize=(max(8.0, 0.3 * groups * len(series) + 2.5), height))
    handles = {}
    for ax, size in zip(axes[:, 0], sizes):
        partitions = sorted({r.partitions for r in ok if r.size == size})
        for i, key in enumerate(series):
            contestant, transport, codec = key
            xs, ys = [], []
            for j, p in enumerate(partitions):
                run = find(ok, size=size, partitions=p, contestant=contestant, transport=transport, codec=codec)
                if run:
                    xs.append(j + (i - (len(series) - 1) / 2) * width)
                    ys.append(run.cpu_s_per_million)
            if not xs:
                continue
            label = CONTESTANT_LABEL.get(contestant, contestant) + f", {transport}"
            label += f", {codec}" if codec not in ("-", "null") else ""
            hatch = "//" if transport == "amqps" else (".." if codec not in ("-", "null") else None)
            bars = ax.bar(xs, ys, width=width, label=label, color=colors.get(contestant, "#bcbd22"),
                          alpha=0.55 if codec not in ("-", "null") else 0.9, hatch=hatch, edgecolor="white")
            ax.bar_label(bars, labels=[f"{y:.3g}" if y < 1000 else f"{y:.0f}" for y in ys], fontsize=7,
                         rotation=90, padding=2)
            handles.setdefault(label, bars)
        values = [r.cpu_s_per_million for r in ok if r.size == size]
        ax.set_yscale("log")
        ax.set_ylim(bottom=10 ** math.floor(math.log10(min(values))), top=max(values) * 4)
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        ax.set_xticks(range(len(partitions)))
        ax.set_xticklabels([f"{human_size(size)} events, {p} partition{'s' if p > 1 else ''}" for p in partitions])
        ax.set_ylabel("CPU s / million events")
        ax.grid(axis="y", which="major", alpha=0.3)
    axes[0, 0].set_title(f"Draining a preloaded backlog: CPU of the consumer process per million events\n"
                         f"(log scale, lower is better; {mode} run)", fontsize=10)
    fig.legend(list(handles.values()), list(handles.keys()), fontsize=8, ncol=3, loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, (0.22 * legend_rows + 0.1) / height, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# main


# Backlogs of the full run: big enough that start-up is a few percent of a run, small enough for
# ~20 minutes on 2 cores (the 64 KB backlog is 1 GiB of bodies in the emulator's memory).
FULL_EVENTS = {100: 1_000_000, 1024: 500_000, 65536: 16_000}
FULL_PYTHON_EVENTS = {100: 50_000, 1024: 50_000, 65536: 5_000}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="hubcap's drain and steady-rate benchmark (bench/README.md)")
    parser.add_argument("--quick", action="store_true",
                        help="1 KB x 4 partitions, null codec, 20k events; for checking the harness")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], help="event body sizes in bytes")
    parser.add_argument("--partitions", type=lambda s: [int(x) for x in s.split(",")], help="partition counts")
    parser.add_argument("--codecs", type=lambda s: s.split(","),
                        help="hubcap-file formats: Avro codecs (null,zstd,deflate,snappy), parquet, parquet-snappy, "
                             "jsonl, jsonl-gzip, jsonl-zstd")
    parser.add_argument("--events", type=int, help="backlog size per workload (default: by size)")
    parser.add_argument("--python-events", type=int, help="backlog for the Python contestant (default: by size)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply the full run's default backlogs (e.g. 0.05 for a smoke test of the matrix)")
    parser.add_argument("--contestants", type=lambda s: s.split(","),
                        default=["fe2o3", "rust-sdk", "python", "hubcap-file", "hubcap-blob"])
    parser.add_argument("--no-tls", dest="tls", action="store_false", help="skip the amqps runs (and the SDK)")
    parser.add_argument("--steady-seconds", type=float, help="steady-rate duration (0 skips it)")
    parser.add_argument("--steady-rate", type=float, help="events/s for the steady run (default: half the drain rate)")
    parser.add_argument("--window", default="1s",
                        help="hubcap max_window in the drain runs (default 1s; a longer one keeps every "
                             "partition's window open through the drain, for memory)")
    parser.add_argument("--steady-window", type=int, default=5, help="hubcap max_window in the steady run, s")
    parser.add_argument("--no-build", action="store_true", help="use the release binaries as they are")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="where RESULTS.md etc. go")
    opts = parser.parse_args()
    matrix = (opts.sizes, opts.partitions, opts.codecs, opts.events, opts.python_events)
    custom = any(x is not None for x in matrix) or opts.scale != 1.0 or len(opts.contestants) != 5
    opts.mode = "quick" if opts.quick else ("custom" if custom else "full")
    opts.command = "python3 bench/run.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    if opts.quick:
        opts.sizes = opts.sizes or [1024]
        opts.partitions = opts.partitions or [4]
        opts.codecs = opts.codecs or ["null"]
        opts.events = opts.events or 20_000
        opts.python_events = opts.python_events or 20_000
        opts.steady_seconds = 10 if opts.steady_seconds is None else opts.steady_seconds
    else:
        opts.sizes = opts.sizes or [100, 1024, 65536]
        opts.partitions = opts.partitions or [1, 4, 32]
        opts.codecs = opts.codecs or ["null", "zstd", "deflate"]
        opts.steady_seconds = 30 if opts.steady_seconds is None else opts.steady_seconds
    return opts


def main() -> int:
    ensure_venv()
    opts = parse_args()
    started, t0 = dt.datetime.now(dt.timezone.utc), time.monotonic()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    built = build(opts.no_build)
    if built["sdk_error"] and "rust-sdk" in opts.contestants:
        log("the Rust SDK contestant cannot run: " + built["sdk_error"].splitlines()[0])
    work = opts.out / "tmp" / started.strftime("%Y%m%dT%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    log(f"scratch directory {work}")
    info, vers = machine_info(), versions()
    runs: list[Run] = []
    steady = None
    try:
        certs = make_certificates(work / "tls")
        azurite = start_azurite(work)
        bench = Bench(opts, built["release"], built["sdk_error"], work, certs, azurite)
        runs = bench.runs
        for size in opts.sizes:
            for partitions in opts.partitions:
                events = opts.events or int(FULL_EVENTS.get(size, 100_000) * opts.scale)
                python_events = opts.python_events or int(FULL_PYTHON_EVENTS.get(size, 20_000) * opts.scale)
                bench.workload(size, partitions, events, min(events, python_events))
        if opts.steady_seconds:
            rate = opts.steady_rate
            if rate is None:
                # Half hubcap's drain rate at 1 KB on the most partitions measured (32 in the full run).
                candidates = [r for r in runs if r.ok and r.contestant == "hubcap-file" and r.codec == "null"
                              and r.transport == "amqp" and r.size == 1024]
                best = max(candidates, key=lambda r: (r.partitions, r.events_per_s), default=None)
                rate = best.events_per_s / 2 if best else 10_000
            steady = bench.steady(rate, opts.steady_seconds, 32, 1024, opts.steady_window)
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        stop_all()
    write_report(opts.out, opts, runs, steady, info, vers, started, time.monotonic() - t0)
    log(f"wrote {opts.out / 'RESULTS.md'}, {opts.out / 'results.json'}, {opts.out / 'cpu_per_million.png'}")
    failed = [r for r in runs if not r.ok]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
