"""A fault-injecting HTTP proxy in front of Azurite: Blob Storage that answers with errors, throttles,
cuts connections, answers late, or applies a write and then says it failed.

Requests are classified by what they do to which record (`op`: put_blob, put_block,
put_block_list, set_metadata, get_properties, list, download, other; `kind`: ownership,
checkpoint, archive, container) so a test can aim a fault at "partition 2's checkpoint write".
Every request is logged with the answer it got, so the test can show the fault happened and how
the client behaved after it (how long it waited after a Retry-After, what the retry got back).
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import socket
import socketserver
import threading
import time
import urllib.parse
from typing import Optional, Union

# Response headers that describe the hop, not the answer.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclasses.dataclass
class Fault:
    """One rule: requests matching (op, kind, partition) get `action`, `times` times (None: until
    removed). Actions:
      - "status": answer `status` with the error `code` (and `Retry-After: retry_after` if set),
        without forwarding: the request is not applied;
      - "drop": read the request and close the connection without an answer (not applied);
      - "apply_then_fail": forward it (applied), then answer `status`/`code` instead of the answer;
      - "apply_then_drop": forward it (applied), then close the connection without an answer;
      - "delay": forward it (applied), and hold the answer back `delay` seconds."""

    action: str
    op: Union[str, tuple[str, ...], None] = None  # one operation or any of several
    kind: Optional[str] = None
    partition: Optional[str] = None
    status: int = 500
    code: str = "InternalError"
    retry_after: Optional[float] = None
    delay: float = 0.0
    times: Optional[int] = 1
    hits: int = 0

    def matches(self, op: str, kind: str, partition: Optional[str]) -> bool:
        return (
            (self.op is None or (op in self.op if isinstance(self.op, tuple) else self.op == op))
            and (self.kind is None or self.kind == kind)
            and (self.partition is None or self.partition == partition)
            and (self.times is None or self.hits < self.times)
        )


@dataclasses.dataclass
class Seen:
    """One request and what the proxy did with it."""

    at: float  # time.monotonic() when the request arrived
    method: str
    path: str
    op: str
    kind: str
    partition: Optional[str]
    status: Optional[int]  # what the client was answered; None when the connection was cut
    upstream_status: Optional[int]  # what Azurite answered, if it was asked
    fault: Optional[str]
    error_code: Optional[str]


def classify(method: str, target: str) -> tuple[str, str, Optional[str], str]:
    """(op, kind, partition, path) of a request to Azurite's path-style URL
    /<account>/<container>/<blob...>?<query>."""
    parsed = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(parsed.query)
    comp = query.get("comp", [None])[0]
    path = urllib.parse.unquote(parsed.path)
    parts = path.strip("/").split("/", 2)
    blob = parts[2] if len(parts) > 2 else ""
    if method == "PUT":
        op = {"metadata": "set_metadata", "block": "put_block", "blocklist": "put_block_list"}.get(comp, "put_blob")
    elif method == "HEAD":
        op = "get_properties"
    elif method == "GET":
        op = "list" if comp == "list" else "download"
    else:
        op = "other"
    segments = blob.split("/")
    partition: Optional[str] = None
    if not blob:
        kind = "container"
    elif len(segments) >= 2 and segments[-2].lower() in ("ownership", "checkpoint"):
        kind, partition = segments[-2].lower(), segments[-1]
    else:
        kind = "archive"
        # Capture names: <namespace>/<hub>/<partition>/<yyyy>/...
        if len(segments) >= 3:
            partition = segments[2]
    return op, kind, partition, path


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer_error(self, status: int, code: str, retry_after: Optional[float]) -> None:
        body = (
            f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
            f"<Message>injected by the test's fault proxy</Message></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("x-ms-error-code", code)
        if retry_after is not None:
            self.send_header("Retry-After", str(int(retry_after) if float(retry_after).is_integer() else retry_after))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            upstream.request(self.command, self.path, body=body or None, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            return response.status, response.getheaders(), data
        finally:
            upstream.close()

    def _relay(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_HEADERS and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _handle(self) -> None:
        arrived = time.monotonic()
        op, kind, partition, path = classify(self.command, self.path)
        body = self._body()
        fault = self.server.proxy.take(op, kind, partition)
        seen = Seen(arrived, self.command, path, op, kind, partition, None, None, fault.action if fault else None, None)
        try:
            if fault is not None and fault.action == "status":
                self._answer_error(fault.status, fault.code, fault.retry_after)
                seen.status, seen.error_code = fault.status, fault.code
                return
            if fault is not None and fault.action == "drop":
                self._cut()
                return
            status, headers, data = self._forward(body)
            seen.upstream_status = status
            if fault is not None and fault.action == "apply_then_fail":
                self._answer_error(fault.status, fault.code, fault.retry_after)
                seen.status, seen.error_code = fault.status, fault.code
                return
            if fault is not None and fault.action == "apply_then_drop":
                self._cut()
                return
            if fault is not None and fault.action == "delay":
                # Held back until the client has given up on it (or the proxy stops).
                self.server.proxy.stopping.wait(fault.delay)
            seen.error_code = dict((k.lower(), v) for k, v in headers).get("x-ms-error-code")
            self._relay(status, headers, data)
            seen.status = status
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.server.proxy.record(seen)

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _handle  # noqa: N815 - http.server's names


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, proxy: "BlobFaultProxy", upstream_port: int) -> None:
        self.proxy = proxy
        self.upstream_port = upstream_port
        super().__init__(("127.0.0.1", 0), _Handler)


class BlobFaultProxy:
    """The proxy: `endpoint` replaces Azurite's blob endpoint in hubcap's connection strings."""

    def __init__(self, upstream_port: int, account: str = "devstoreaccount1") -> None:
        self.account = account
        self._server = _Server(self, upstream_port)
        self.port = self._server.server_address[1]
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._seen: list[Seen] = []
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, name="blob-fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account}"

    def start(self) -> "BlobFaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def inject(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, op: str, kind: str, partition: Optional[str]) -> Optional[Fault]:
        """The first armed fault for this request, counted as hit."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(op, kind, partition):
                    fault.hits += 1
                    return fault
        return None

    def record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def seen(self, **match) -> list[Seen]:
        """The requests so far whose fields equal `match`, in arrival order."""
        with self._lock:
            requests = list(self._seen)
        return [s for s in requests if all(getattr(s, k) == v for k, v in match.items())]

    def after(self, first: Seen) -> list[Seen]:
        """The requests to the same blob with the same op that arrived after `first`."""
        return [s for s in self.seen(path=first.path, op=first.op) if s.at > first.at]
