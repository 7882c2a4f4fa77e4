"""
### Backup verification (on every new backup)

Triggered when a new base backup or logical dump lands (Assets updated by `dr_backup_postgres`).
Verifies the newest base backup (every object's SHA-256 against our manifest, `pg_verifybackup`, WAL
continuity from its start LSN to the newest archived segment, naming any missing segment) and the
newest logical dump (SHA-256, `pg_restore --list`, a full read-through), then restore-tests: this
run's scratch area is prepared (setup), a PITR into a scratch cluster, validation (schema version,
reads, row counts, amcheck), and every scratch cluster of the run torn down with its folder (the
setup's teardown: it runs whenever the scratch area was prepared, even when the restore failed half-way
after starting its cluster). The result is recorded as a report and in the results database.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from rehearsal_airflow.assets import BASE_BACKUPS, LOGICAL_DUMPS
from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.operators.backup_verification import BackupVerificationOperator
from rehearsal_airflow.operators.postgres_restore import PostgresRestoreOperator
from rehearsal_airflow.operators.postgres_validate import PostgresValidateOperator
from rehearsal_airflow.operators.report import RunReportOperator
from rehearsal_airflow.operators.scratch import DestroyScratchAreaOperator, PrepareScratchAreaOperator

IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=10)}

with DAG(
    dag_id="dr_backup_verify",
    description="Verify and restore-test the newest backups",
    doc_md=__doc__,
    schedule=(BASE_BACKUPS | LOGICAL_DUMPS),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    deadline=rto_deadline("control_plane_api", "dr_backup_verify"),
    tags=["dr", "backups", "verification", "postgres"],
    default_args={"owner": "sre", "retries": 0},
) as dag:
    verify_base = BackupVerificationOperator(task_id="verify_base_backup", kind="base_backup", **IDEMPOTENT)
    verify_dump = BackupVerificationOperator(task_id="verify_logical_dump", kind="logical_dump", **IDEMPOTENT)
    prepare = PrepareScratchAreaOperator(task_id="prepare_scratch_area", **IDEMPOTENT)
    restore = PostgresRestoreOperator(task_id="restore_scratch_copy", method="pitr", target="latest", **IDEMPOTENT)
    validate = PostgresValidateOperator(task_id="validate_scratch_copy", recovery=restore.output, count_tolerance=0.05,
                                        **IDEMPOTENT)
    teardown = DestroyScratchAreaOperator(task_id="destroy_scratch_copies", **IDEMPOTENT)
    report = RunReportOperator(task_id="record_verification", scenario="Backup verification and restore test",
                               recovery=restore.output, environment_repair=teardown.output, mode="scheduled", **IDEMPOTENT)

    # The setup only creates a folder, so it succeeds and its teardown always runs: a restore that fails
    # after starting its cluster (an ordinary task, not the setup) still has that cluster destroyed.
    # The report runs whatever happened and fails the run when any step failed.
    [verify_base, verify_dump] >> prepare.as_setup() >> restore >> validate >> teardown.as_teardown(setups=prepare)
    teardown >> report
