"""Deadline Alerts from the targets catalog: a missed RTO is a missed deadline."""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from rehearsal.catalog import load_catalog

BREACH_CALLBACK = "rehearsal_airflow.callbacks.deadline.record_rto_breach"


def rto_deadline(component: str, dag_id: str) -> DeadlineAlert:
    """A DAG-level deadline: queued-at + the component's RTO, read from the catalog at parse time."""
    seconds = load_catalog().target(component).rto.total_seconds()
    return _deadline(component, dag_id, seconds, "rto")


def rpo_deadline(component: str, dag_id: str) -> DeadlineAlert:
    """For backup and freshness runs: a run slower than the component's RPO endangers that RPO."""
    seconds = load_catalog().target(component).rpo.total_seconds()
    return _deadline(component, dag_id, seconds, "rpo")


def _deadline(component: str, dag_id: str, seconds: float, target: str) -> DeadlineAlert:
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=seconds),
        callback=AsyncCallback(BREACH_CALLBACK, kwargs={"component": component, "dag_id": dag_id, "target": target,
                                                        "target_seconds": seconds}),
    )
