"""Deferrable waits on Postgres state that can last minutes, so they hold no worker slot:
a restored copy catching up on archived WAL, and clients reaching a new primary."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class RecoveryCatchUpTrigger(BaseTrigger):
    """Fires when a restored copy at ``address`` has left recovery (or stopped answering after it had answered, or
    ran out of time). It asks over SQL only, with the admin connection's credentials: the copy runs on a host of
    its own, and this trigger may run in a triggerer on any machine that reaches it."""

    def __init__(self, address: str, admin_conn_id: str, aws_conn_id: str, timeout: float, name: str = "",
                 poll_interval: float = 0.5, stop_conditions: dict | None = None, probe_log: str | None = None) -> None:
        super().__init__()
        self.address, self.admin_conn_id, self.aws_conn_id, self.name = address, admin_conn_id, aws_conn_id, name
        self.timeout, self.poll_interval = float(timeout), float(poll_interval)
        self.stop_conditions, self.probe_log = stop_conditions, probe_log  # a drill's: checked on every poll

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"address": self.address, "admin_conn_id": self.admin_conn_id, "aws_conn_id": self.aws_conn_id,
                 "timeout": self.timeout, "name": self.name, "poll_interval": self.poll_interval,
                 "stop_conditions": self.stop_conditions, "probe_log": self.probe_log})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from rehearsal.drills.stop_conditions import tripped_now
        from rehearsal.errors import RecoveryTimedOut
        from rehearsal.postgres.restore import wait_recovered

        class Stopped(Exception):
            pass

        def check() -> None:
            why = tripped_now(self.stop_conditions, self.probe_log)
            if why:
                raise Stopped(why)

        def wait() -> None:
            from rehearsal_airflow.hooks.controlplane_db import ControlPlaneDbHook

            admin = ControlPlaneDbHook(self.admin_conn_id, self.aws_conn_id).platform().admin_endpoint(self.address)
            wait_recovered(admin, self.timeout, self.poll_interval, self.name, check=check)

        try:
            await asyncio.to_thread(wait)
        except Stopped as exc:
            yield TriggerEvent({"status": "stopped", "message": str(exc)})
            return
        except RecoveryTimedOut as exc:
            yield TriggerEvent({"status": "timeout", "message": str(exc)})
            return
        except Exception as exc:  # noqa: BLE001 - reported to the task, which fails naming it
            yield TriggerEvent({"status": "error", "message": str(exc)})
            return
        yield TriggerEvent({"status": "done"})


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
