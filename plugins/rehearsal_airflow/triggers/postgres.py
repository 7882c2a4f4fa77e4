"""Deferrable waits on Postgres state that can last minutes, so they hold no worker slot:
a restored copy catching up on archived WAL, and clients reaching a new primary."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class RecoveryCatchUpTrigger(BaseTrigger):
    """Fires when a copy started by ``begin_pitr`` has left recovery (or stopped, or ran out of time)."""

    def __init__(self, name: str, data_dir: str, port: int, timeout: float, poll_interval: float = 0.5) -> None:
        super().__init__()
        self.name, self.data_dir, self.port = name, data_dir, int(port)
        self.timeout, self.poll_interval = float(timeout), float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"name": self.name, "data_dir": self.data_dir, "port": self.port, "timeout": self.timeout,
                 "poll_interval": self.poll_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from rehearsal.postgres.cluster import LocalCluster
        from rehearsal.postgres.restore import recovery_finished

        cluster = LocalCluster(self.name, Path(self.data_dir), self.port)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if await asyncio.to_thread(recovery_finished, cluster):
                    yield TriggerEvent({"status": "done"})
                    return
            except Exception as exc:  # noqa: BLE001 - reported to the task, which fails naming it
                yield TriggerEvent({"status": "error", "message": str(exc)})
                return
            if time.monotonic() > deadline:
                yield TriggerEvent({"status": "timeout", "message": f"restored cluster {self.name} still in recovery "
                                                                    f"after {self.timeout:.0f}s"})
                return
            await asyncio.sleep(self.poll_interval)


class ClientsFollowedTrigger(BaseTrigger):
    """Fires when clients of the application role commit on the new primary (or the wait ran out)."""

    def __init__(self, address: str, admin_conn_id: str, app_conn_id: str, aws_conn_id: str, timeout: float,
                 poll_interval: float = 0.5) -> None:
        super().__init__()
        self.address, self.admin_conn_id, self.app_conn_id, self.aws_conn_id = address, admin_conn_id, app_conn_id, aws_conn_id
        self.timeout, self.poll_interval = float(timeout), float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"address": self.address, "admin_conn_id": self.admin_conn_id, "app_conn_id": self.app_conn_id,
                 "aws_conn_id": self.aws_conn_id, "timeout": self.timeout, "poll_interval": self.poll_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from rehearsal.postgres.clients import clients_followed

        def check() -> dict:
            from rehearsal_airflow.hooks.controlplane_db import ControlPlaneDbHook

            platform = ControlPlaneDbHook(self.admin_conn_id, self.aws_conn_id, app_conn_id=self.app_conn_id).platform()
            return clients_followed(platform.admin_endpoint(self.address), platform.app.user, timeout=self.timeout,
                                    interval=self.poll_interval)

        try:
            result = await asyncio.to_thread(check)
        except Exception as exc:  # noqa: BLE001 - reported to the task, which fails naming it
            yield TriggerEvent({"status": "error", "message": str(exc)})
            return
        yield TriggerEvent({"status": "done", "result": result})
