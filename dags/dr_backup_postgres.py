"""
### Control-plane backups (hourly)

Takes a base backup (`pg_basebackup`, tar, WAL streamed, SHA-256 backup manifest) and a logical
dump (`pg_dump -Fc`) of the control-plane database and uploads each with our manifest. Each updates
its Asset, which triggers `dr_backup_verify`. Continuous WAL archiving runs beside this, in the
database itself.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from rehearsal_airflow.assets import BASE_BACKUPS, LOGICAL_DUMPS
from rehearsal_airflow.deadlines import rpo_deadline
from rehearsal_airflow.operators.backups import BaseBackupOperator, LogicalDumpOperator

with DAG(
    dag_id="dr_backup_postgres",
    description="Base backup and logical dump of the control-plane database",
    doc_md=__doc__,
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    deadline=rpo_deadline("control_plane_api", "dr_backup_postgres"),
    tags=["dr", "backups", "postgres"],
    default_args={"owner": "sre", "retries": 1, "retry_delay": timedelta(minutes=1)},
) as dag:
    BaseBackupOperator(task_id="take_base_backup", outlets=[BASE_BACKUPS])
    LogicalDumpOperator(task_id="take_logical_dump", outlets=[LOGICAL_DUMPS])
