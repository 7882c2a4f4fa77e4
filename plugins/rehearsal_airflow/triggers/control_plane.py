"""Deferrable waits on the control plane: the time-to-converge SLI back under its threshold."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class ConvergenceTrigger(BaseTrigger):
    """Fires when the reconciler's time-to-converge SLI is under ``threshold`` (or the wait ran out, naming the
    last value)."""

    def __init__(self, reconciler_url: str, threshold: float, timeout: float, poll_interval: float = 1.0,
                 since: float | None = None, stop_conditions: dict | None = None, probe_log: str | None = None) -> None:
        super().__init__()
        self.reconciler_url, self.threshold = reconciler_url, float(threshold)
        self.timeout, self.poll_interval, self.since = float(timeout), float(poll_interval), since
        self.stop_conditions, self.probe_log = stop_conditions, probe_log  # a drill's: checked on every poll

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"reconciler_url": self.reconciler_url, "threshold": self.threshold, "timeout": self.timeout,
                 "poll_interval": self.poll_interval, "since": self.since, "stop_conditions": self.stop_conditions,
                 "probe_log": self.probe_log})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from rehearsal.runbooks.control_plane import convergence
        from rehearsal.services import Reconciler, ServiceUnreachable

        reconciler = Reconciler(self.reconciler_url)
        started = time.monotonic()
        last = "no answer yet"
        from rehearsal.drills.stop_conditions import tripped_now

        while True:
            why = await asyncio.to_thread(tripped_now, self.stop_conditions, self.probe_log)
            if why:
                yield TriggerEvent({"status": "stopped", "message": why})
                return
            try:
                metrics = await asyncio.to_thread(reconciler.metrics, self.since)
                done, last = convergence(metrics, self.threshold, require_converged=self.since is not None)
                if done:
                    yield TriggerEvent({"status": "done", "detail": last, "metrics": metrics,
                                        "waited": time.monotonic() - started})
                    return
            except ServiceUnreachable as exc:
                last = str(exc)
            if time.monotonic() - started > self.timeout:
                yield TriggerEvent({"status": "timeout", "message": f"time-to-converge not under {self.threshold:.0f}s "
                                                                    f"within {self.timeout:.0f}s; last: {last}"})
                return
            await asyncio.sleep(self.poll_interval)
