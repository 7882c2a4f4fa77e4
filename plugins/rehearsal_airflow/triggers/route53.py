"""Deferrable wait: a Route 53 change ``INSYNC`` (propagated to every name server), or a timeout naming the change."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class Route53InSyncTrigger(BaseTrigger):
    def __init__(self, change_id: str, aws_conn_id: str, timeout: float, poll_interval: float = 1.0) -> None:
        super().__init__()
        self.change_id, self.aws_conn_id = change_id, aws_conn_id
        self.timeout, self.poll_interval = float(timeout), float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"change_id": self.change_id, "aws_conn_id": self.aws_conn_id, "timeout": self.timeout,
                 "poll_interval": self.poll_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        client = await asyncio.to_thread(lambda: AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="route53").get_conn())
        started = time.monotonic()
        status = "unknown"
        while True:
            try:
                status = (await asyncio.to_thread(client.get_change, Id=self.change_id))["ChangeInfo"]["Status"]
            except Exception as exc:  # noqa: BLE001 - said in the timeout if it lasts
                status = f"unreadable ({type(exc).__name__}: {exc})"
            if status == "INSYNC":
                yield TriggerEvent({"status": "insync", "change_id": self.change_id,
                                    "waited": time.monotonic() - started})
                return
            if time.monotonic() - started > self.timeout:
                yield TriggerEvent({"status": "timeout", "change_id": self.change_id,
                                    "message": f"Route 53 change {self.change_id} not INSYNC after {self.timeout:.0f}s "
                                               f"(last status {status})"})
                return
            await asyncio.sleep(self.poll_interval)
