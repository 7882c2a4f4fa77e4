"""Deferrable wait on Route 53: a change ``INSYNC`` (on every Route 53 name server), then the record's TTL waited out
(resolvers may answer from their cache until it runs out), or a timeout naming the change id."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class Route53ChangeInSyncTrigger(BaseTrigger):
    """Fires ``{"status": "insync", "change_id", "insync_wait", "ttl_wait"}`` once the change is ``INSYNC`` and
    ``hold_seconds`` (the TTL) have passed since; ``{"status": "timeout", "message"}`` naming the change id and its
    last status when it is not ``INSYNC`` within ``timeout``; ``{"status": "stopped", "message"}`` when a drill's stop
    conditions trip while it waits."""

    def __init__(self, change_id: str, aws_conn_id: str = "aws_default", timeout: float = 300, poll_interval: float = 1.0,
                 hold_seconds: float = 0.0, what: str = "", stop_conditions: dict | None = None,
                 probe_log: str | None = None) -> None:
        super().__init__()
        self.change_id, self.aws_conn_id, self.what = change_id, aws_conn_id, what
        self.timeout, self.poll_interval, self.hold_seconds = float(timeout), float(poll_interval), float(hold_seconds)
        self.stop_conditions, self.probe_log = stop_conditions, probe_log  # a drill's: checked on every poll

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"change_id": self.change_id, "aws_conn_id": self.aws_conn_id, "timeout": self.timeout,
                 "poll_interval": self.poll_interval, "hold_seconds": self.hold_seconds, "what": self.what,
                 "stop_conditions": self.stop_conditions, "probe_log": self.probe_log})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from rehearsal.drills.stop_conditions import tripped_now
        from rehearsal.traffic import change_status, insync_timeout_message
        from rehearsal_airflow.hooks.route53 import route53_client

        started = time.monotonic()
        try:
            client = await asyncio.to_thread(route53_client, self.aws_conn_id)
        except Exception as exc:  # noqa: BLE001 - reported to the task, which fails naming it
            yield TriggerEvent({"status": "error", "change_id": self.change_id,
                                "message": f"no Route 53 client to wait for change {self.change_id}: {exc}"})
            return
        while True:
            why = await asyncio.to_thread(tripped_now, self.stop_conditions, self.probe_log)
            if why:
                yield TriggerEvent({"status": "stopped", "change_id": self.change_id, "message": why})
                return
            try:
                last = await asyncio.to_thread(change_status, client, self.change_id)
            except Exception as exc:  # noqa: BLE001 - said in the timeout when it lasts
                last = f"unreadable ({type(exc).__name__}: {exc})"
            if last == "INSYNC":
                break
            if time.monotonic() - started >= self.timeout:
                yield TriggerEvent({"status": "timeout", "change_id": self.change_id,
                                    "message": insync_timeout_message(self.change_id, self.timeout, last, self.what)})
                return
            await asyncio.sleep(self.poll_interval)
        insync_wait = time.monotonic() - started
        held_until = time.monotonic() + self.hold_seconds
        while (left := held_until - time.monotonic()) > 0:  # the TTL, the stop conditions still checked
            await asyncio.sleep(min(left, self.poll_interval))
            why = await asyncio.to_thread(tripped_now, self.stop_conditions, self.probe_log)
            if why:
                yield TriggerEvent({"status": "stopped", "change_id": self.change_id, "message": why})
                return
        yield TriggerEvent({"status": "insync", "change_id": self.change_id, "insync_wait": round(insync_wait, 3),
                            "ttl_wait": round(time.monotonic() - started - insync_wait, 3)})
