"""
### Scenario A: control plane down, data plane still running

The plan's Scenario A, step by step: restore the API and reconciliation without disrupting running workloads.
What the on-call engineer triggers when the control plane (API, scheduler, reconciler, or its database) is
down while customers' apps keep serving. The same tasks are what `dr_drill_control_plane_outage` rehearses.

**Steps**
1. `declare_incident`: Sev0 when customers are hit (data-plane availability probed here), else Sev1; drill or
   real, with its time.
2. `verify_hosts_running_workloads`: every app endpoint the hosts run, probed by this task.
3. Restore control-plane services, each confirmed before the next: `restore_api_read_only` (reads answer, a
   mutation is refused), `restore_scheduler`, `restore_reconciler_paused`.
4. `validate_postgres_health`: the primary accepts writes, or the postgres-failover runbook runs
   (`postgres_failover.*`, one approval in incident mode).
5. `resume_writes`: read-write, proven by a canary mutation read back (frozen again if it fails).
6. `resume_reconciler_gradually`: the rate ramps in steps while error rate and queue depth stay under their
   thresholds; it backs off when they do not.
7. `confirm_time_to_converge`: waits (deferred) until the time-to-converge SLI is back under its threshold.

**Params**: `mode` (`incident` or `drill`, required), `approve` (`wait`/`auto`: a failover's approval), `path`
(the failover's path when Postgres is unhealthy). Services are reached through the `controlplane_services`
connection (`docs/control-plane-services.md`); a service that does not answer is started through the
environment's provisioner. A run that outlives the control-plane API's RTO misses its Deadline Alert.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.operators.report import RunReportOperator
from rehearsal_airflow.runbooks.control_plane_down import GROUP_ID, IDEMPOTENT, SCENARIO, SCENARIO_DAG_ID, control_plane_down

COMPONENT = "control_plane_api"

with DAG(
    dag_id=SCENARIO_DAG_ID,
    description="Scenario A: restore the control plane (API read-only first) while the data plane keeps serving",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "scenario", "control-plane"],
    params={
        "mode": Param(type="string", enum=["incident", "drill"], title="Mode",
                      description="incident: a real one; drill: a rehearsal (labels the run; no default)"),
        "approve": Param("wait", type="string", enum=["wait", "auto"], title="Approval",
                         description="wait: in an incident, a person approves a Postgres failover before it starts"),
        "path": Param("auto", type="string", enum=["auto", "promote_standby", "pitr"], title="Failover path",
                      description="used only when the Postgres primary is unhealthy"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, SCENARIO_DAG_ID),
) as dag:
    scenario = control_plane_down(mode="{{ params.mode }}", approve="{{ params.approve }}", path="{{ params.path }}",
                                  component=COMPONENT)
    report = RunReportOperator(
        task_id="write_scenario_report", scenario=SCENARIO, component=COMPONENT, gate=scenario.declare.output,
        mode="{{ params.mode }}", runbook={"dag_id": SCENARIO_DAG_ID, "group": GROUP_ID},
        decision=scenario.failover.choose.output, approval=scenario.failover.approve.output,
        recovery=scenario.failover.recover.output, **IDEMPOTENT)
    scenario.group >> report
