"""A small fault-injecting HTTP/1.1 proxy for S3 traffic in tests.

Sits between an S3 client (pyarrow / boto3) and a real S3 server on 127.0.0.1:

    with FaultProxy(s3_server.endpoint) as proxy:
        proxy.add(Fault("500", method="PUT", every=3))           # every 3rd PUT -> HTTP 500 InternalError
        proxy.add(Fault("slowdown", first=4))                      # first 4 requests -> 503 SlowDown
        proxy.add(Fault("reset", path=r"part-", per_key_first=5))  # first 5 requests to each part key -> RST
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", proxy.endpoint)
        storage._cached_s3.cache_clear()
        ...
        proxy.requests   # what went through, and what was done to each request

Requests are parsed just enough to forward them (request line, headers,
Content-Length or chunked body, ``Expect: 100-continue`` answered by the proxy)
and are forwarded unchanged otherwise, so SigV4 signatures stay valid (the
server checks the Host header the client signed, which the proxy keeps).

Safety: listens on 127.0.0.1 only, threads are daemons, every socket has a
timeout, the number of connections is capped, and the proxy stops by itself
after ``max_lifetime`` seconds even if a test forgets to stop it.
"""

from __future__ import annotations

import itertools
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlparse

_XML = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>' \
       '<Resource>{resource}</Resource><RequestId>FAULT{n:08d}</RequestId></Error>'

# action -> (HTTP status, S3 error code, message AWS sends with it)
ERRORS = {
    "403": (403, "AccessDenied", "Access Denied"),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "502": (502, "BadGateway", "Bad Gateway"),
    "503": (503, "ServiceUnavailable", "Reduce your request rate."),
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
}
ACTIONS = tuple(ERRORS) + ("reset", "delay")


@dataclass
class Fault:
    """Which requests to hit and how.

    action: "403" (AccessDenied) | "500" | "502" | "503" (ServiceUnavailable) | "slowdown" (503 SlowDown) | "reset"
        (TCP RST instead of an answer) | "delay" (forward after ``delay`` seconds).
    method / path: only requests with this method (str or set) / whose target matches this regex.
    Of the matching requests, hit: ``first`` = the first N; ``every`` = every k-th (k, 2k, ...);
    ``per_key_first`` = the first N to each distinct path; none of them = all.  ``limit`` caps hits.
    after_upstream: forward the request first (the server applies it), then answer with the fault:
        the "did my write happen?" case.
    delay / until: "delay" holds the request for ``delay`` seconds, or - with ``until`` (a
        threading.Event) - until the event is set, ``delay`` seconds at most.
    """

    action: str
    method: str | set[str] | None = None
    path: str | None = None
    first: int | None = None
    every: int | None = None
    per_key_first: int | None = None
    limit: int | None = None
    after_upstream: bool = False
    delay: float = 0.0
    until: threading.Event | None = None
    matched: int = 0
    hits: int = 0
    _per_key: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {ACTIONS}")

    def _matches(self, method: str, target: str) -> bool:
        if self.method is not None:
            wanted = {self.method} if isinstance(self.method, str) else set(self.method)
            if method not in wanted:
                return False
        return self.path is None or re.search(self.path, target) is not None

    def decide(self, method: str, target: str) -> bool:
        """Called under the proxy's lock; True when this request is to be hit."""
        if not self._matches(method, target):
            return False
        self.matched += 1
        if self.limit is not None and self.hits >= self.limit:
            return False
        if self.first is not None:
            hit = self.matched <= self.first
        elif self.every is not None:
            hit = self.matched % self.every == 0
        elif self.per_key_first is not None:
            key = target.split("?", 1)[0]
            self._per_key[key] = self._per_key.get(key, 0) + 1
            hit = self._per_key[key] <= self.per_key_first
        else:
            hit = True
        if hit:
            self.hits += 1
        return hit


@dataclass(frozen=True)
class Record:
    at: float
    method: str
    target: str
    action: str  # "forward" or the fault's action
    status: int | None  # status sent to the client (None: connection reset / no answer)


class ProxyError(RuntimeError):
    pass


class _Closed(Exception):
    """The peer closed the connection cleanly between requests."""


class _Conn:
    """Buffered reader over a socket."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_until(self, marker: bytes, limit: int = 1 << 20) -> bytes:
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ProxyError("header too large")
            if not self._fill():
                if not self.buf:
                    raise _Closed()
                raise ProxyError("connection closed mid-message")
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ProxyError("connection closed mid-body")
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_close(self) -> bytes:
        while self._fill():
            pass
        out, self.buf = self.buf, b""
        return out


def _parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    start = lines[0]
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return start, headers


def _get(headers: list[tuple[str, str]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


def _read_body(conn: _Conn, headers: list[tuple[str, str]], allow_to_close: bool = False) -> tuple[bytes, bool]:
    """Raw body bytes (chunk framing kept) and whether the message was delimited by close."""
    te = (_get(headers, "transfer-encoding") or "").lower()
    if "chunked" in te:
        raw = b""
        while True:
            size_line = conn.read_until(b"\r\n")
            raw += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers up to the empty line
                    line = conn.read_until(b"\r\n")
                    raw += line
                    if line == b"\r\n":
                        return raw, False
            raw += conn.read_exact(size + 2)
    length = _get(headers, "content-length")
    if length is not None:
        return conn.read_exact(int(length)), False
    if allow_to_close:
        return conn.read_to_close(), True
    return b"", False


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class FaultProxy:
    def __init__(self, upstream: str, *, max_lifetime: float = 180.0, max_connections: int = 64,
                 socket_timeout: float = 30.0):
        self._set_upstream(upstream)
        self.max_lifetime = max_lifetime
        self.max_connections = max_connections
        self.socket_timeout = socket_timeout
        self.faults: list[Fault] = []
        self.requests: list[Record] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._counter = itertools.count(1)
        self.port: int | None = None

    # -- configuration -----------------------------------------------------------------
    def _set_upstream(self, url: str) -> None:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        if parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("FaultProxy only forwards to loopback servers")
        self._upstream = (parsed.hostname, parsed.port or 80)

    @property
    def upstream(self) -> str:
        return f"http://{self._upstream[0]}:{self._upstream[1]}"

    @upstream.setter
    def upstream(self, url: str) -> None:
        with self._lock:
            self._set_upstream(url)

    def add(self, *faults: Fault) -> "FaultProxy":
        with self._lock:
            self.faults.extend(faults)
        return self

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise ProxyError("proxy not started")
        return f"http://127.0.0.1:{self.port}"

    def count(self, action: str | None = None, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests
                       if (action is None or r.action == action) and (method is None or r.method == method))

    @property
    def injected(self) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.action not in ("forward", "delay"))

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "FaultProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._deadline = time.monotonic() + self.max_lifetime
        t = threading.Thread(target=self._accept_loop, name=f"faultproxy-{self.port}", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        for t in list(self._threads):
            if t is not threading.current_thread():
                t.join(timeout=5)

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------
    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, sock: socket.socket | None) -> None:
        if sock is None:
            return
        with self._lock:
            self._sockets.discard(sock)
        try:
            sock.close()
        except OSError:
            pass

    def _accept_loop(self) -> None:
        assert self._listener is not None
        self._track(self._listener)
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                try:
                    client, _ = self._listener.accept()
                except socket.timeout:
                    continue
                except OSError:
                    break
                with self._lock:
                    busy = len(self._sockets) > 2 * self.max_connections
                if busy:
                    _reset(client)
                    continue
                client.settimeout(self.socket_timeout)
                self._track(client)
                t = threading.Thread(target=self._serve, args=(client,), daemon=True,
                                     name=f"faultproxy-{self.port}-conn")
                t.start()
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
        finally:
            self._stop.set()
            self._untrack(self._listener)

    def _record(self, method: str, target: str, action: str, status: int | None) -> None:
        with self._lock:
            self.requests.append(Record(time.monotonic(), method, target, action, status))

    def _decide(self, method: str, target: str) -> Fault | None:
        with self._lock:
            chosen = None
            for f in self.faults:  # every rule counts the request; the first hit wins
                if f.decide(method, target) and chosen is None:
                    chosen = f
            return chosen

    def _connect_upstream(self) -> socket.socket:
        with self._lock:
            host, port = self._upstream
        s = socket.create_connection((host, port), timeout=self.socket_timeout)
        self._track(s)
        return s

    def _serve(self, client: socket.socket) -> None:
        conn = _Conn(client)
        upstream: socket.socket | None = None
        up: _Conn | None = None
        try:
            while not self._stop.is_set():
                try:
                    head = conn.read_until(b"\r\n\r\n")
                except _Closed:
                    return
                start, headers = _parse_head(head[:-4])
                method, target, _version = (start.split(" ", 2) + ["", ""])[:3]
                expect = (_get(headers, "expect") or "").lower() == "100-continue"
                if expect:
                    client.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    headers = [(k, v) for k, v in headers if k.lower() != "expect"]
                body, _ = _read_body(conn, headers)
                fault = self._decide(method, target)
                if fault is not None and fault.action == "delay":
                    self._record(method, target, "delay", None)  # before sleeping: tests wait on it
                    if fault.until is not None:
                        fault.until.wait(fault.delay)
                    else:
                        time.sleep(fault.delay)
                    fault = None
                if fault is not None and not fault.after_upstream:
                    if not self._inject(client, fault, method, target):
                        return
                    continue
                # forward
                request = (start + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode("latin-1")
                for attempt in (1, 2):
                    try:
                        if upstream is None:
                            upstream = self._connect_upstream()
                            up = _Conn(upstream)
                        upstream.sendall(request + body)
                        status_line_head = up.read_until(b"\r\n\r\n")
                        break
                    except (OSError, ProxyError, _Closed):
                        self._untrack(upstream)
                        upstream, up = None, None
                        if attempt == 2:
                            raise
                status_line, rheaders = _parse_head(status_line_head[:-4])
                status = int(status_line.split(" ", 2)[1])
                no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
                rbody, closed = (b"", False) if no_body else _read_body(up, rheaders, allow_to_close=True)
                if fault is not None:  # after_upstream: the server applied it; the client hears a fault
                    if not self._inject(client, fault, method, target):
                        return
                    continue
                self._record(method, target, "forward", status)  # before answering: tests read it right after
                client.sendall(status_line_head + rbody)
                if closed or (_get(rheaders, "connection") or "").lower() == "close":
                    return
                if (_get(headers, "connection") or "").lower() == "close":
                    return
        except (OSError, ProxyError, ValueError, IndexError):
            return
        finally:
            self._untrack(upstream)
            self._untrack(client)

    def _inject(self, client: socket.socket, fault: Fault, method: str, target: str) -> bool:
        """Answer with the fault; False when the client connection is gone (reset)."""
        if fault.action == "reset":
            self._record(method, target, "reset", None)
            with self._lock:
                self._sockets.discard(client)
            _reset(client)
            return False
        status, code, message = ERRORS[fault.action]
        body = _XML.format(code=code, message=message, resource=target.split("?", 1)[0],
                           n=next(self._counter)).encode()
        reason = {403: "Forbidden", 500: "Internal Server Error", 502: "Bad Gateway",
                  503: "Service Unavailable"}[status]
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(body)}\r\nx-amz-request-id: FAULT\r\nServer: faultproxy\r\n\r\n")
        self._record(method, target, fault.action, status)
        client.sendall(head.encode() + (b"" if method == "HEAD" else body))
        return True


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
