"""The drill frame: what every drill DAG is made of, around the runbook it rehearses.

    guard -> fault -> the runbook's own tasks (drill mode) -> measure -> [teardown] -> restore the environment
    (all_done) -> report (all_done)

One builder, ``drill_frame``, makes that shape for every ``dr_drill_*`` DAG, so a drill cannot forget a piece or
wire it differently from the others: the guard is always the first step (it opens the run: a drill skips while
drills are switched off or when its scheduled start is late, see ``rehearsal.drills.start_rules``); the environment
is always put back once the guard let the drill start, whatever the runbook got to; the report always runs and
names the runbook. A drill DAG hands in only what is its own: how its guard is configured, its fault, the runbook
(built by the same function as the runbook's DAG), its measurement, and any teardown of its own. Pieces are built
in order and each is given the frame built so far (``drill.guard``, ``drill.fault``, ``drill.runbook``), so a
piece takes earlier records as explicit inputs (``drill.guard.output``), never by a task id.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, TriggerRule

from rehearsal_airflow.operators.guard import DrillGuardOperator, RestoreDrillEnvironmentOperator
from rehearsal_airflow.operators.report import RunReportOperator

GUARD_TASK_ID = "guard_drill_environment"
RESTORE_TASK_ID = "restore_drill_environment"
REPORT_TASK_ID = "write_drill_report"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}


@dataclass(frozen=True)
class DrillGuard:
    """How the drill's guard is configured (``DrillGuardOperator``'s parameters; ``operator`` for a guard of its own
    kind, such as the volume drills' ``VolumeDrillGuardOperator``, with its extra parameters in ``options``).

    :param fault: the capability (``rehearsal.capabilities``) the disruptive fault needs of the provisioner
    :param harm: what the disruptive fault does, for the refusal outside drill environments
    :param harms: the kinds of target the disruptive fault harms (``rehearsal.drills.targets``), checked by identity"""

    mode: str
    harm: str
    fault: type | tuple[type, ...] = ()
    harms: tuple[str, ...] = ("controlplane_db",)
    path: str = "auto"
    refuse_non_disruptive: str | None = None
    stop_conditions: dict | None = None
    operator: type[DrillGuardOperator] = DrillGuardOperator
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rehearsed:
    """The runbook (or scenario) a drill rehearses: its DAG and task group, named in the report."""

    dag_id: str
    group: str

    def to_dict(self) -> dict:
        return {"dag_id": self.dag_id, "group": self.group}


@dataclass
class DrillFrame:
    """The drill's tasks, as the builder made them; a piece being built sees those made before it."""

    scenario: str
    component: str
    guard: DrillGuardOperator
    fault: BaseOperator | None = None
    runbook: Any = None  # the runbook builder's tasks (``PostgresFailoverTasks``, ...): ``.group`` is its task group
    measure: BaseOperator | None = None
    teardown: list[BaseOperator] = field(default_factory=list)
    restore_environment: RestoreDrillEnvironmentOperator | None = None
    report: RunReportOperator | None = None


Piece = Callable[[DrillFrame], Any]


def drill_frame(*, scenario: str, component: str, guard: DrillGuard, runbook: Piece, rehearses: Rehearsed,
                fault: Piece | None = None, measure: Piece | None = None,
                teardown: Callable[[DrillFrame], list[BaseOperator]] | None = None,
                report_inputs: Callable[[DrillFrame], dict] | None = None) -> DrillFrame:
    """Build a drill in the current DAG: guard -> fault -> runbook -> measure -> teardown -> restore the environment
    -> report. Every piece but the guard is a function of the frame built so far.

    :param scenario: what the drill is, in the plan's words (the report's title)
    :param component: the catalog component whose RTO and RPO the drill is held to
    :param guard: how the guard is configured
    :param fault: makes the fault (``faults/``), given the guard; None for a drill whose runbook is the fault's
        stand-in (the volume drill restores without breaking anything)
    :param runbook: makes the runbook's tasks in drill mode with the function its DAG uses; returns the builder's
        tasks (with ``.group``)
    :param rehearses: the runbook's DAG and task group, for the report
    :param measure: makes the measurement (run when nothing before it failed; skipped steps are fine); None when the
        runbook's own last step measures (its record is then handed to the report by ``report_inputs``)
    :param teardown: makes the drill's own clean-up steps, run before the environment is put back (``all_done``)
    :param report_inputs: the runbook's records the report reads (``decision``, ``approval``, ``recovery``,
        ``measurement``), as explicit inputs
    """
    drill = DrillFrame(scenario=scenario, component=component, guard=guard.operator(
        task_id=GUARD_TASK_ID, mode=guard.mode, path=guard.path, scenario=scenario, component=component,
        fault=guard.fault, harm=guard.harm, harms=guard.harms, refuse_non_disruptive=guard.refuse_non_disruptive,
        stop_conditions=guard.stop_conditions, **guard.options, **IDEMPOTENT))
    chain: list[Any] = [drill.guard]
    if fault is not None:
        drill.fault = fault(drill)
        chain.append(drill.fault)
    drill.runbook = runbook(drill)
    chain.append(drill.runbook.group)
    if measure is not None:
        drill.measure = measure(drill)
        drill.measure.trigger_rule = TriggerRule.NONE_FAILED  # the runbook's last steps may skip (a scratch target)
        chain.append(drill.measure)
    drill.teardown = teardown(drill) if teardown is not None else []
    for step in drill.teardown:
        step.trigger_rule = TriggerRule.ALL_DONE
    chain += drill.teardown
    # Always, once the guard let the drill start (it skips otherwise): the drill never leaves its environment broken.
    drill.restore_environment = RestoreDrillEnvironmentOperator(task_id=RESTORE_TASK_ID, guard=drill.guard.output,
                                                                trigger_rule="all_done", **IDEMPOTENT)
    chain.append(drill.restore_environment)
    inputs = {"measurement": drill.measure.output} if drill.measure is not None else {}
    inputs.update(report_inputs(drill) if report_inputs is not None else {})
    drill.report = RunReportOperator(
        task_id=REPORT_TASK_ID, scenario=scenario, component=component, measures_recovery=True,
        gate=drill.guard.output, runbook=rehearses.to_dict(), fault=drill.fault.output if drill.fault is not None else None,
        environment_repair=drill.restore_environment.output, **inputs, **IDEMPOTENT)
    chain.append(drill.report)
    for upstream, downstream in zip(chain, chain[1:], strict=False):
        upstream >> downstream
    return drill

