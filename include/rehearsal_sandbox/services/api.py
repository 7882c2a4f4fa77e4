"""The control-plane API (``docs/control-plane-services.md``, ``api``): the live fleet, its mutations (idempotent
by ``request_id``), hosts' reports, and the API's mode (``read-write``, ``read-only``, ``frozen``).

A mutation is one transaction: the ``deployments`` row (generation + 1), one ``audit_log`` row whose ``detail`` is
the JSON ``{"request_id", "app_id", "action", "payload", "generation", "acknowledged_at"}`` (the first result, given
again for a replayed ``request_id``) and one ``events`` row. The mode is kept in a file beside the sandbox's state,
so a restarted API comes back in the mode it was left in.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from rehearsal_sandbox.services.common import (
    BadRequest,
    Database,
    JsonServer,
    Request,
    Window,
    error_text,
    iso,
    prometheus,
    rate,
    route,
)

log = logging.getLogger(__name__)

MODES = ("read-write", "read-only", "frozen")

APP_SQL = """SELECT d.app_id, a.name, d.release_id, d.image, d.replicas, d.config, d.generation, d.updated_at
               FROM deployments d JOIN apps a ON a.id = d.app_id"""
APP_FIELDS = ("id", "name", "release_id", "image", "replicas", "config", "generation", "updated_at")


class ModeFile:
    """The API's mode, kept across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.value = {"mode": "read-write", "changed_at": iso(time.time()), "reason": "default"}
        if path.exists():
            try:
                self.value = json.loads(path.read_text())
            except ValueError:
                log.warning("unreadable mode file %s: read-write", path)

    @property
    def mode(self) -> str:
        return self.value["mode"]

    def set(self, mode: str, reason: str) -> dict:
        with self._lock:
            self.value = {"mode": mode, "changed_at": iso(time.time()), "reason": reason}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.value))
            tmp.replace(self.path)
            log.info("mode %s (%s)", mode, reason)
            return dict(self.value)


class Api:
    def __init__(self, database: Database, mode: ModeFile, identity: str | None = None) -> None:
        self.db = database
        self.mode = mode
        self.identity = identity
        self.requests = Window(60)

    # ------------------------------------------------------------------ the server
    def server(self, port: tuple[str, int]) -> JsonServer:
        return JsonServer(port, [
            route("GET", "/healthz", self.healthz),
            route("GET", "/v1/identity", lambda r: (200, {"identity": self.identity})),
            route("GET", "/v1/mode", lambda r: (200, dict(self.mode.value))),
            route("PUT", "/v1/mode", self.put_mode),
            route("GET", "/v1/apps", self.list_apps),
            route("GET", "/v1/apps/{app_id}", self.get_app),
            route("GET", "/v1/hosts", self.list_hosts),
            route("POST", "/v1/apps/{app_id}/releases", lambda r: self.mutate(r, "deploy")),
            route("POST", "/v1/apps/{app_id}/scale", lambda r: self.mutate(r, "scale")),
            route("PATCH", "/v1/apps/{app_id}/config", lambda r: self.mutate(r, "update_config")),
            route("POST", "/v1/hosts/{hostname}/report", self.report),
            route("GET", "/v1/metrics", lambda r: (200, self.metrics())),
            route("GET", "/metrics", lambda r: (200, prometheus("controlplane_api", self.metrics()))),
        ], on_answer=self._count)

    def _count(self, method: str, path: str, status: int) -> None:
        if path.startswith("/v1/") and path != "/v1/metrics":
            self.requests.add(status >= 500 and not getattr(self._refused, "value", False))
        self._refused.value = False

    _refused = threading.local()  # the answer being sent is a mode refusal: not an error

    def metrics(self) -> dict:
        total, errors = self.requests.counts()
        return {"mode": self.mode.mode, "requests_last_60s": total, "errors_last_60s": errors, "error_rate": rate(errors, total)}

    # ------------------------------------------------------------------ reads
    def read(self, sql: str, params: tuple = ()) -> tuple[list[tuple], str]:
        """Rows from the primary; in read-only mode from a standby when the primary does not answer."""
        try:
            with self.db.connection() as conn:
                rows = conn.execute(sql, params).fetchall()
                return rows, "{}:{}".format(*self.db.primary_address())
        except (psycopg.Error, LookupError, OSError) as primary_error:
            if self.mode.mode != "read-only":
                raise
            try:
                with self.db.replica_connection() as (conn, address):
                    return conn.execute(sql, params).fetchall(), address
            except (psycopg.Error, LookupError, OSError) as exc:
                raise RuntimeError(f"primary: {error_text(primary_error)}; replicas: {error_text(exc)}") from exc

    def healthz(self, _request: Request) -> tuple[int, Any]:
        try:
            _rows, address = self.read("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - degraded, said why
            return 503, {"status": "degraded", "mode": self.mode.mode, "error": error_text(exc)}
        return 200, {"status": "ok", "mode": self.mode.mode, "database": address}

    def put_mode(self, request: Request) -> tuple[int, Any]:
        body = request.json()
        mode = body.get("mode") if isinstance(body, dict) else None
        if mode not in MODES:
            return 400, {"error": f"mode must be one of {', '.join(MODES)}, not {mode!r}"}
        reason = body.get("reason") or ""
        return 200, {"mode": self.mode.set(mode, str(reason))["mode"]}

    def list_apps(self, _request: Request) -> tuple[int, Any]:
        rows, _ = self.read(APP_SQL + " ORDER BY d.app_id")
        return 200, {"apps": [_app(row) for row in rows]}

    def get_app(self, request: Request) -> tuple[int, Any]:
        app_id = _app_id(request)
        rows, _ = self.read(APP_SQL + " WHERE d.app_id = %s", (app_id,))
        if not rows:
            return 404, {"error": f"app {app_id} not found"}
        return 200, _app(rows[0])

    def list_hosts(self, _request: Request) -> tuple[int, Any]:
        rows, _ = self.read("""SELECT h.id, h.hostname, h.status, h.last_seen_at FROM hosts h
                                WHERE h.hostname LIKE 'agent-%%' OR EXISTS (SELECT 1 FROM host_reports r WHERE r.host_id = h.id)
                                ORDER BY h.hostname""")
        return 200, {"hosts": [{"id": r[0], "hostname": r[1], "status": r[2], "last_seen_at": iso(r[3])} for r in rows]}

    # ------------------------------------------------------------------ writes
    def report(self, request: Request) -> tuple[int, Any]:
        """A host's observed state: accepted in every mode (an observation, not a mutation)."""
        body = request.json()
        running = body.get("running") if isinstance(body, dict) else None
        if not isinstance(running, dict):
            raise BadRequest("running must be an object")
        hostname = request.params["hostname"]
        with self.db.connection() as conn:
            row = conn.execute("""WITH h AS (UPDATE hosts SET last_seen_at = clock_timestamp(), status = 'ready'
                                             WHERE hostname = %s RETURNING id)
                                  INSERT INTO host_reports (host_id, reported_at, running)
                                  SELECT id, clock_timestamp(), %s FROM h
                                  ON CONFLICT (host_id) DO UPDATE SET reported_at = EXCLUDED.reported_at, running = EXCLUDED.running
                                  RETURNING reported_at""", (hostname, json.dumps(running))).fetchone()
        if row is None:
            return 404, {"error": f"host {hostname} not found"}
        return 200, {"hostname": hostname, "reported_at": iso(row[0])}

    def mutate(self, request: Request, action: str) -> tuple[int, Any]:
        mode = self.mode.mode
        # A runbook's own writes while frozen (a canary before writes reopen, drift repair before anyone else
        # writes) carry X-Maintenance with their reason; everyone else is refused until read-write.
        if mode != "read-write" and not request.header("X-Maintenance"):
            self._refused.value = True
            return 503, {"error": f"mutations refused: API is {mode}", "mode": mode}
        app_id = _app_id(request)
        body = request.json()
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not request_id.strip():
            raise BadRequest("request_id is required (a non-empty string)")
        payload = _payload(action, body)
        actor = request.header("X-Actor") or "api"
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (request_id,))
            first = conn.execute("SELECT detail FROM audit_log WHERE (detail::jsonb) ->> 'request_id' = %s LIMIT 1",
                                 (request_id,)).fetchone()
            if first is not None:
                return 200, _result(json.loads(first[0]))
            current = conn.execute("SELECT release_id, image, replicas, config FROM deployments WHERE app_id = %s FOR UPDATE",
                                   (app_id,)).fetchone()
            if current is None:
                return 404, {"error": f"app {app_id} not found"}
            release_id, image, replicas, config = current
            if action == "deploy":
                image = payload["image"]
                new_release = conn.execute(
                    """INSERT INTO releases (env_id, version, desired_state, created_at)
                       SELECT e.id, coalesce((SELECT max(version) FROM releases WHERE env_id = e.id), 0) + 1,
                              jsonb_build_object('image', %s::text), clock_timestamp()
                         FROM envs e WHERE e.app_id = %s ORDER BY e.id LIMIT 1 RETURNING id""", (image, app_id)).fetchone()
                release_id = new_release[0] if new_release else release_id
            elif action == "scale":
                replicas = payload["replicas"]
            else:
                config = {**config, **payload["config"]}
            generation, acknowledged = conn.execute(
                """UPDATE deployments SET release_id = %s, image = %s, replicas = %s, config = %s,
                          generation = generation + 1, updated_at = clock_timestamp()
                    WHERE app_id = %s RETURNING generation, updated_at""",
                (release_id, image, replicas, json.dumps(config), app_id)).fetchone()
            detail = {"request_id": request_id, "app_id": app_id, "action": action, "payload": payload,
                      "generation": generation, "acknowledged_at": iso(acknowledged)}
            conn.execute("INSERT INTO audit_log (actor, action, detail, created_at) VALUES (%s, %s, %s, clock_timestamp())",
                         (actor, action, json.dumps(detail)))
            conn.execute("INSERT INTO events (kind, subject, payload, created_at) VALUES (%s, %s, %s, clock_timestamp())",
                         (action, f"app-{app_id}", json.dumps({**detail, "actor": actor})))
        return (201 if action == "deploy" else 200), _result(detail)


def _app_id(request: Request) -> int:
    try:
        return int(request.params["app_id"])
    except ValueError:
        raise BadRequest(f"app id must be an integer, not {request.params['app_id']!r}") from None


def _payload(action: str, body: dict) -> dict:
    if action == "deploy":
        image = body.get("image")
        if not isinstance(image, str) or not image.strip():
            raise BadRequest("image is required (a non-empty string)")
        return {"image": image}
    if action == "scale":
        replicas = body.get("replicas")
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= 10:
            raise BadRequest("replicas must be an integer from 0 to 10")
        return {"replicas": replicas}
    config = body.get("config")
    if not isinstance(config, dict):
        raise BadRequest("config must be an object")
    return {"config": config}


def _result(detail: dict) -> dict:
    return {k: detail[k] for k in ("request_id", "app_id", "action", "generation", "acknowledged_at")}


def _app(row: tuple) -> dict:
    app = dict(zip(APP_FIELDS, row, strict=True))
    app["updated_at"] = iso(app["updated_at"])
    return app


def run(port: tuple[str, int], database: Database, mode_file: Path, mode: str | None, stopping,
        identity: str | None = None) -> None:
    """The API's body: serve until SIGTERM."""
    from rehearsal_sandbox.services.common import serve_in_thread

    modes = ModeFile(mode_file)
    if mode is not None and mode != modes.mode:
        modes.set(mode, "set at start")
    api = Api(database, modes, identity)
    server = api.server(port)
    serve_in_thread(server)
    log.info("control-plane API on %s:%s, mode %s (pid %s)", *port, modes.mode, os.getpid())
    stopping.wait()
    server.shutdown()
    server.server_close()
    database.close()
