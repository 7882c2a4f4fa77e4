"""RTO breach callback: runs in the triggerer when a run outlives its Deadline Alert.

Records the breach (component, run, deadline, how late) in the results database and notifies through
the log; it never fails or blocks the recovery run itself.
"""
from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

log = logging.getLogger(__name__)


def _record(component: str, dag_id: str, run_id: str, deadline_time: str | None, target: str,
            target_seconds: float, context: dict) -> float | None:
    from rehearsal import results
    from rehearsal_airflow.hooks.results_db import results_endpoint

    late = None
    if deadline_time:
        late = (datetime.now(UTC) - datetime.fromisoformat(str(deadline_time).replace("Z", "+00:00"))).total_seconds()
    detail = json.loads(json.dumps({"target": target, "target_seconds": target_seconds, "deadline": context.get("deadline"),
                                    "dag_run": context.get("dag_run")}, default=str))
    results.record_breach(results_endpoint(), dag_id, run_id, component, deadline_time, late, detail)
    return late


async def record_rto_breach(context: dict | None = None, component: str = "", dag_id: str = "", target: str = "rto",
                            target_seconds: float = 0, **kwargs) -> None:
    context = context or {}
    dag_run = context.get("dag_run") or {}
    run_id = str(dag_run.get("run_id") or dag_run.get("dag_run_id") or "unknown")
    deadline_time = (context.get("deadline") or {}).get("deadline_time")
    try:
        late = await asyncio.to_thread(_record, component, dag_run.get("dag_id", dag_id), run_id,
                                       str(deadline_time) if deadline_time else None, target, target_seconds, context)
        log.warning("%s BREACH: %s run %s of %s missed its %ss deadline (late by %s s)", target.upper(), component,
                    run_id, dag_id, target_seconds, late)
    except Exception:  # noqa: BLE001 - a breach record must never break recovery
        log.exception("could not record the RTO breach of %s run %s", dag_id, run_id)
