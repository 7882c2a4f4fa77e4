"""The blackbox prober (``prober``): every second it probes every instance the agents were last seen running, and
the API's ``/healthz``; one JSON line per round in ``probe_log``:
``{"t", "endpoints", "ok", "failed": ["agent-03/apps/7/0", ...up to 10], "api": "ok" | "<error>", "api_mode"}``.

The agents are the targets of the data plane's SRV record. Each agent's list of instances is refreshed from its
``/v1/state`` every round; an agent that stops answering keeps its last list, and each of its probes fails.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rehearsal_sandbox.services.common import JsonServer, KeepAlive, call, error_text, iso, route, serve_in_thread

log = logging.getLogger(__name__)

TIMEOUT = 0.5
AGENT_BUDGET = 0.8  # seconds per agent per round: what is left unprobed after that counts as failed


class Prober:
    def __init__(self, agents: Callable[[], list[tuple[str, int]]], api_url: Callable[[], str | None]) -> None:
        self.resolve_agents = agents
        self.api_url = api_url
        self.addresses: list[tuple[str, int]] = []
        self.resolved_at = 0.0
        self.names: dict[tuple[str, int], str] = {}
        self.instances: dict[tuple[str, int], list[tuple[str, int]]] = {}  # agent -> [(app_id, slot)] last seen
        self.conns: dict[tuple[str, int], KeepAlive] = {}
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self.rounds = 0
        self.last: dict | None = None

    def healthz(self, _request) -> tuple[int, dict]:
        last = self.last or {}
        return 200, {"status": "ok", "rounds": self.rounds, "last_round_at": iso(last.get("t")),
                     "endpoints": last.get("endpoints"), "ok": last.get("ok"), "api": last.get("api")}

    def _agents(self) -> list[tuple[str, int]]:
        if time.monotonic() - self.resolved_at >= 5 or not self.addresses:
            try:
                self.addresses = sorted(self.resolve_agents())
                self.resolved_at = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - the last known agents are probed
                log.warning("cannot resolve the agents: %s", error_text(exc))
        return self.addresses

    def probe_agent(self, address: tuple[str, int]) -> tuple[int, list[str]]:
        """(ok, failed) over this agent's instances."""
        conn = self.conns.setdefault(address, KeepAlive(*address, timeout=TIMEOUT))
        deadline = time.monotonic() + AGENT_BUDGET
        try:
            status, body = conn.request("GET", "/v1/state")
            if status == 200 and isinstance(body, dict):
                self.names[address] = body["hostname"]
                self.instances[address] = sorted((app_id, slot) for app_id, record in body["running"].items()
                                                 for slot in record.get("slots", []))
        except Exception:  # noqa: BLE001 - its last list is probed (and fails)
            pass
        name = self.names.get(address, f"{address[0]}:{address[1]}")
        ok, failed = 0, []
        for app_id, slot in self.instances.get(address, []):
            good = False
            if time.monotonic() < deadline:
                try:
                    status, body = conn.request("GET", f"/apps/{app_id}/{slot}")
                    good = status == 200 and isinstance(body, dict) and body.get("slot") == slot
                except Exception:  # noqa: BLE001 - a failed probe
                    good = False
            if good:
                ok += 1
            else:
                failed.append(f"{name}/apps/{app_id}/{slot}")
        return ok, failed

    def probe_api(self) -> tuple[str, str | None]:
        """("ok" or why not, the API's mode as it answered)."""
        url = self.api_url()
        if url is None:
            return "the API's address is not known", None
        try:
            status, body = call("GET", f"{url}/healthz", timeout=TIMEOUT)
        except OSError as exc:
            return error_text(exc), None
        mode = body.get("mode") if isinstance(body, dict) else None
        if status == 200:
            return "ok", mode
        return f"HTTP {status}: {body.get('error') if isinstance(body, dict) else body}"[:200], mode

    def round(self) -> dict:
        started = time.time()
        api = self.pool.submit(self.probe_api)
        results = list(self.pool.map(self.probe_agent, self._agents()))
        failed = [f for _ok, fails in results for f in fails]
        ok = sum(k for k, _fails in results)
        api_result, api_mode = api.result()
        return {"t": round(started, 6), "endpoints": ok + len(failed), "ok": ok, "failed": failed[:10], "api": api_result,
                "api_mode": api_mode}


def run(prober: Prober, port: tuple[str, int], log_path: Path, stopping: threading.Event, interval: float = 1.0) -> None:
    server = JsonServer(port, [route("GET", "/healthz", prober.healthz)])
    serve_in_thread(server)
    log.info("prober on %s:%s writing %s (pid %s)", *port, log_path, os.getpid())
    with open(log_path, "a") as out:
        next_round = time.monotonic()
        while not stopping.is_set():
            try:
                line = prober.round()
                out.write(json.dumps(line) + "\n")
                out.flush()
                prober.rounds += 1
                prober.last = line
            except Exception:  # noqa: BLE001 - never exits
                log.exception("probe round failed")
            next_round += interval
            now = time.monotonic()
            if next_round < now:  # a slow round: the next starts now, not in a burst
                next_round = now
            stopping.wait(next_round - now)
    server.shutdown()
    server.server_close()
    prober.pool.shutdown(wait=False)
