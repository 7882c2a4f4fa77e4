"""
### Drill: Postgres corruption (twice a year)

Beyond the plan's three quarterly drills: in a drill environment it corrupts the control-plane database the
way a bad migration would (a bulk UPDATE without a WHERE and a dropped table, at a recorded time), then runs
Scenario B (the very tasks of `dr_scenario_b_postgres_corruption`) in `drill` mode, letting it find the
corruption time in the audit log as an on-call engineer would.

**Params**: `mode`: `disruptive` only; a non-disruptive variant would restore a scratch copy, which the
primary-loss drill already rehearses, and prove nothing about finding the damage, freezing, switching and
repairing drift; the guard refuses it saying so.

**Measured**: RTO from the corruption to the synthetic load's first acknowledged write after the freeze (on the
restored cluster); RPO as the acknowledged writes before the corruption point that the restored cluster lacks.
Stop conditions: before every step, data-plane probe success under 95% over the last 5 s aborts the drill,
rolls back and says why.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from rehearsal.drills.stop_conditions import StopConditions
from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.faults.control_plane import InjectCorruptionOperator
from rehearsal_airflow.operators.control_plane_drills import (
    MeasureCorruptionRecoveryOperator,
)
from rehearsal_airflow.operators.guard import DrillGuardOperator, RestoreDrillEnvironmentOperator
from rehearsal_airflow.operators.report import RunReportOperator
from rehearsal_airflow.runbooks.postgres_corruption import GROUP_ID, SCENARIO_DAG_ID, postgres_corruption

DAG_ID = "dr_drill_postgres_corruption"
COMPONENT = "control_plane_api"
SCENARIO = "Postgres corruption (twice a year)"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}
NO_NON_DISRUPTIVE = ("a scratch restore is what dr_drill_postgres_primary_loss rehearses; this drill exists to "
                     "find real damage, freeze, restore to before it, switch and repair drift")

with DAG(
    dag_id=DAG_ID,
    description="Drill: corrupt the control-plane database, run Scenario B, measure RTO and RPO",
    doc_md=__doc__,
    schedule="0 6 15 3,9 *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "drill", "postgres", "control-plane"],
    params={
        "mode": Param("disruptive", enum=["disruptive", "non_disruptive"],
                      description="disruptive: really corrupt the database (drill environments only)"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, DAG_ID),
) as dag:
    guard = DrillGuardOperator(task_id="guard_drill_environment", mode="{{ params.mode }}", path="pitr",
                               scenario=SCENARIO, component=COMPONENT,
                               harm="it corrupts the control-plane database", refuse_non_disruptive=NO_NON_DISRUPTIVE,
                               stop_conditions=StopConditions().to_dict(), **IDEMPOTENT)
    inject = InjectCorruptionOperator(task_id="inject_corruption", guard=guard.output)
    scenario = postgres_corruption(mode="drill", approve="auto", corruption_time="", component=COMPONENT)
    measure = MeasureCorruptionRecoveryOperator(task_id="measure_rto_rpo", fault=inject.output,
                                                freeze=scenario.freeze.output, component=COMPONENT,
                                                trigger_rule="none_failed", **IDEMPOTENT)
    restore_environment = RestoreDrillEnvironmentOperator(task_id="restore_drill_environment", guard=guard.output,
                                                          trigger_rule="all_done", **IDEMPOTENT)
    report = RunReportOperator(
        task_id="write_drill_report", scenario=SCENARIO, component=COMPONENT, measures_recovery=True,
        gate=guard.output, runbook={"dag_id": SCENARIO_DAG_ID, "group": GROUP_ID}, fault=inject.output,
        decision=scenario.pick.output, approval=scenario.failover.approve.output,
        recovery=scenario.failover.recover.output, measurement=measure.output,
        environment_repair=restore_environment.output, **IDEMPOTENT)

    guard >> inject >> scenario.group >> measure >> restore_environment >> report
