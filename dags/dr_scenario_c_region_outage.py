"""
### Scenario C: full region outage

The plan's Scenario C, both of its paths. What the on-call engineer triggers when a whole region is gone; the same
tasks are what `dr_drill_region_outage` rehearses.

**Steps**
1. `declare_region_outage`: every region probed by this task (its edge over HTTP, its control-plane services, its
   database hosts); the failed region is out only when its edge fails and nothing of it answers, else the run ends
   `not_applicable` with nothing changed. Sev0 when it carried customer traffic or held the control plane. Then the
   path: `multi_region` when another region serves and holds a standby control plane, else `single_region`.
2. `choose_region_path`: runs that path's group; the other is skipped.

**Multi-region** (`multi_region.*`): `approve_region_failover` (incidents: a person, told the standby's lag and any
risk to the RPO) -> `shift_edge_traffic` (the target's edge probed before and after each step; rolled back if it
fails) -> `promote_standby_control_plane.*` (the postgres-failover runbook's tasks) -> the API (read-only first),
scheduler and reconciler started in the target region, each confirmed, their records pointed there -> `resume_writes`
(canary first) -> `reconcile_into_available_hosts` (the reconciler ramped) -> `confirm_time_to_converge` ->
`verify_endpoint_availability` (every app through the target's edge) -> `verify_keys_and_secrets` ->
`verify_edge_configuration`.

**Single-region** (`single_region.*`): `approve_rebuild` -> `restore_control_plane_database.*` (PITR onto new hosts)
-> the services -> `resume_writes` -> `bring_up_minimal_fleet` -> `choose_critical_volumes` ->
`restore_critical_volumes.*` (the volume-restore runbook's tasks) -> `restore_edge_configuration` ->
`report_what_is_back` (what is and is not back, by the time it came back: what customers are told).

Both end with `measure_customer_impact`: from customers' own traffic where the environment records it, when the
outage began (their first failed request), when they were answered again, availability before, during and after,
and the RPO (acknowledged writes before the outage missing after it).

**Params**: `mode` (`incident` or `drill`, required), `failed_region` (required), `path` (`auto`, `multi_region`,
`single_region`: checked against what is found), `approve`, `shift_steps` (`at_once` or percentages, e.g. `50,100`).
Held to the catalog's `full_region` targets (RTO 24 h, RPO 1 h) by a Deadline Alert.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.operators.report import RunReportOperator
from rehearsal_airflow.runbooks.region_outage import COMPONENT, GROUP_ID, IDEMPOTENT, SCENARIO, SCENARIO_DAG_ID, region_outage

REGIONS = ["us-east-1", "us-west-2"]

with DAG(
    dag_id=SCENARIO_DAG_ID,
    description="Scenario C: a region is out: fail over to the healthy region, or rebuild from backups",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "scenario", "region"],
    params={
        "mode": Param(type="string", enum=["incident", "drill"], title="Mode",
                      description="incident: a real one; drill: a rehearsal (labels the run; no default)"),
        "failed_region": Param(type="string", enum=REGIONS, title="Failed region",
                               description="the region that is out (confirmed by the run before anything changes)"),
        "path": Param("auto", type="string", enum=["auto", "multi_region", "single_region"], title="Path",
                      description="auto: fail over when another region can take over, else rebuild"),
        "approve": Param("wait", type="string", enum=["wait", "auto"], title="Approval",
                         description="wait: in an incident, a person approves before anything changes"),
        "shift_steps": Param("at_once", type="string", title="Traffic shift steps",
                             description="at_once, or the share moved at each step in percent, e.g. 50,100"),
    },
    default_args={"owner": "sre", "retries": 0, "queue": "recovery"},
    deadline=rto_deadline(COMPONENT, SCENARIO_DAG_ID),
) as dag:
    scenario = region_outage(mode="{{ params.mode }}", failed_region="{{ params.failed_region }}",
                             path="{{ params.path }}", approve="{{ params.approve }}",
                             shift_steps="{{ params.shift_steps }}")
    report = RunReportOperator(
        task_id="write_scenario_report", scenario=SCENARIO, component=COMPONENT, gate=scenario.declare.output,
        mode="{{ params.mode }}", runbook={"dag_id": SCENARIO_DAG_ID, "group": GROUP_ID},
        decision=scenario.promote.choose.output, approval=scenario.approve.output,
        recovery=scenario.promote.recover.output, measurement=scenario.measure.output, **IDEMPOTENT)
    scenario.group >> report
