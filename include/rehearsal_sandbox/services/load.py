"""Synthetic load (``load``): one mutation every ``SANDBOX_LOAD_INTERVAL`` seconds (0.5) on a random live app through
the API, mostly config changes and deploys, some scales between 1 and 3. Every attempt is one JSON line in
``load_log``: ``{"t_sent", "t_ack" (null when not acknowledged), "request_id", "action", "app_id", "status" (HTTP
status, 0 when there was no answer), "generation"}``.
"""
from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from rehearsal_sandbox.services.common import JsonServer, call, error_text, route, serve_in_thread

log = logging.getLogger(__name__)

TIMEOUT = 2.0
APPS_REFRESH = 30.0


class Load:
    def __init__(self, api_url: Callable[[], str | None], rng: random.Random | None = None) -> None:
        self.api_url = api_url
        self.rng = rng or random.Random()
        self.apps: list[int] = []
        self.apps_at = 0.0
        self.attempts = 0
        self.acknowledged = 0

    def healthz(self, _request) -> tuple[int, dict]:
        return 200, {"status": "ok", "attempts": self.attempts, "acknowledged": self.acknowledged}

    def live_apps(self, url: str) -> list[int]:
        if not self.apps or time.monotonic() - self.apps_at >= APPS_REFRESH:
            try:
                status, body = call("GET", f"{url}/v1/apps", timeout=TIMEOUT)
                if status == 200:
                    self.apps = [app["id"] for app in body["apps"] if app["replicas"] > 0] or [app["id"] for app in body["apps"]]
                    self.apps_at = time.monotonic()
            except OSError as exc:
                log.debug("cannot list apps: %s", exc)
        return self.apps

    def request(self) -> tuple[str, str, dict]:
        """(action, method and path suffix, body) of the next mutation."""
        roll = self.rng.random()
        if roll < 0.45:
            return "update_config", "PATCH config", {"config": {"log_level": self.rng.choice(["debug", "info", "warn"]),
                                                                "workers": self.rng.randint(1, 8)}}
        if roll < 0.85:
            return "deploy", "POST releases", {"image": f"registry.internal/app:{uuid.uuid4().hex[:12]}"}
        return "scale", "POST scale", {"replicas": self.rng.randint(1, 3)}

    def attempt(self) -> dict | None:
        url = self.api_url()
        if url is None:
            return None
        apps = self.live_apps(url)
        if not apps:
            return None
        app_id = self.rng.choice(apps)
        action, route, body = self.request()
        method, suffix = route.split()
        request_id = f"load-{uuid.uuid4()}"
        sent = time.time()
        status, generation, acked = 0, None, None
        try:
            status, answer = call(method, f"{url}/v1/apps/{app_id}/{suffix}", {**body, "request_id": request_id},
                                  timeout=TIMEOUT, headers={"X-Actor": "synthetic-load"})
            if status in (200, 201) and isinstance(answer, dict):
                acked, generation = time.time(), answer.get("generation")
        except OSError as exc:
            log.debug("no answer: %s", error_text(exc))
        return {"t_sent": round(sent, 6), "t_ack": None if acked is None else round(acked, 6), "request_id": request_id,
                "action": action, "app_id": app_id, "status": status, "generation": generation}


def run(load: Load, port: tuple[str, int], log_path: Path, stopping: threading.Event, interval: float) -> None:
    server = JsonServer(port, [route("GET", "/healthz", load.healthz)])
    serve_in_thread(server)
    log.info("synthetic load on %s:%s every %ss, writing %s (pid %s)", *port, interval, log_path, os.getpid())
    with open(log_path, "a") as out:
        next_at = time.monotonic()
        while not stopping.is_set():
            try:
                line = load.attempt()
                if line is not None:
                    out.write(json.dumps(line) + "\n")
                    out.flush()
                    load.attempts += 1
                    load.acknowledged += line["t_ack"] is not None
            except Exception:  # noqa: BLE001 - never exits
                log.exception("load attempt failed")
            next_at += interval
            now = time.monotonic()
            if next_at < now:
                next_at = now
            stopping.wait(next_at - now)
    server.shutdown()
    server.server_close()
