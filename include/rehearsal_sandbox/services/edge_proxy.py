"""A region's edge proxy (``edge``): what customers' requests reach, on the edge host's own address.

``GET /apps/{app_id}`` is forwarded to a live agent of its own region that runs the app (one slot, round robin) and
answered 200 with ``{"app_id", "region", "served_by", "slot", "generation"}`` and headers ``X-Region``, ``X-Served-By``; 502 naming why when no agent of the
region runs it or none answers. ``GET /healthz`` is 200 while some app is routable (``{"status", "region", "apps"}``),
else 503. Routes come from what the region's agents report (``GET /v1/state`` every second), never through the
control plane: the data plane keeps serving while the control plane is gone.
"""
from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from typing import Any

from rehearsal_sandbox.services.common import JsonServer, call, route, serve_in_thread

log = logging.getLogger(__name__)


class Edge:
    def __init__(self, region: str, agents: dict[str, tuple[str, int]]) -> None:
        self.region = region
        self.agents = agents  # hostname -> (address, port)
        self.lock = threading.Lock()
        self.routes: dict[str, list[tuple[str, int]]] = {}  # app id -> [(hostname, slot)]
        self.live: set[str] = set()
        self.turn = itertools.count()

    def server(self, address: tuple[str, int]) -> JsonServer:
        return JsonServer(address, [route("GET", "/healthz", self.healthz), route("GET", "/apps/{app_id}", self.get_app)])

    def refresh(self) -> None:
        routes: dict[str, list[tuple[str, int]]] = {}
        live = set()
        for hostname, (address, port) in self.agents.items():
            try:
                status, body = call("GET", f"http://{address}:{port}/v1/state", timeout=0.5)
            except OSError:
                continue
            if status != 200:
                continue
            live.add(hostname)
            for app_id, record in (body.get("running") or {}).items():
                for slot in record.get("slots", []):
                    routes.setdefault(str(app_id), []).append((hostname, int(slot)))
        with self.lock:
            self.routes, self.live = routes, live

    def healthz(self, _request) -> tuple[int, Any]:
        with self.lock:
            apps, live = len(self.routes), len(self.live)
        body = {"status": "ok" if apps else "down", "region": self.region, "apps": apps, "agents_live": live}
        if not apps:
            return 503, {**body, "error": f"no app is routable in {self.region} ({live} agents live)"}
        return 200, body, {"X-Region": self.region}

    def get_app(self, request) -> tuple[int, Any]:
        app_id = request.params["app_id"]
        with self.lock:
            candidates = list(self.routes.get(app_id, []))
        if not candidates:
            return 502, {"error": f"no agent in {self.region} runs app {app_id}", "region": self.region}
        start = next(self.turn)
        tried = []
        for i in range(len(candidates)):
            hostname, slot = candidates[(start + i) % len(candidates)]
            address, port = self.agents[hostname]
            try:
                status, body = call("GET", f"http://{address}:{port}/apps/{app_id}/{slot}", timeout=1.0)
            except OSError as exc:
                tried.append(f"{hostname}: {exc}")
                continue
            if status == 200:
                return (200, {"app_id": body.get("app_id"), "slot": slot, "generation": body.get("generation"),
                              "region": self.region, "served_by": hostname},
                        {"X-Region": self.region, "X-Served-By": hostname})
            tried.append(f"{hostname}: {status}")
        return 502, {"error": f"no agent in {self.region} answered for app {app_id}: {'; '.join(tried[:3])}",
                     "region": self.region}


def run(region: str, address: tuple[str, int], agents: dict[str, tuple[str, int]], stopping: threading.Event) -> None:
    edge = Edge(region, agents)
    edge.refresh()
    server = edge.server(address)
    serve_in_thread(server)
    log.info("edge %s on %s:%s (pid %s), %s agents", region, *address, os.getpid(), len(agents))
    while not stopping.is_set():
        started = time.monotonic()
        try:
            edge.refresh()
        except Exception as exc:  # noqa: BLE001 - the next refresh retries
            log.warning("refresh failed: %s", exc)
        stopping.wait(max(0.05, 1.0 - (time.monotonic() - started)))
    server.shutdown()
    server.server_close()
