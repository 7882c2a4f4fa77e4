"""What the sandbox's control-plane services and host agents share: a JSON HTTP server (stdlib), a JSON HTTP
client, the control-plane database found through service discovery, and the daemon's stop signal.

Every body is JSON; times are ISO-8601 UTC with microseconds (``iso``).
"""
from __future__ import annotations

import hashlib
import http.client
import json
import logging
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg

log = logging.getLogger(__name__)

DB = "controlplane"


# ---------------------------------------------------------------------- values
def iso(value: datetime | float | None) -> str | None:
    """ISO-8601 UTC with microseconds (a datetime or a unix time)."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def config_digest(config: Any) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


# ---------------------------------------------------------------------- HTTP server
class Request:
    def __init__(self, handler: BaseHTTPRequestHandler, params: dict[str, str]) -> None:
        self.handler = handler
        self.params = params
        self._body: Any = None
        self._raw: bytes | None = None

    def header(self, name: str) -> str | None:
        return self.handler.headers.get(name)

    def query(self, name: str) -> str | None:
        """One query-string parameter (the first value), or None."""
        from urllib.parse import parse_qs

        values = parse_qs(self.handler.path.partition("?")[2]).get(name)
        return values[0] if values else None

    def raw(self) -> bytes:
        """The body's bytes, read once (an unread body is drained after the answer: the connection is kept)."""
        if self._raw is None:
            length = int(self.handler.headers.get("Content-Length") or 0)
            self._raw = self.handler.rfile.read(length) if length > 0 else b""
        return self._raw

    def json(self) -> Any:
        """The body as JSON; ``BadRequest`` when it is not."""
        if self._body is None:
            try:
                self._body = json.loads(self.raw() or b"{}")
            except ValueError as exc:
                raise BadRequest(f"body is not JSON: {exc}") from None
        return self._body


class BadRequest(Exception):
    """A 400 answer: the message names the field."""


Route = tuple[str, re.Pattern, Callable[[Request], tuple[int, Any]]]


class JsonServer(ThreadingHTTPServer):
    """One HTTP server; ``routes`` are (method, path regex, handler(request) -> (status, body)). A body that is a
    ``str`` is sent as Prometheus text."""

    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a sixth simultaneous connect is dropped and retried a second
    # later, which clients see as a 1 s stall (a runbook's parallel probe of one host's endpoints hit it).
    request_queue_size = 128

    def __init__(self, address: tuple[str, int] | int, routes: list[Route],
                 on_answer: Callable[[str, str, int], None] | None = None) -> None:
        """:param address: (host, port) to listen on: a sandbox host's own address (a bare port: 127.0.0.1)"""
        self.routes = routes
        self.on_answer = on_answer
        super().__init__(("127.0.0.1", address) if isinstance(address, int) else tuple(address), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: probes and pushes reuse their connection
    disable_nagle_algorithm = True  # headers and body are two writes: without it each answer waits ~40 ms
    server: JsonServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        allowed = False
        for method, pattern, handler in self.server.routes:
            match = pattern.fullmatch(path)
            if not match:
                continue
            allowed = True
            if method != self.command:
                continue
            request = Request(self, match.groupdict())
            headers: dict = {}
            try:
                answer = handler(request)  # (status, body) or (status, body, headers)
                status, body = answer[0], answer[1]
                headers = answer[2] if len(answer) > 2 else {}
            except BadRequest as exc:
                status, body = 400, {"error": str(exc)}
            except Exception as exc:  # noqa: BLE001 - answered as a 500, logged
                log.exception("%s %s failed", self.command, path)
                status, body = 500, {"error": error_text(exc)}
            request.raw()
            self._answer(status, body, headers)
            return
        Request(self, {}).raw()
        self._answer(405 if allowed else 404, {"error": f"{'method not allowed' if allowed else 'not found'}: {self.command} {path}"})

    def _answer(self, status: int, body: Any, headers: dict | None = None) -> None:
        if isinstance(body, str):
            data, kind = body.encode(), "text/plain; version=0.0.4"
        else:
            data, kind = json.dumps(body).encode(), "application/json"
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, str(value))
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if self.server.on_answer is not None:
            self.server.on_answer(self.command, self.path, status)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _dispatch


def route(method: str, path: str, handler: Callable[[Request], tuple[int, Any]]) -> Route:
    """``path`` with ``{name}`` parts, e.g. ``/v1/apps/{app_id}``."""
    return method, re.compile(re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path)), handler


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                              name=f"http-{server.server_address[1]}")
    thread.start()
    return thread


def stop_event() -> threading.Event:
    """Set on SIGTERM (and SIGINT): the daemon's loops end and it exits cleanly."""
    stopping = threading.Event()

    def _stop(signum, _frame):
        log.info("signal %s: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stopping


# ---------------------------------------------------------------------- HTTP client
def call(method: str, url: str, body: Any = None, timeout: float = 2.0, headers: dict | None = None) -> tuple[int, Any]:
    """(status, JSON body) of one request; an HTTP error status is returned, not raised. ``OSError`` when there is
    no answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _decode(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decode(exc.read())


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode(errors="replace")


class KeepAlive:
    """Requests to one host:port over one persistent connection (reconnected after an error). Not thread-safe:
    one per thread."""

    def __init__(self, host: str, port: int, timeout: float = 0.5) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):  # a kept connection the server closed fails once: retried on a new one
            fresh = self._conn is None
            if fresh:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout or self.timeout)
            elif timeout:
                self._conn.timeout = timeout
                if self._conn.sock is not None:
                    self._conn.sock.settimeout(timeout)
            try:
                self._conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
                response = self._conn.getresponse()
                return response.status, _decode(response.read())
            except (OSError, http.client.HTTPException):
                self.close()
                if fresh or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ---------------------------------------------------------------------- the control-plane database
class Database:
    """The control-plane database as a client finds it: the discovery record re-resolved at least every second
    and on every reconnect; a few pooled connections, each dropped when the record moved or it failed.

    ``replicas`` (optional) lists the standbys' addresses, for reads when the primary does not answer."""

    def __init__(self, resolve_primary: Callable[[], tuple[str, int]], password: str, application_name: str,
                 resolve_replicas: Callable[[], list[tuple[str, int]]] | None = None, pool_size: int = 4,
                 statement_timeout_ms: int = 5000) -> None:
        self._resolve_primary = resolve_primary
        self._resolve_replicas = resolve_replicas
        self._password = password
        self._application_name = application_name
        self._statement_timeout_ms = statement_timeout_ms
        self._pool: deque[tuple[tuple[str, int], psycopg.Connection]] = deque()
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._resolved: tuple[float, tuple[str, int] | None, str | None] = (0.0, None, None)

    def primary_address(self, fresh: bool = False) -> tuple[str, int]:
        """Where the discovery record points (cached for at most a second); ``LookupError``/``OSError`` when it
        cannot be read and was never read."""
        with self._lock:
            at, address, _error = self._resolved
            if fresh or address is None or time.monotonic() - at >= 1.0:
                try:
                    address = self._resolve_primary()
                    self._resolved = (time.monotonic(), address, None)
                except Exception as exc:  # noqa: BLE001 - the last address is kept; raised when there is none
                    self._resolved = (time.monotonic(), address, error_text(exc))
                    if address is None:
                        raise
            return address

    def _connect(self, address: tuple[str, int], autocommit: bool) -> psycopg.Connection:
        return psycopg.connect(host=address[0], port=address[1], dbname=DB, user=DB, password=self._password,
                               connect_timeout=1, autocommit=autocommit, application_name=self._application_name,
                               options=f"-c statement_timeout={self._statement_timeout_ms}")

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection to the primary the record points at now (autocommit; use ``conn.transaction()``)."""
        address = self.primary_address()
        conn = None
        with self._lock:
            while self._pool:
                pooled_address, pooled = self._pool.popleft()
                if pooled_address == address and not pooled.closed:
                    conn = pooled
                    break
                pooled.close()
        if conn is None:
            try:
                conn = self._connect(address, autocommit=True)
            except psycopg.Error:
                self.primary_address(fresh=True)  # re-resolved on every reconnect
                raise
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        if conn.closed or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            if len(self._pool) < self._pool_size:
                self._pool.append((address, conn))
                return
        conn.close()

    @contextmanager
    def replica_connection(self) -> Iterator[tuple[psycopg.Connection, str]]:
        """A connection to the first standby of the replica record that answers, with its address."""
        if self._resolve_replicas is None:
            raise LookupError("no replica record")
        last: Exception | None = None
        for host, port in self._resolve_replicas():
            try:
                conn = self._connect((host, port), autocommit=True)
            except psycopg.Error as exc:
                last = exc
                continue
            with conn:
                yield conn, f"{host}:{port}"
            return
        raise last or LookupError("the replica record lists no standby")

    def close(self) -> None:
        with self._lock:
            while self._pool:
                self._pool.popleft()[1].close()


def discovery_resolvers(sandbox, region: str) -> tuple[Callable[[], tuple[str, int]], Callable[[], list[tuple[str, int]]]]:
    """The primary's and the standbys' resolvers through the sandbox's Route 53 records (one client each, locked:
    boto3 clients are shared between threads here)."""
    from rehearsal.discovery import resolve, resolve_all

    discovery = sandbox.service_discovery  # one zone for every region (Route 53 is global)
    route53 = sandbox.aws_endpoint.client("route53")
    record, replica_record = discovery.record(), discovery.replica_record()
    lock = threading.Lock()

    def primary() -> tuple[str, int]:
        with lock:
            return resolve(route53, record)

    def replicas() -> list[tuple[str, int]]:
        with lock:
            return resolve_all(route53, replica_record)

    return primary, replicas


class Window:
    """Events (timestamp, flag) in the last ``seconds``: counts and rates for metrics."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._events: deque[tuple[float, bool]] = deque()
        self._lock = threading.Lock()

    def add(self, flag: bool = False) -> None:
        with self._lock:
            self._events.append((time.time(), flag))
            self._trim()

    def _trim(self) -> None:
        cutoff = time.time() - self.seconds
        while self._events and self._events[0][0] < cutoff:
            self._events.popleft()

    def counts(self) -> tuple[int, int]:
        """(events, flagged events)."""
        with self._lock:
            self._trim()
            return len(self._events), sum(1 for _, flag in self._events if flag)


def rate(errors: int, total: int) -> float:
    return round(errors / total, 4) if total else 0.0


def prometheus(prefix: str, values: dict[str, Any]) -> str:
    lines = []
    for key, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float):
            lines.append(f"{prefix}_{key} {value}")
        elif isinstance(value, str):
            lines.append(f'{prefix}_{key}{{{key}="{value}"}} 1')
    return "\n".join(lines) + "\n"
