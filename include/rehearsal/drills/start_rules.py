"""When a drill may start: never while drills are switched off, and never late from the scheduler.

A run is a drill by its ``mode``: a drill DAG's ``disruptive``/``non_disruptive``, or a runbook or scenario
triggered in ``drill`` mode. A runbook or scenario in ``incident`` mode is never held back by anything here; it
switches drills off instead (``incident_switch_reason``).

- **The kill switch.** Drills are off for an environment while a switch says so: a row in the results database
  (``make drills-off REASON=...``, or an incident declared there) or the Airflow Variable ``rehearsal_drills_off``
  (any non-empty value: drills off, the value is the reason). Every drill, scheduled or triggered by hand, skips
  while either is set, naming it.
- **No surprise drills.** A scheduled run that starts more than ``LATE_AFTER`` after its logical date skips: with
  ``catchup=False`` Airflow runs the latest past cron tick as soon as a DAG is unpaused (its logical date is that
  tick, weeks back for a quarterly drill), and a scheduler backlog starts runs late too. A drill people were told
  about at 06:00 must not start at 14:00, or weeks later. A run triggered by hand is never late.

Pure functions, no Airflow: the Airflow layer hands in the run's type, logical date and the switches it read.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

DRILL_MODES = ("disruptive", "non_disruptive", "drill")
INCIDENT_MODE = "incident"
LATE_AFTER = timedelta(hours=1)
SWITCH_VARIABLE = "rehearsal_drills_off"
ON_COMMAND = "make drills-on ENV={environment}"  # python -m rehearsal.results drills-on --environment ...


def is_drill_run(params: Mapping | None) -> bool:
    """A run is a drill by its mode (``disruptive``, ``non_disruptive``, ``drill``), not by its DAG's name."""
    return str((params or {}).get("mode") or "") in DRILL_MODES


def is_incident_run(params: Mapping | None) -> bool:
    return str((params or {}).get("mode") or "") == INCIDENT_MODE


@dataclass(frozen=True)
class DrillSwitch:
    """Drills switched off: where, why, by whom and since when (None: not known, e.g. an Airflow Variable)."""

    environment: str
    reason: str
    set_by: str
    set_at: datetime | None = None

    def describe(self) -> str:
        since = f" since {self.set_at.strftime('%Y-%m-%dT%H:%M:%S %Z').strip()}" if self.set_at else ""
        return f"{self.reason} (set by {self.set_by}{since})"

    @classmethod
    def from_variable(cls, environment: str, value: str | None) -> DrillSwitch | None:
        """The Airflow Variable ``rehearsal_drills_off``: any non-empty value switches drills off, as the reason."""
        text = str(value or "").strip()
        if not text:
            return None
        return cls(environment, text, f"the Airflow Variable {SWITCH_VARIABLE}")


def switched_off_reason(switches: Iterable[DrillSwitch | None]) -> str | None:
    """Why drills may not start while these switches are set (the first one set), or None."""
    for switch in switches:
        if switch is None:
            continue
        how_back = (f"delete or empty the Variable {SWITCH_VARIABLE}" if SWITCH_VARIABLE in switch.set_by
                    else f"`{ON_COMMAND.format(environment=switch.environment)}`")
        return (f"drills are switched off for environment {switch.environment!r}: {switch.describe()}; "
                f"{how_back} turns them back on")
    return None


def human_duration(seconds: float) -> str:
    """``20 days 3 h``, ``2 h 5 min``, ``61 min``, ``45 s``: a lateness people read at a glance."""
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''}" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


def lateness_reason(run_type: str, logical_date: datetime | None, started_at: datetime,
                    limit: timedelta = LATE_AFTER) -> str | None:
    """Why a scheduled run that starts more than ``limit`` after its logical date must not run, or None.

    Only ``scheduled`` runs can be late: a run triggered by hand (or by another DAG, or a backfill a person asked
    for) runs when it was asked to."""
    if run_type != "scheduled" or logical_date is None:
        return None
    late = started_at - logical_date
    if late <= limit:
        return None
    return (f"scheduled for {logical_date.strftime('%Y-%m-%dT%H:%M %Z').strip()} but started {human_duration(late.total_seconds())} "
            f"later (more than {human_duration(limit.total_seconds())}): a late drill would surprise people; trigger it "
            "by hand to run it now")


def start_limitation(*, run_type: str, logical_date: datetime | None, now: datetime,
                     switches: Iterable[DrillSwitch | None]) -> str | None:
    """Why this drill run may not start now (the kill switch first, then lateness), or None: it may."""
    return switched_off_reason(switches) or lateness_reason(run_type, logical_date, now)


def incident_switch_reason(dag_id: str, run_id: str, declared_at: datetime) -> str:
    """What the kill switch says when an incident turned drills off."""
    return (f"incident declared by {dag_id} run {run_id} at {declared_at.strftime('%Y-%m-%dT%H:%M:%S %Z').strip()}: "
            "no drill while it lasts")
