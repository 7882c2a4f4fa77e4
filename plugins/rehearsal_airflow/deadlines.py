"""Deadline Alerts from the targets catalog: a missed RTO is a missed deadline."""
from __future__ import annotations

import logging
import os
from datetime import timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from rehearsal.catalog import load_catalog, parse_duration
from rehearsal.errors import CatalogError

log = logging.getLogger(__name__)

BREACH_CALLBACK = "rehearsal_airflow.callbacks.deadline.record_rto_breach"


def rto_deadline(component: str, dag_id: str) -> DeadlineAlert:
    """A DAG-level deadline: queued-at + the component's RTO, read from the catalog at parse time."""
    seconds = load_catalog().target(component).rto.total_seconds()
    override = rto_override_seconds(component)
    return _deadline(component, dag_id, override if override is not None else seconds, "rto")


def rto_override_seconds(component: str) -> float | None:
    """A drill-only shorter RTO for the Deadline Alert, so the breach path can be exercised in minutes.

    ``REHEARSAL_RTO_OVERRIDE="control_plane_api=3s"`` in the parsing process's environment; honoured only
    where ``REHEARSAL_DRILL_ENVIRONMENT=true`` (the sandbox sets it), so production deadlines keep the
    catalog's targets. Reports still judge against the catalog.
    """
    raw = os.environ.get("REHEARSAL_RTO_OVERRIDE", "").strip()
    if not raw:
        return None
    if os.environ.get("REHEARSAL_DRILL_ENVIRONMENT", "").lower() != "true":
        log.warning("REHEARSAL_RTO_OVERRIDE ignored: this is not a drill environment")
        return None
    for entry in raw.split(","):
        name, _, value = entry.partition("=")
        if name.strip() == component:
            seconds = parse_duration(value.strip(), f"REHEARSAL_RTO_OVERRIDE[{component}]").total_seconds()
            if seconds <= 0:
                raise CatalogError(f"REHEARSAL_RTO_OVERRIDE[{component}] must be positive")
            return seconds
    return None


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
