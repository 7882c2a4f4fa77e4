"""
### Quarterly drill: control-plane outage with the data plane still running

The plan's second quarterly drill ("simulate control plane outage with data plane still running"): it kills
the control-plane services (API, scheduler, reconciler; with `kill_database`, the Postgres primary too) in a
drill environment, then runs Scenario A (the very tasks of `dr_scenario_a_control_plane_down`, built by the
same function) in `drill` mode, and measures it from evidence.

**Params**
- `mode`: `disruptive` only. A non-disruptive variant cannot mean anything here: the drill exists to prove the
  data plane serves while the control plane is really gone, and that it comes back read-only first; the guard
  refuses `non_disruptive` saying so.
- `kill_database`: also SIGKILL the Postgres primary (its disks kept): Scenario A then runs the failover.

**Steps**: guard, inject the outage, Scenario A, measure, put the environment back (always), report. Stop
conditions: before every step, production health is read from the prober's log; data-plane probe success under
95% over the last 5 s aborts the drill (no further step runs), rolls the environment back and says why.

**Measured**: RTO to read-only (the prober's first API answer after the kill), RTO to read-write (the synthetic
load's first acknowledged write), data-plane availability between the kill and read-write (the prober's rounds;
anything under 100% fails the drill), RPO (acknowledged writes before the kill missing afterwards), and the
time to converge the runbook waited for.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from rehearsal.capabilities import ServiceFaults
from rehearsal.drills.stop_conditions import StopConditions
from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.drills.frame import DrillGuard, Rehearsed, drill_frame
from rehearsal_airflow.faults.control_plane import InjectControlPlaneOutageOperator
from rehearsal_airflow.operators.control_plane_drills import MeasureControlPlaneOutageOperator
from rehearsal_airflow.runbooks.control_plane_down import GROUP_ID, SCENARIO_DAG_ID, control_plane_down

DAG_ID = "dr_drill_control_plane_outage"
COMPONENT = "control_plane_api"
SCENARIO = "Control-plane outage, data plane running (quarterly drill 2)"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}
NO_NON_DISRUPTIVE = ("it proves the data plane serves while the control plane is really gone and that the API "
                     "comes back read-only first; without killing the services there is nothing to measure")

with DAG(
    dag_id=DAG_ID,
    description="Quarterly drill: kill the control plane while the data plane runs, run Scenario A, measure",
    doc_md=__doc__,
    schedule="0 6 15 2,5,8,11 *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "drill", "control-plane", "quarterly"],
    params={
        "mode": Param("disruptive", enum=["disruptive", "non_disruptive"],
                      description="disruptive: really kill the services (drill environments only)"),
        "kill_database": Param(False, type="boolean", description="also kill the Postgres primary (disks kept)"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, DAG_ID),
) as dag:
    drill_frame(
        scenario=SCENARIO, component=COMPONENT,
        guard=DrillGuard(mode="{{ params.mode }}", fault=ServiceFaults, harm="it kills the control-plane services",
                         refuse_non_disruptive=NO_NON_DISRUPTIVE, stop_conditions=StopConditions().to_dict(),
                         harms=("control_plane_api", "controlplane_db")),
        fault=lambda drill: InjectControlPlaneOutageOperator(task_id="inject_control_plane_outage",
                                                             guard=drill.guard.output,
                                                             kill_database="{{ params.kill_database }}"),
        runbook=lambda drill: control_plane_down(mode="drill", approve="auto", path="auto", component=COMPONENT),
        rehearses=Rehearsed(SCENARIO_DAG_ID, GROUP_ID),
        measure=lambda drill: MeasureControlPlaneOutageOperator(task_id="measure_outage", fault=drill.fault.output,
                                                                converge=drill.runbook.converge.output,
                                                                guard=drill.guard.output, component=COMPONENT,
                                                                **IDEMPOTENT),
        report_inputs=lambda drill: {"decision": drill.runbook.failover.choose.output,
                                     "approval": drill.runbook.failover.approve.output,
                                     "recovery": drill.runbook.failover.recover.output},
    )
