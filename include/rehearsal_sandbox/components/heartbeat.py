"""The heartbeat writer (``python -m rehearsal_sandbox run-heartbeat``): a numbered row into ``heartbeat`` every
150 ms on whatever the discovery record points at; every acknowledged commit logged to ``<state dir>/heartbeat.log``.

Slice: ``{"pid": <the writer's pid>, "log": "<state dir>/heartbeat.log"}``.
"""
from __future__ import annotations

from pathlib import Path

import psycopg

from rehearsal import heartbeat
from rehearsal.discovery import resolve
from rehearsal_sandbox.components.base import DaemonComponent

DB = "controlplane"


class Heartbeat(DaemonComponent):
    name = "heartbeat"
    daemon = "heartbeat"

    @property
    def log(self) -> Path:
        """The acknowledgement log: evidence about these clusters only (a new sandbox starts a new log)."""
        return Path(self.state.get("log") or self.sandbox.dir / "heartbeat.log")

    def up(self) -> None:
        self.state["log"] = str(self.sandbox.dir / "heartbeat.log")
        self.spawn_sandbox_command()

    def run(self) -> None:
        """The writer's loop (the daemon's body): it resolves the discovery record, as every client does."""
        route53 = self.peer("aws_endpoint").client("route53")
        record = self.peer("discovery").record()
        password = self.sandbox.passwords[DB]

        def connect(host: str, port: int):
            return psycopg.connect(host=host, port=port, dbname=DB, user=DB, password=password,
                                   connect_timeout=1, autocommit=True, options="-c statement_timeout=2000",
                                   application_name="heartbeat")

        heartbeat.run_writer(lambda: resolve(route53, record), connect, self.log)

    def status(self) -> dict[str, dict]:
        return self.daemon_status(f"log {self.log}")

    def down(self) -> None:
        self.stop()
        self.log.unlink(missing_ok=True)
