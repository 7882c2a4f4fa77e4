"""The pgbench client: ``pgbench`` from the embedded PostgreSQL binaries, run in a reconnect loop through the
control-plane database's A record (``controlplane-db.rehearsal.internal.``, resolved through the sandbox's DNS server)
on the port every database host listens on (``rehearsal_sandbox.services.pgbench_client``). A client that knows the
database only by name: it follows a failover only when the runbook switched the A record with the SRV record.

Slice: ``{"host", "port" (unused: chosen like every service's), "pid", "log", "script"}``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rehearsal_sandbox.components.base import ok
from rehearsal_sandbox.components.control_plane import DB, LoggingClient

FRESH_SECONDS = 30.0  # a log whose last line is older means the loop is stuck (a run is bounded at 10 s)


class PgbenchClient(LoggingClient):
    """On a global host: it outlives any region, and measures what a client by name sees."""

    name = "pgbench"
    daemon = "pgbench"
    title = "pgbench client"
    log_name = "pgbench-log.jsonl"

    @property
    def script(self) -> Path:
        return Path(self.state.get("script") or self.sandbox.dir / "pgbench.sql")

    def up(self) -> None:
        """Its table on the primary (replicated and backed up with everything else), its script, then the loop."""
        from rehearsal.postgres.connection import connect
        from rehearsal_sandbox.services.pgbench_client import CREATE_TABLE, SCRIPT

        self.record_log()
        self.state["script"] = str(self.sandbox.dir / "pgbench.sql")
        cp = self.sandbox.controlplane_db
        with connect(cp.endpoint(cp.primary)) as conn:
            conn.execute(CREATE_TABLE)
        self.script.write_text(SCRIPT)
        super().up()

    def last_line(self) -> dict | None:
        try:
            with self.log.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - 4096))
                lines = [line for line in fh.read().splitlines() if line.strip()]
            return json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            return None

    def status(self) -> dict[str, dict]:
        if not self.state.get("port"):
            return {self.name: ok(False, "not created")}
        if not self.alive():
            return {self.name: ok(False, f"pgbench pid {self.pid} not running")}
        last = self.last_line()
        if last is None:  # just started: alive is all that can be asked
            return {self.name: ok(True, f"pgbench pid {self.pid}, no run yet in {self.log}")}
        age = time.time() - float(last["at"])
        outcome = f"{last['transactions']} commits on {last['address']}" if last["ok"] else f"failed: {last['error']}"
        return {self.name: ok(age < FRESH_SECONDS, f"pgbench pid {self.pid}, last run {age:.1f}s ago: {outcome}"[:300])}

    def run(self) -> None:
        from rehearsal.postgres.binaries import pg_tool
        from rehearsal_sandbox.components.discovery import A_RECORD
        from rehearsal_sandbox.services import pgbench_client
        from rehearsal_sandbox.services.common import stop_event
        from rehearsal_sandbox.services.customer_traffic import resolver

        stopping = stop_event()
        dns = self.sandbox.components()["dns"]
        loop = pgbench_client.PgbenchLoop(resolver(dns.host, dns.port), A_RECORD, self.sandbox.hosts.postgres_port, DB,
                                          DB, self.sandbox.passwords[DB], pg_tool("pgbench"), self.script)
        pgbench_client.run(loop, self.log, stopping, self.interval)

    def down(self) -> None:
        super().down()  # and its log
        self.script.unlink(missing_ok=True)
