"""Host agents (``agents``, the data plane): many hosts in one process, each an HTTP server of its own on its host's own
address. An agent runs what it was last told (``PUT /v1/desired``), serves its instances
(``GET /apps/{app_id}/{slot}``) whatever happens to the control plane, keeps its running state in a file so a restart
of the process keeps serving, and reports its state to the API every second when it can.

Test-only fault switch: ``PUT /v1/faults {"fail_desired": true}`` makes the agent answer 500 to ``/v1/desired``.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rehearsal_sandbox.services.common import BadRequest, JsonServer, call, iso, route, serve_in_thread

log = logging.getLogger(__name__)

APPLY_SECONDS_PER_INSTANCE = 0.005
FAULTS = ("fail_desired",)


class Agent:
    def __init__(self, hostname: str, state_file: Path) -> None:
        self.hostname = hostname
        self.state_file = state_file
        self.lock = threading.Lock()
        self.applying = threading.Lock()
        self.running: dict[str, dict] = {}
        self.applied_at: str | None = None
        self.faults = {name: False for name in FAULTS}
        if state_file.exists():
            try:
                saved = json.loads(state_file.read_text())
                self.running, self.applied_at = saved["running"], saved.get("applied_at")
            except (ValueError, KeyError):
                log.warning("%s: unreadable state file %s; starting empty", hostname, state_file)

    def server(self, address: tuple[str, int]) -> JsonServer:
        return JsonServer(address, [
            route("GET", "/healthz", lambda r: (200, {"status": "ok", "hostname": self.hostname})),
            route("GET", "/v1/state", lambda r: (200, self.state())),
            route("PUT", "/v1/desired", self.put_desired),
            route("GET", "/apps/{app_id}/{slot}", self.get_instance),
            route("GET", "/v1/faults", lambda r: (200, {"hostname": self.hostname, "faults": dict(self.faults)})),
            route("PUT", "/v1/faults", self.put_faults),
        ])

    def state(self) -> dict:
        with self.lock:
            return {"hostname": self.hostname, "running": json.loads(json.dumps(self.running)), "applied_at": self.applied_at}

    def put_desired(self, request) -> tuple[int, Any]:
        if self.faults["fail_desired"]:
            return 500, {"error": f"{self.hostname}: fault injected (fail_desired)"}
        body = request.json()
        apps = body.get("apps") if isinstance(body, dict) else None
        if not isinstance(apps, dict) or not all(isinstance(v, dict) and isinstance(v.get("slots"), list) for v in apps.values()):
            raise BadRequest("apps must be an object of {app_id: {generation, release_id, image, config_digest, slots}}")
        with self.applying:  # one apply at a time; instances keep serving meanwhile
            with self.lock:
                running = dict(self.running)
            changed = 0
            for app_id in set(apps) | set(running):
                old, new = running.get(app_id), apps.get(app_id)
                if old == new:
                    continue
                old_slots, new_slots = set((old or {}).get("slots", [])), set((new or {}).get("slots", []))
                same_release = old and new and {k: v for k, v in old.items() if k != "slots"} == {k: v for k, v in new.items() if k != "slots"}
                changed += len(old_slots ^ new_slots) if same_release else len(old_slots | new_slots)
            time.sleep(min(1.0, APPLY_SECONDS_PER_INSTANCE * changed))  # starting and stopping instances
            with self.lock:
                self.running = json.loads(json.dumps(apps))
                self.applied_at = iso(time.time())
                self._save()
                return 200, {"hostname": self.hostname, "running": json.loads(json.dumps(self.running)),
                             "applied_at": self.applied_at}

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"running": self.running, "applied_at": self.applied_at}))
        tmp.replace(self.state_file)

    def get_instance(self, request) -> tuple[int, Any]:
        app_id, slot = request.params["app_id"], request.params["slot"]
        with self.lock:
            record = self.running.get(app_id)
            runs = record is not None and slot.isdigit() and int(slot) in record["slots"]
            generation = record["generation"] if runs else None
        if not runs:
            return 404, {"error": f"{self.hostname} does not run app {app_id} slot {slot}"}
        return 200, {"app_id": int(app_id) if app_id.isdigit() else app_id, "slot": int(slot), "generation": generation,
                     "hostname": self.hostname}

    def put_faults(self, request) -> tuple[int, Any]:
        body = request.json()
        if not isinstance(body, dict) or not set(body) <= set(FAULTS) or not all(isinstance(v, bool) for v in body.values()):
            raise BadRequest(f"faults must be an object of booleans among {', '.join(FAULTS)}")
        previous = dict(self.faults)
        self.faults.update(body)
        if self.faults != previous:
            log.info("%s: faults %s", self.hostname, self.faults)
        return 200, {"hostname": self.hostname, "faults": dict(self.faults), "previous": previous}


def report_loop(agents: list[Agent], api_url, stopping: threading.Event, interval: float = 1.0) -> None:
    """Every agent's state to the API (``POST /v1/hosts/{hostname}/report``), every second when it can."""
    failing: set[str] = set()

    def report(agent: Agent) -> None:
        url = api_url()
        try:
            if url is None:
                raise OSError("the API's address is not known yet")
            status, body = call("POST", f"{url}/v1/hosts/{agent.hostname}/report", {"running": agent.state()["running"]},
                                timeout=0.8)
            if status != 200:
                raise OSError(f"HTTP {status}: {body}")
            if agent.hostname in failing:
                failing.discard(agent.hostname)
                log.info("%s reports again", agent.hostname)
        except OSError as exc:
            if agent.hostname not in failing:
                failing.add(agent.hostname)
                log.warning("%s cannot report: %s", agent.hostname, exc)

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="report") as pool:
        while not stopping.is_set():
            started = time.monotonic()
            list(pool.map(report, agents))
            stopping.wait(max(0.05, interval - (time.monotonic() - started)))


def run(addresses: dict[str, tuple[str, int]], state_dir: Path, api_url, stopping: threading.Event) -> None:
    """Every host's server (each on its host's own address), and the reporter, until SIGTERM. ``api_url()`` is the
    API's base URL (or None)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    agents, servers = [], []
    for hostname, address in sorted(addresses.items()):
        agent = Agent(hostname, state_dir / f"{hostname}.json")
        server = agent.server(address)
        serve_in_thread(server)
        agents.append(agent)
        servers.append(server)
    log.info("%s host agents at %s (pid %s)", len(agents), ", ".join(f"{h}:{p}" for h, p in addresses.values()), os.getpid())
    reporter = threading.Thread(target=report_loop, args=(agents, api_url, stopping), daemon=True, name="reporter")
    reporter.start()
    stopping.wait()
    with ThreadPoolExecutor(max_workers=len(servers) or 1) as pool:  # each waits for its loop's next poll
        list(pool.map(lambda s: s.shutdown(), servers))
    for server in servers:
        server.server_close()
    reporter.join(timeout=3)
