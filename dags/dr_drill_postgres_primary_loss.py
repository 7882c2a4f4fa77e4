"""
### Quarterly drill: Postgres primary loss

The plan's first quarterly drill ("simulate Postgres primary loss"): it rehearses the postgres-failover runbook
(the very tasks of `dr_runbook_postgres_failover`, built by the same function, in `drill` mode) and measures it
against the control plane's targets (`config/targets.yaml`).

**Params**
- `mode`: `disruptive` (drill environments only: the primary is SIGKILLed and its disks, data directory and
  unshipped WAL spool, are lost) or `non_disruptive` (safe against production: the runbook restores a scratch
  copy from what the archive held at the simulated fault, validates it, and nothing else is touched).
- `path`: `auto`, `promote_standby` or `pitr`, handed to the runbook.

**Steps** (the drill frame, `rehearsal_airflow.drills.frame`): guard, inject the fault, the runbook (assess,
choose, approve, fence, recover, validate, re-enable archiving, switch discovery, confirm clients, rebuild
redundancy), measure RTO and RPO from the heartbeat evidence, put the environment back (always), report. The drill
skips, touching nothing, while drills are switched off (`make drills-off`, or the Variable `rehearsal_drills_off`)
or when a scheduled run starts more than an hour late (say, when the DAG is unpaused weeks after its date).

RTO is measured from the fault to the first acknowledged heartbeat on the recovered primary (a probe write into
a scratch copy). RPO is the longest span of acknowledged heartbeats of the lost primary's lineage (system
identifier and timeline) missing after recovery, over a window of twice the target RPO; when nothing in the
window survived it is reported as at least the window, and fails. The report lands in
`reports/dr_drill_postgres_primary_loss/<run_id>.json` and the results database, with the runbook's steps.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from rehearsal.capabilities import PrimaryLossFaults
from rehearsal.drills.stop_conditions import StopConditions
from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.drills.frame import DrillGuard, Rehearsed, drill_frame
from rehearsal_airflow.faults.primary_loss import InjectPrimaryLossOperator
from rehearsal_airflow.operators.heartbeat import MeasureRecoveryOperator
from rehearsal_airflow.runbooks.postgres_failover import GROUP_ID, RUNBOOK_DAG_ID, postgres_failover

DAG_ID = "dr_drill_postgres_primary_loss"
COMPONENT = "control_plane_api"
SCENARIO = "Postgres primary loss (quarterly drill 1)"
TARGET = "{{ 'scratch' if params.mode == 'non_disruptive' else 'production' }}"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}

with DAG(
    dag_id=DAG_ID,
    description="Quarterly drill: lose the control-plane Postgres primary, run the failover runbook, measure RTO/RPO",
    doc_md=__doc__,
    schedule="0 6 1 1,4,7,10 *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=2,  # non-disruptive runs may overlap; disruptive ones take a lock per environment
    tags=["dr", "drill", "postgres", "quarterly"],
    params={
        "mode": Param("non_disruptive", enum=["disruptive", "non_disruptive"],
                      description="disruptive: really kill the primary (drill environments only)"),
        "path": Param("auto", enum=["auto", "promote_standby", "pitr"], description="recovery path"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, DAG_ID),
) as dag:
    drill_frame(
        scenario=SCENARIO, component=COMPONENT,
        guard=DrillGuard(mode="{{ params.mode }}", path="{{ params.path }}", fault=PrimaryLossFaults,
                         harm="it kills the primary and loses its data", stop_conditions=StopConditions().to_dict()),
        fault=lambda drill: InjectPrimaryLossOperator(task_id="inject_primary_loss", guard=drill.guard.output),
        runbook=lambda drill: postgres_failover(mode="drill", path="{{ params.path }}", target=TARGET, approve="auto",
                                                archived_before=drill.fault.output["archived_before"],
                                                component=COMPONENT),
        rehearses=Rehearsed(RUNBOOK_DAG_ID, GROUP_ID),
        measure=lambda drill: MeasureRecoveryOperator(task_id="measure_rto_rpo", guard=drill.guard.output,
                                                      fault=drill.fault.output, recovery=drill.runbook.recover.output,
                                                      target=TARGET, component=COMPONENT, **IDEMPOTENT),
        report_inputs=lambda drill: {"decision": drill.runbook.choose.output, "approval": drill.runbook.approve.output,
                                     "recovery": drill.runbook.recover.output},
    )
