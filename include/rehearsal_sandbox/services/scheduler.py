"""The scheduler (``scheduler``): every second each live app gets exactly ``replicas`` placements, spread over the
live hosts, and over their regions first (an app of two replicas or more runs in each region).

Live hosts: those whose agents report (``host_reports``) no more than ``STALE_SECONDS`` behind the freshest report,
so a control plane that was down for a while does not find every host dead when it comes back. A placement stays
where it is while its host lives; new ones go to the least loaded live host not already running the app.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from typing import Any

from rehearsal_sandbox.services.common import Database, JsonServer, error_text, iso, route, serve_in_thread

log = logging.getLogger(__name__)

STALE_SECONDS = 15


class Scheduler:
    def __init__(self, database: Database) -> None:
        self.db = database
        self.placements = 0
        self.last_pass_at: float | None = None
        self.error: str | None = None

    def server(self, port: tuple[str, int]) -> JsonServer:
        return JsonServer(port, [route("GET", "/healthz", self.healthz)])

    def healthz(self, _request) -> tuple[int, Any]:
        body = {"status": "ok" if self.error is None else "degraded", "placements": self.placements,
                "last_pass_at": iso(self.last_pass_at)}
        if self.error is not None:
            return 503, {**body, "error": self.error}
        return 200, body

    def run_pass(self) -> int:
        """One pass; returns how many placements changed."""
        with self.db.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('rehearsal-scheduler'))")
            hosts = [r[0] for r in conn.execute(
                f"""SELECT host_id FROM host_reports
                     WHERE reported_at >= (SELECT max(reported_at) FROM host_reports) - interval '{STALE_SECONDS} seconds'
                     ORDER BY host_id""").fetchall()]
            conn.execute("""UPDATE hosts h SET status = CASE WHEN r.host_id = ANY(%s) THEN 'ready' ELSE 'down' END
                              FROM host_reports r WHERE r.host_id = h.id
                               AND h.status <> CASE WHEN r.host_id = ANY(%s) THEN 'ready' ELSE 'down' END""", (hosts, hosts))
            wanted = dict(conn.execute("SELECT app_id, replicas FROM deployments").fetchall())
            current = conn.execute("SELECT app_id, slot, host_id FROM placements").fetchall()
            if not hosts:  # nobody reports: nothing is known to be dead, nothing is moved
                self.placements = len(current)
                return 0
            region = dict(conn.execute("SELECT id, region FROM hosts WHERE id = ANY(%s)", (hosts,)).fetchall())
            live = set(hosts)
            keep: dict[int, dict[int, int]] = {}
            drop: list[tuple[int, int]] = []
            for app_id, slot, host_id in current:
                if app_id in wanted and slot < wanted[app_id] and host_id in live:
                    keep.setdefault(app_id, {})[slot] = host_id
                else:
                    drop.append((app_id, slot))
            regions = {region.get(h) for h in hosts}
            for app_id, slots in keep.items():  # an app of 2+ replicas all in one region: one moves to another
                if len(slots) >= 2 and len(regions) > 1 and len({region.get(h) for h in slots.values()}) == 1:
                    slot = max(slots)
                    del slots[slot]
                    drop.append((app_id, slot))
            load = Counter({h: 0 for h in hosts})
            load.update(h for slots in keep.values() for h in slots.values())
            add: list[tuple[int, int, int]] = []
            for app_id, replicas in sorted(wanted.items()):
                slots = keep.setdefault(app_id, {})
                for slot in range(replicas):
                    if slot in slots:
                        continue
                    taken = set(slots.values())
                    spread = Counter(region.get(h) for h in taken)  # each app in every region that has live hosts
                    host_id = min(hosts, key=lambda h: (h in taken, spread[region.get(h)], load[h],
                                                        (h * 7919 + app_id) % 104729))
                    slots[slot] = host_id
                    load[host_id] += 1
                    add.append((app_id, slot, host_id))
            with conn.cursor() as cur:
                if drop:
                    cur.executemany("DELETE FROM placements WHERE app_id = %s AND slot = %s", drop)
                if add:
                    cur.executemany("""INSERT INTO placements (app_id, slot, host_id) VALUES (%s, %s, %s)
                                       ON CONFLICT (app_id, slot) DO UPDATE SET host_id = EXCLUDED.host_id""", add)
            self.placements = sum(len(s) for s in keep.values())
            return len(drop) + len(add)


def run(port: tuple[str, int], database: Database, stopping: threading.Event, interval: float = 1.0) -> None:
    scheduler = Scheduler(database)
    server = scheduler.server(port)
    serve_in_thread(server)
    log.info("scheduler on %s:%s (pid %s)", *port, os.getpid())
    while not stopping.is_set():
        started = time.monotonic()
        try:
            changed = scheduler.run_pass()
            if changed:
                log.info("placed: %s change(s), %s placement(s)", changed, scheduler.placements)
            if scheduler.error is not None:
                log.info("passes succeed again")
            scheduler.error = None
        except Exception as exc:  # noqa: BLE001 - the next pass retries; healthz says why
            if scheduler.error is None:
                log.warning("pass failed: %s", error_text(exc))
            scheduler.error = error_text(exc)
        scheduler.last_pass_at = time.time()
        stopping.wait(max(0.05, interval - (time.monotonic() - started)))
    server.shutdown()
    server.server_close()
    database.close()
