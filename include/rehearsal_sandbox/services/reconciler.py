"""The reconciler (``reconciler``): converges desired state (``deployments`` x ``placements``) into the hosts.

Each pass (every ``REFRESH`` seconds) reads the desired state and every agent's actual state (the agents are the
targets of the data plane's SRV record); a host whose actual state differs is queued. Pushes (``PUT /v1/desired``)
are limited to ``rate`` per second (0: paused), oldest queued host first; a failed push backs off per host (0.5 s
doubling to 8 s).

The time-to-converge SLI follows every change of an app's desired state (a new ``generation``; the fleet's first
rollout, generation 1, is not a change): from ``deployments.updated_at`` until every host placed to run the app
runs that generation (or a newer one).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rehearsal_sandbox.services.common import (
    BadRequest,
    Database,
    JsonServer,
    KeepAlive,
    Window,
    config_digest,
    error_text,
    prometheus,
    rate,
    route,
    serve_in_thread,
)

log = logging.getLogger(__name__)

DEFAULT_RATE = 5.0
REFRESH = 0.5
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 8.0
SLI_WINDOW = 300


def _since(request) -> float | None:
    value = request.query("since")
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        raise BadRequest(f"since must be a unix time, got {value!r}") from None

DESIRED_SQL = """SELECT d.app_id, d.generation, d.release_id, d.image, d.config, d.replicas,
                        extract(epoch FROM d.updated_at)::float8, p.slot, h.hostname
                   FROM deployments d
                   LEFT JOIN placements p ON p.app_id = d.app_id
                   LEFT JOIN hosts h ON h.id = p.host_id"""


class Reconciler:
    def __init__(self, database: Database, agents: Callable[[], list[tuple[str, int]]], default_rate: float = DEFAULT_RATE) -> None:
        self.db = database
        self.resolve_agents = agents
        self.unreachable: set[str] = set()
        self.rate = default_rate
        self.lock = threading.RLock()
        self.error: str | None = None
        self.desired: dict[str, dict[str, dict]] = {}  # hostname -> {app_id: record}
        self.apps: dict[str, dict] = {}  # app_id -> {"generation", "changed_at", "replicas", "hosts"}
        self.actual: dict[str, dict[str, dict]] = {}  # hostname -> running, as last seen
        self.addresses: dict[str, tuple[str, int]] = {}  # hostname -> agent address
        self.names: dict[tuple[str, int], str] = {}
        self.queue: dict[str, float] = {}  # hostname -> when it was first seen different
        self.backoff: dict[str, tuple[float, float]] = {}  # hostname -> (retry at, current delay)
        self.pending: dict[str, list[tuple[int, float]]] = {}  # app_id -> [(generation, changed_at)]
        self.converged: deque[tuple[float, float, float]] = deque()  # (converged at, seconds to converge, changed at)
        self.pushes = Window(30)
        self.first_read = True
        self._fetch_conns: dict[tuple[str, int], KeepAlive] = {}
        self._push_conns: dict[tuple[str, int], KeepAlive] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="agent-state")

    # ------------------------------------------------------------------ HTTP
    def server(self, port: tuple[str, int]) -> JsonServer:
        return JsonServer(port, [
            route("GET", "/healthz", self.healthz),
            route("GET", "/v1/metrics", lambda r: (200, self.metrics(_since(r)))),
            route("PUT", "/v1/rate", self.put_rate),
            route("GET", "/metrics", lambda r: (200, prometheus("reconciler", self.metrics()))),
        ])

    def healthz(self, _request) -> tuple[int, Any]:
        body = {"status": "ok" if self.error is None else "degraded", "rate": self.rate, "paused": self.rate == 0}
        return (200, body) if self.error is None else (503, {**body, "error": self.error})

    def put_rate(self, request) -> tuple[int, Any]:
        body = request.json()
        value = body.get("rate") if isinstance(body, dict) else None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise BadRequest("rate must be a number (pushes per second; 0 pauses)")
        if value < 0:
            raise BadRequest("rate must not be negative")
        self.rate = float(value)
        log.info("rate %s/s%s", self.rate, " (paused)" if self.rate == 0 else "")
        return 200, {"rate": self.rate}

    def metrics(self, since: float | None = None) -> dict:
        """:param since: count only the converged changes made at or after this unix time (changes still waiting
            count whatever their age): "has it converged normally since the recovery", not over the outage."""
        now = time.time()
        with self.lock:
            while self.converged and self.converged[0][0] < now - SLI_WINDOW:
                self.converged.popleft()
            waiting = [now - changed for changes in self.pending.values() for _gen, changed in changes]
            done = [seconds for _at, seconds, changed in self.converged if since is None or changed >= since]
            queue_depth = len(self.queue)
        total, errors = self.pushes.counts()
        candidates = done + waiting
        return {"rate": self.rate, "paused": self.rate == 0, "queue_depth": queue_depth, "pushes_last_30s": total,
                "errors_last_30s": errors, "error_rate": rate(errors, total),
                "time_to_converge_seconds": round(max(candidates), 3) if candidates else None,
                "oldest_unconverged_seconds": round(max(waiting), 3) if waiting else 0.0,
                "converged_changes_last_300s": len(done)}

    # ------------------------------------------------------------------ reading desired and actual state
    def refresh(self) -> None:
        try:
            with self.db.connection() as conn:
                rows = conn.execute(DESIRED_SQL).fetchall()
            self.error = None
        except Exception as exc:  # noqa: BLE001 - nothing is pushed from a desired state it cannot read
            if self.error is None:
                log.warning("cannot read desired state: %s", error_text(exc))
            self.error = error_text(exc)
            rows = None
        actual = self._read_agents()
        with self.lock:
            for hostname, running in actual.items():
                self.actual[hostname] = running
            if rows is not None:
                self._set_desired(rows)
            self._requeue()
            self._check_converged(time.time())
            self.first_read = False

    def _read_agents(self) -> dict[str, dict]:
        try:
            addresses = self.resolve_agents()
        except Exception as exc:  # noqa: BLE001 - the last known addresses are kept
            log.warning("cannot resolve the agents: %s", error_text(exc))
            addresses = list(self.addresses.values())

        def fetch(address: tuple[str, int]) -> tuple[tuple[str, int], dict | None]:
            conn = self._fetch_conns.setdefault(address, KeepAlive(*address))
            try:
                status, body = conn.request("GET", "/v1/state")
                return address, body if status == 200 and isinstance(body, dict) else None
            except Exception:  # noqa: BLE001 - an agent that does not answer keeps its last known state
                return address, None

        out = {}
        unreachable = set()
        for address, body in self._pool.map(fetch, addresses):
            if body is None:
                if address in self.names:
                    unreachable.add(self.names[address])
                continue
            hostname = body["hostname"]
            self.addresses[hostname] = address
            self.names[address] = hostname
            out[hostname] = body.get("running") or {}
        # A host that does not answer is not pushed to (its region may be gone): the scheduler moves its placements.
        self.unreachable = unreachable
        return out

    def _set_desired(self, rows: list[tuple]) -> None:
        desired: dict[str, dict[str, dict]] = {}
        apps: dict[str, dict] = {}
        for app_id, generation, release_id, image, config, replicas, updated_at, slot, hostname in rows:
            key = str(app_id)
            app = apps.setdefault(key, {"generation": generation, "changed_at": updated_at, "replicas": replicas,
                                        "hosts": set(), "placed": 0})
            if hostname is None:
                continue
            app["hosts"].add(hostname)
            app["placed"] += 1
            record = desired.setdefault(hostname, {}).setdefault(key, {
                "generation": generation, "release_id": release_id, "image": image,
                "config_digest": config_digest(config), "slots": []})
            record["slots"].append(slot)
        for host_apps in desired.values():
            for record in host_apps.values():
                record["slots"].sort()
        before, self.apps, self.desired = self.apps, apps, desired
        for key, app in apps.items():
            seen = before.get(key)
            if app["generation"] > 1 and (seen is None or app["generation"] > seen["generation"]):
                if self.first_read and self._runs(key, app, app["generation"]):
                    continue  # converged before this reconciler looked: not a change it saw
                self.pending.setdefault(key, []).append((app["generation"], app["changed_at"]))
        for key in set(self.pending) - set(apps):
            del self.pending[key]

    def _runs(self, key: str, app: dict, generation: int) -> bool:
        """Every host placed to run the app runs this generation or a newer one, and it has all its placements."""
        if app["placed"] < app["replicas"]:
            return False
        return all(self.actual.get(h, {}).get(key, {}).get("generation", 0) >= generation for h in app["hosts"])

    def desired_for(self, hostname: str) -> dict[str, dict]:
        return self.desired.get(hostname, {})

    def _requeue(self) -> None:
        now = time.time()
        hosts = set(self.desired) | {h for h, running in self.actual.items() if running}
        for hostname in hosts:
            if self.desired_for(hostname) != self.actual.get(hostname, {}):
                self.queue.setdefault(hostname, now)
            else:
                self.queue.pop(hostname, None)
        for hostname in set(self.queue) - hosts:
            del self.queue[hostname]

    def _check_converged(self, now: float) -> None:
        for key in list(self.pending):
            app = self.apps.get(key)
            if app is None:
                continue
            left = []
            for generation, changed_at in self.pending[key]:
                if self._runs(key, app, generation):
                    self.converged.append((now, max(0.0, now - changed_at), changed_at))
                else:
                    left.append((generation, changed_at))
            if left:
                self.pending[key] = left
            else:
                del self.pending[key]

    # ------------------------------------------------------------------ pushing
    def next_host(self, now: float) -> str | None:
        with self.lock:
            for hostname, _since in sorted(self.queue.items(), key=lambda kv: kv[1]):
                if (self.backoff.get(hostname, (0.0, 0.0))[0] <= now and hostname in self.addresses
                        and hostname not in self.unreachable):
                    return hostname
        return None

    def push(self, hostname: str) -> bool:
        with self.lock:
            desired = json.loads(json.dumps(self.desired_for(hostname)))
            address = self.addresses[hostname]
        conn = self._push_conns.setdefault(address, KeepAlive(*address, timeout=5.0))
        try:
            status, body = conn.request("PUT", "/v1/desired", {"apps": desired})
            ok = status == 200 and isinstance(body, dict)
            problem = f"HTTP {status}"
        except Exception as exc:  # noqa: BLE001 - a failed push backs off
            ok, problem = False, error_text(exc)
        now = time.time()
        self.pushes.add(not ok)
        with self.lock:
            if ok:
                self.backoff.pop(hostname, None)
                self.actual[hostname] = body.get("running") or {}
                if self.actual[hostname] == self.desired_for(hostname):
                    self.queue.pop(hostname, None)
                self._check_converged(now)
            else:
                delay = min(BACKOFF_MAX, self.backoff.get(hostname, (0.0, BACKOFF_FIRST / 2))[1] * 2)
                self.backoff[hostname] = (now + delay, delay)
                log.warning("push to %s failed (%s); retrying in %.1fs", hostname, problem, delay)
        return ok


def run(port: tuple[str, int], reconciler: Reconciler, stopping: threading.Event) -> None:
    server = reconciler.server(port)
    serve_in_thread(server)
    log.info("reconciler on %s:%s, rate %s/s (pid %s)", *port, reconciler.rate, os.getpid())
    next_refresh = 0.0
    tokens, last = 1.0, time.monotonic()
    while not stopping.is_set():
        now = time.monotonic()
        if now >= next_refresh:
            try:
                reconciler.refresh()
            except Exception:  # noqa: BLE001 - never exits; the next pass retries
                log.exception("pass failed")
            next_refresh = time.monotonic() + REFRESH
        now = time.monotonic()
        current_rate = reconciler.rate
        tokens = min(max(1.0, current_rate), tokens + (now - last) * current_rate)
        last = now
        if current_rate > 0 and tokens >= 1.0:
            hostname = reconciler.next_host(time.time())
            if hostname is not None:
                tokens -= 1.0
                reconciler.push(hostname)
                continue
        stopping.wait(0.02)
    server.shutdown()
    server.server_close()
    reconciler.db.close()
