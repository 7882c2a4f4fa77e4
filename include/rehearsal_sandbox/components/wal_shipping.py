"""Continuous WAL archiving: the primary's ``archive_command`` copies each finished segment into a local spool, and
a shipper process (``python -m rehearsal_sandbox run-wal-shipper``) uploads it to the bucket.

Slice: ``{"spool": "<runtime>/spool", "pid": <the shipper's pid>, "lost_data": [<spools lost with a host>]}``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from rehearsal.postgres.binaries import chown_to_server
from rehearsal_sandbox import wal_shipper
from rehearsal_sandbox.components.base import DaemonComponent, move_to_lost


class WalShipping(DaemonComponent):
    name = "wal_shipping"
    daemon = "wal-shipper"

    @property
    def spool(self) -> Path:
        return Path(self.state["spool"])

    def archive_command(self) -> str:
        return wal_shipper.archive_command(self.spool)

    def up(self) -> None:
        """The spool, and the shipper (before the primary exists: it ships the seed's WAL while it is written)."""
        self.state["spool"] = str(self.sandbox.runtime / "spool")
        self._make_spool()
        self.sandbox.save()
        self.spawn_sandbox_command()

    def _make_spool(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        chown_to_server(self.spool)

    def run(self) -> None:
        """The shipper's loop (the daemon's body)."""
        wal_shipper.run(self.spool, self.peer("controlplane_db").store())

    def waiting(self) -> list[str]:
        """Segments in the spool, not yet shipped."""
        spool = self.spool
        return sorted(p.name for p in spool.iterdir() if not p.name.startswith(".")) if spool.exists() else []

    def lose_spool(self, host: str) -> list[str]:
        """The spool goes with its host: moved aside in one rename (the shipper finds an empty spool at the same
        path, where the new primary archives). Returns the WAL files that had not been shipped."""
        waiting = self.waiting()
        if self.spool.exists():
            lost = move_to_lost(self.sandbox.runtime, self.spool, f"{host}-spool")
            if lost:
                self.state.setdefault("lost_data", []).append(lost)
        self._make_spool()
        return waiting

    def discard_lost_data(self) -> list[str]:
        gone = self.state.pop("lost_data", [])
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
        return gone

    def status(self) -> dict[str, dict]:
        waiting = len(self.waiting()) if "spool" in self.state else 0
        return self.daemon_status(f"{waiting} segment(s) in spool {self.state.get('spool')}")

    def down(self) -> None:
        self.stop()
        self.discard_lost_data()
        if "spool" in self.state:
            shutil.rmtree(self.spool, ignore_errors=True)
