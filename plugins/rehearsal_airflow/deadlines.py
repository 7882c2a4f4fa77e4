"""Deadline Alerts from the targets catalog: a missed RTO is a missed deadline."""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from rehearsal.catalog import load_catalog

BREACH_CALLBACK = "rehearsal_airflow.callbacks.deadline.record_rto_breach"


def rto_deadline(component: str, dag_id: str) -> DeadlineAlert:
    """A DAG-level deadline: queued-at + the component's RTO, read from the catalog at parse time."""
    target = load_catalog().target(component)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(seconds=target.rto.total_seconds()),
        callback=AsyncCallback(BREACH_CALLBACK, kwargs={"component": component, "dag_id": dag_id,
                                                        "target_rto_seconds": target.rto.total_seconds()}),
    )
