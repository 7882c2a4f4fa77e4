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
from rehearsal_airflow.drills.frame import DrillGuard, Rehearsed, drill_frame
from rehearsal_airflow.faults.control_plane import InjectCorruptionOperator
from rehearsal_airflow.operators.control_plane_drills import MeasureCorruptionRecoveryOperator
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
    drill_frame(
        scenario=SCENARIO, component=COMPONENT,
        # The corruption goes in through the admin connection (SQL): it needs nothing of the provisioner but the
        # environment put back afterwards, which every disruptive drill needs.
        guard=DrillGuard(mode="{{ params.mode }}", path="pitr", harm="it corrupts the control-plane database",
                         refuse_non_disruptive=NO_NON_DISRUPTIVE, stop_conditions=StopConditions().to_dict()),
        fault=lambda drill: InjectCorruptionOperator(task_id="inject_corruption", guard=drill.guard.output),
        runbook=lambda drill: postgres_corruption(mode="drill", approve="auto", corruption_time="", component=COMPONENT),
        rehearses=Rehearsed(SCENARIO_DAG_ID, GROUP_ID),
        measure=lambda drill: MeasureCorruptionRecoveryOperator(task_id="measure_rto_rpo", fault=drill.fault.output,
                                                                freeze=drill.runbook.freeze.output,
                                                                guard=drill.guard.output, repair=drill.runbook.repair.output,
                                                                component=COMPONENT, **IDEMPOTENT),
        report_inputs=lambda drill: {"decision": drill.runbook.pick.output,
                                     "approval": drill.runbook.approve.output,
                                     "recovery": drill.runbook.failover.recover.output},
    )
