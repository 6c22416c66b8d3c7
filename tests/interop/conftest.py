"""Fixtures that run the real peers on loopback: hubcap-emulator and Azurite (blob service).

Binaries come from the environment, as set by scripts/test.sh:
  HUBCAP_EMULATOR_BIN  target/debug/hubcap-emulator
  HUBCAP_BIN           target/debug/hubcap
  AZURITE_BIN          node_modules/.bin/azurite-blob
Each falls back to that path under the repository root when the variable is unset.

Every wait polls a condition against a deadline; processes are stopped by PID (SIGTERM, a bounded
wait, then SIGKILL) and die with the test run (PR_SET_PDEATHSIG) if pytest itself is killed.
"""

from __future__ import annotations

import base64
import ctypes
import json as jsonlib
import os
import queue
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

EMULATOR_READY_TIMEOUT_S = 30.0
AZURITE_READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
STDERR_TAIL_LINES = 80
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

# The well-known development account; the key is public (Azurite README, "Default storage account").
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def binary_path(env_var: str, default: str) -> Path:
    """The path of a binary the tests run: $env_var if set, else `default` under the repo root."""
    value = os.environ.get(env_var)
    return Path(value) if value else REPO_ROOT / default


def emulator_binary() -> Path:
    return binary_path("HUBCAP_EMULATOR_BIN", "target/debug/hubcap-emulator")


def hubcap_binary() -> Path:
    return binary_path("HUBCAP_BIN", "target/debug/hubcap")


def azurite_binary() -> Path:
    return binary_path("AZURITE_BIN", "node_modules/.bin/azurite-blob")


# --------------------------------------------------------------------------------------------
# process plumbing


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it if the pytest process dies first."""
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except OSError:
        pass  # not Linux/glibc: teardown still stops the child by PID


def start_process(args: list[str], stdout: Any, stderr: Any) -> subprocess.Popen:
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        preexec_fn=_die_with_parent,
        cwd=REPO_ROOT,
        env={**os.environ, "NO_COLOR": "1"},  # plain logs in the saved stderr files
    )


def stop_process(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM by PID, wait up to `timeout`, then SIGKILL (Azurite sometimes ignores SIGTERM)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


def tail(path: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} was not written)"
    kept = ANSI_ESCAPE.sub("", text).splitlines()[-lines:]
    return "\n".join(kept) if kept else "(empty)"


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Polls `condition` until it is true; fails the test naming `what` when `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# the emulator


class AdminError(AssertionError):
    """An admin endpoint answered with a non-2xx status."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        super().__init__(f"{method} {url} -> HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class Emulator:
    """A running hubcap-emulator process and how to reach it."""

    namespace: str
    amqp_host: str
    amqp_port: int
    admin_url: str  # base URL of the admin HTTP API, e.g. http://127.0.0.1:41234
    sas_key_name: str
    sas_key: str
    hubs: dict[str, int]  # hub name -> partition count, as passed on the command line
    consumer_groups: list[str]
    args: list[str]  # the full command line, for failure messages
    stderr_path: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def endpoint(self) -> str:
        return f"sb://{self.amqp_host}:{self.amqp_port}"

    def connection_string(self, hub: Optional[str] = None, key: Optional[str] = None) -> str:
        """An Event Hubs connection string for this emulator (plain AMQP via UseDevelopmentEmulator)."""
        parts = [
            f"Endpoint={self.endpoint}",
            f"SharedAccessKeyName={self.sas_key_name}",
            f"SharedAccessKey={self.sas_key if key is None else key}",
            "UseDevelopmentEmulator=true",
        ]
        if hub is not None:
            parts.append(f"EntityPath={hub}")
        return ";".join(parts)

    def admin(self, method: str, path: str, json: Any = None, timeout: float = 30.0) -> Any:
        """Calls the admin HTTP API; returns the decoded JSON answer (or the text, or None when empty).

        Raises AdminError on a non-2xx status.
        """
        url = self.admin_url + path
        data = None if json is None else jsonlib.dumps(json).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as err:
            raise AdminError(method, url, err.code, err.read().decode("utf-8", errors="replace")) from None
        if not body.strip():
            return None
        try:
            return jsonlib.loads(body)
        except ValueError:
            return body

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> str:
        return tail(self.stderr_path, lines)


def random_sas_key() -> str:
    """A key shaped like Azure's (base64 of 32 bytes, so it holds '+', '/' or '=' more often than not)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def emulator_command(
    *,
    namespace: str,
    hubs: Mapping[str, int],
    sas_key_name: str,
    sas_key: str,
    consumer_groups: Iterable[str],
    max_message_size: Optional[int],
    retention_events: Optional[int],
    accept_jwt: bool,
    extra_args: Iterable[str],
) -> list[str]:
    args = [
        str(emulator_binary()),
        "--listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0",
        "--namespace", namespace,
    ]
    for hub, partitions in hubs.items():
        args += ["--hub", f"{hub}:{partitions}"]
    args += ["--sas-key-name", sas_key_name, "--sas-key", sas_key]
    for group in consumer_groups:
        args += ["--consumer-group", group]
    if max_message_size is not None:
        args += ["--max-message-size", str(max_message_size)]
    if retention_events is not None:
        args += ["--retention-events", str(retention_events)]
    if accept_jwt:
        args.append("--accept-jwt")
    args += list(extra_args)
    return args


def _read_lines(stream, lines: "queue.Queue[Optional[str]]") -> None:
    """Forwards the emulator's stdout line by line (None at EOF) and keeps the pipe drained."""
    for raw in iter(stream.readline, b""):
        lines.put(raw.decode("utf-8", errors="replace"))
    lines.put(None)


def wait_for_ready_line(
    process: subprocess.Popen, lines: "queue.Queue[Optional[str]]", describe: Callable[[], str]
) -> dict:
    deadline = time.monotonic() + EMULATOR_READY_TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RuntimeError(
                f"hubcap-emulator printed no ready line within {EMULATOR_READY_TIMEOUT_S:.0f} s\n{describe()}"
            )
        try:
            line = lines.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if line is None:
            code = process.wait(timeout=STOP_TIMEOUT_S)
            raise RuntimeError(f"hubcap-emulator exited with code {code} before it was ready\n{describe()}")
        try:
            ready = jsonlib.loads(line)
        except ValueError:
            raise RuntimeError(
                f"hubcap-emulator's first stdout line is not the JSON ready line: {line!r}\n{describe()}"
            ) from None
        missing = {"amqp_addr", "admin_addr", "namespace"} - set(ready)
        if missing:
            raise RuntimeError(f"ready line {line.strip()!r} lacks {sorted(missing)}\n{describe()}")
        return ready


_STARTED_EMULATORS = pytest.StashKey[list]()


@pytest.fixture
def start_emulator(request, tmp_path) -> Callable[..., Emulator]:
    """A factory: start_emulator(hubs={"hub1": 4}, consumer_groups=[...], retention_events=N, ...).

    Every emulator it starts is stopped at teardown; one that exited on its own fails the test.
    """
    started: list[Emulator] = []
    request.node.stash[_STARTED_EMULATORS] = started

    def start(
        *,
        hubs: Optional[Mapping[str, int]] = None,
        namespace: str = "emulatorns",
        sas_key_name: str = "RootManageSharedAccessKey",
        sas_key: Optional[str] = None,
        consumer_groups: Iterable[str] = (),
        max_message_size: Optional[int] = None,
        retention_events: Optional[int] = None,
        accept_jwt: bool = False,
        extra_args: Iterable[str] = (),
    ) -> Emulator:
        hubs = dict(hubs or {"hub1": 4})
        consumer_groups = list(consumer_groups)
        sas_key = sas_key or random_sas_key()
        args = emulator_command(
            namespace=namespace,
            hubs=hubs,
            sas_key_name=sas_key_name,
            sas_key=sas_key,
            consumer_groups=consumer_groups,
            max_message_size=max_message_size,
            retention_events=retention_events,
            accept_jwt=accept_jwt,
            extra_args=extra_args,
        )
        stderr_path = tmp_path / f"emulator-{len(started)}.stderr.log"
        with open(stderr_path, "wb") as stderr_file:
            process = start_process(args, stdout=subprocess.PIPE, stderr=stderr_file)
        lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()

        def describe() -> str:
            shown = [a if a != sas_key else "<key>" for a in args]
            return f"command: {' '.join(shown)}\nstderr ({stderr_path}):\n{tail(stderr_path)}"

        try:
            ready = wait_for_ready_line(process, lines, describe)
        except BaseException:
            stop_process(process)
            raise
        amqp_host, _, amqp_port = ready["amqp_addr"].rpartition(":")
        emulator = Emulator(
            namespace=ready["namespace"],
            amqp_host=amqp_host,
            amqp_port=int(amqp_port),
            admin_url=f"http://{ready['admin_addr']}",
            sas_key_name=sas_key_name,
            sas_key=sas_key,
            hubs=hubs,
            consumer_groups=consumer_groups,
            args=args,
            stderr_path=stderr_path,
            process=process,
        )
        started.append(emulator)
        return emulator

    yield start

    crashed = []
    for emulator in started:
        code = emulator.process.poll()
        if code is not None:
            crashed.append(f"hubcap-emulator (pid {emulator.process.pid}) exited on its own with code {code}")
        stop_process(emulator.process)
    if crashed:
        pytest.fail("; ".join(crashed) + " (its stderr is in the report)")


@pytest.fixture
def emulator(start_emulator) -> Emulator:
    """hubcap-emulator with namespace emulatorns and one hub, hub1, of 4 partitions."""
    return start_emulator()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Attaches the stderr tail of every emulator the test started to a failed report."""
    report = yield
    if report.failed:
        for index, emulator in enumerate(item.stash.get(_STARTED_EMULATORS, [])):
            report.sections.append(
                (
                    f"hubcap-emulator #{index} stderr, last {STDERR_TAIL_LINES} lines ({emulator.stderr_path})",
                    emulator.stderr_tail(),
                )
            )
    return report


# --------------------------------------------------------------------------------------------
# Azurite


@dataclass
class Azurite:
    """A running Azurite blob service with the well-known development account."""

    blob_endpoint: str  # http://127.0.0.1:PORT/devstoreaccount1
    connection_string: str
    location: Path
    process: subprocess.Popen = field(repr=False)


def storage_connection_string(blob_endpoint: str) -> str:
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={AZURITE_ACCOUNT};"
        f"AccountKey={AZURITE_ACCOUNT_KEY};"
        f"BlobEndpoint={blob_endpoint};"
    )


def start_azurite(location: Path, log_path: Path) -> tuple[subprocess.Popen, int]:
    binary = azurite_binary()
    if not binary.exists():
        pytest.fail(f"Azurite is not installed at {binary}: run `npm ci` (or bash scripts/test.sh)")
    # The port is picked here and bound by Azurite a moment later; retry if another process won the race.
    for _attempt in range(3):
        port = free_loopback_port()
        with open(log_path, "ab") as log:
            process = start_process(
                [
                    str(binary),
                    "--blobHost", "127.0.0.1",
                    "--blobPort", str(port),
                    "--location", str(location),
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + AZURITE_READY_TIMEOUT_S
        while time.monotonic() < deadline and process.poll() is None:
            if port_accepts_connections("127.0.0.1", port):
                return process, port
            time.sleep(0.05)
        stop_process(process)
    raise RuntimeError(f"Azurite did not start listening; its log ({log_path}):\n{tail(log_path)}")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory) -> Azurite:
    """One Azurite blob service for the session; tests keep apart by using their own containers."""
    base = tmp_path_factory.mktemp("azurite")
    location = base / "data"
    location.mkdir()
    process, port = start_azurite(location, base / "azurite.log")
    blob_endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    try:
        yield Azurite(
            blob_endpoint=blob_endpoint,
            connection_string=storage_connection_string(blob_endpoint),
            location=location,
            process=process,
        )
    finally:
        stop_process(process)
