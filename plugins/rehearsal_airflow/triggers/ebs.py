"""Deferrable wait on EBS: restored volumes becoming available."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class EbsVolumesAvailableTrigger(BaseTrigger):
    """Fires when every ``(region, volume_id)`` is ``available`` (or one failed, or the wait ran out, naming it)."""

    def __init__(self, volumes: list, aws_conn_id: str, timeout: float, poll_interval: float = 2.0) -> None:
        super().__init__()
        self.volumes = [tuple(v) for v in volumes]
        self.aws_conn_id, self.timeout, self.poll_interval = aws_conn_id, float(timeout), float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"volumes": [list(v) for v in self.volumes], "aws_conn_id": self.aws_conn_id, "timeout": self.timeout,
                 "poll_interval": self.poll_interval})

    def _states(self) -> dict[str, str]:
        from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

        states = {}
        for region in {r for r, _ in self.volumes}:
            ec2 = EC2Hook(aws_conn_id=self.aws_conn_id, api_type="client_type", region_name=region).conn
            ids = [v for r, v in self.volumes if r == region]
            for volume in ec2.describe_volumes(VolumeIds=ids)["Volumes"]:
                states[volume["VolumeId"]] = volume["State"]
        return states

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        while True:
            try:
                states = await asyncio.to_thread(self._states)
            except Exception as exc:  # noqa: BLE001 - reported to the task, which fails naming it
                yield TriggerEvent({"status": "error", "message": f"describing EBS volumes failed: {exc}"})
                return
            bad = {v: s for v, s in states.items() if s == "error"}
            if bad:
                yield TriggerEvent({"status": "error", "message": f"EBS volume(s) in state error: {bad}"})
                return
            if len(states) == len(self.volumes) and all(s in ("available", "in-use") for s in states.values()):
                yield TriggerEvent({"status": "done", "states": states})
                return
            if time.monotonic() - started > self.timeout:
                yield TriggerEvent({"status": "timeout", "message": f"EBS volume(s) not available within "
                                                                    f"{self.timeout:.0f}s: {states}"})
                return
            await asyncio.sleep(self.poll_interval)
