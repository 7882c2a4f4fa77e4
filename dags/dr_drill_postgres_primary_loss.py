"""
### Quarterly drill: Postgres primary loss

The plan's first quarterly drill ("simulate Postgres primary loss"), against Scenario B's promise:
the control-plane database is back within its RTO and loses no more than its RPO (both from the
targets catalog, `config/targets.yaml`).

**Params**
- `mode`: `disruptive` (drill environments only: the primary is SIGKILLed and its data directory
  deleted) or `non_disruptive` (safe against production: restore into a scratch target, measure,
  tear down).
- `path`: `auto` (promote the standby when it is healthy and within RPO, else PITR), `promote_standby`
  or `pitr`.

**Steps**: guard, inject the fault, detect the loss, choose the path, recover (promote the standby or
PITR from base backup + archived WAL), validate, enrol the new primary, switch service discovery,
confirm writes resumed, measure RTO and RPO from the heartbeat evidence, tear down (always), report.

RTO is measured from the fault to the first acknowledged heartbeat on the recovered primary. RPO is the
longest span of acknowledged heartbeats of the lost primary's lineage (system identifier and timeline)
missing after recovery, over a window of twice the target RPO; when nothing in the window survived it is
reported as at least the window, and fails. `auto` promotes the standby only when it was streaming before
the fault and its last replayed commit is within the RPO. A non-disruptive run restores only what the
archive held at its simulated fault time; a disruptive one loses the primary's unshipped WAL spool too. The report lands in
`reports/dr_drill_postgres_primary_loss/<run_id>.json` and the results database. A run that outlives
the control plane's RTO misses its Deadline Alert; the breach is recorded.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.operators.postgres_failover import PostgresFailoverOperator
from rehearsal_airflow.operators.postgres_restore import PostgresRestoreOperator
from rehearsal_airflow.operators.postgres_validate import PostgresValidateOperator
from rehearsal_airflow.operators.primary_loss_drill import (
    ChooseRecoveryPathOperator,
    ConfirmWritesResumedOperator,
    DetectPrimaryLossOperator,
    DrillGuardOperator,
    DrillReportOperator,
    DrillServiceDiscoverySwitchOperator,
    DrillTeardownOperator,
    EnrollNewPrimaryOperator,
    InjectPrimaryLossOperator,
    MeasureRecoveryOperator,
)

DAG_ID = "dr_drill_postgres_primary_loss"
COMPONENT = "control_plane_api"
GUARD = "{{ ti.xcom_pull(task_ids='guard_drill_environment') }}"
RECOVERED = ("{{ (ti.xcom_pull(task_ids='promote_standby') or ti.xcom_pull(task_ids='restore_pitr'))['address'] }}")
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}

with DAG(
    dag_id=DAG_ID,
    description="Quarterly drill: lose the control-plane Postgres primary, recover, measure RTO/RPO",
    doc_md=__doc__,
    schedule="0 6 1 1,4,7,10 *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=2,  # non-disruptive runs may overlap; disruptive ones take a lock per environment
    tags=["dr", "drill", "postgres", "scenario-b", "quarterly"],
    params={
        "mode": Param("non_disruptive", enum=["disruptive", "non_disruptive"],
                      description="disruptive: really kill the primary (drill environments only)"),
        "path": Param("auto", enum=["auto", "promote_standby", "pitr"], description="recovery path"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, DAG_ID),
) as dag:
    guard = DrillGuardOperator(task_id="guard_drill_environment", mode="{{ params.mode }}", path="{{ params.path }}",
                               component=COMPONENT, **IDEMPOTENT)
    inject = InjectPrimaryLossOperator(task_id="inject_primary_loss")
    detect = DetectPrimaryLossOperator(task_id="detect_primary_loss", **IDEMPOTENT)
    choose = ChooseRecoveryPathOperator(task_id="choose_recovery_path", component=COMPONENT, **IDEMPOTENT)
    promote = PostgresFailoverOperator(
        task_id="promote_standby", component=COMPONENT, **IDEMPOTENT,
        standby_address="{{ ti.xcom_pull(task_ids='guard_drill_environment')['standby'] }}",
        old_primary_address="{{ ti.xcom_pull(task_ids='guard_drill_environment')['primary'] }}")
    pitr = PostgresRestoreOperator(task_id="restore_pitr", method="pitr", target="latest", **IDEMPOTENT,
                                   archived_before="{{ ti.xcom_pull(task_ids='inject_primary_loss')['archived_before'] }}")
    validate = PostgresValidateOperator(task_id="validate_recovered_database", address=RECOVERED,
                                        trigger_rule="none_failed_min_one_success", **IDEMPOTENT)
    enroll = EnrollNewPrimaryOperator(task_id="enroll_new_primary", **IDEMPOTENT)
    switch = DrillServiceDiscoverySwitchOperator(task_id="switch_service_discovery", address=RECOVERED, **IDEMPOTENT)
    confirm = ConfirmWritesResumedOperator(task_id="confirm_writes_resumed", trigger_rule="none_failed", **IDEMPOTENT)
    measure = MeasureRecoveryOperator(task_id="measure_rto_rpo", component=COMPONENT, **IDEMPOTENT)
    teardown = DrillTeardownOperator(task_id="tear_down_drill_resources", **IDEMPOTENT)
    report = DrillReportOperator(task_id="write_drill_report", component=COMPONENT, trigger_rule="all_done",
                                 **IDEMPOTENT)

    guard >> inject >> detect >> choose >> [promote, pitr] >> validate
    validate >> enroll >> switch >> confirm >> measure >> teardown.as_teardown(setups=guard) >> report
