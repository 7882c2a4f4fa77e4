"""When a drill may start. A run is a drill by its ``mode``: a drill DAG's ``disruptive``/``non_disruptive``, or a
runbook or scenario triggered in ``drill`` mode; a runbook or scenario in ``incident`` mode is not a drill.

Pure functions, no Airflow.
"""
from __future__ import annotations

from collections.abc import Mapping

DRILL_MODES = ("disruptive", "non_disruptive", "drill")
INCIDENT_MODE = "incident"


def is_drill_run(params: Mapping | None) -> bool:
    """A run is a drill by its mode (``disruptive``, ``non_disruptive``, ``drill``), not by its DAG's name."""
    return str((params or {}).get("mode") or "") in DRILL_MODES


def is_incident_run(params: Mapping | None) -> bool:
    return str((params or {}).get("mode") or "") == INCIDENT_MODE
