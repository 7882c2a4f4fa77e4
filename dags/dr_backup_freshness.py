"""
### Backup freshness (every 5 minutes)

Newest base backup, newest archived WAL segment and newest logical dump of the control-plane
database, each against its maximum age from the targets catalog (`config/targets.yaml`; the WAL
archive's limit is the control plane's RPO). Fails, naming the stale asset and by how much it is
over its limit; on success it reports every asset's age. Beside them, the app runtime's RPO-0 promise
(`app_runtime_availability`): the blackbox prober ran in the last minute and every data-plane endpoint
answered in every round. And the volumes (`volume_snapshots`): every volume of the control-plane database's
`volumes` table has a restorable snapshot within the volume RPO, read from the snapshot index's keys alone (API
calls bounded by listing pages); the replica's lag and the index backup's age within their limits.
And Scenario C's critical assets: the newest edge-configuration export that verifies within the full-region RPO
(`edge_config_export`), every KMS key the secrets depend on Enabled in every region (`secrets_kms_keys`: a key
disabled or pending deletion is a Sev0 finding) and the secrets canary decrypting in every region (`secrets_canary`).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from rehearsal_airflow.deadlines import rpo_deadline
from rehearsal_airflow.operators.backup_freshness import (
    AppRuntimeAvailabilityOperator,
    BackupFreshnessOperator,
    EdgeConfigFreshnessOperator,
    KeysAndSecretsStateOperator,
    VolumeSnapshotFreshnessOperator,
)

with DAG(
    dag_id="dr_backup_freshness",
    description="Backup freshness against RPO: base backups, WAL archive, logical dumps",
    doc_md=__doc__,
    schedule="*/5 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=4),
    deadline=rpo_deadline("control_plane_api", "dr_backup_freshness"),
    tags=["dr", "backups", "monitoring", "postgres"],
    default_args={"owner": "sre", "retries": 1, "retry_delay": timedelta(seconds=30)},
) as dag:
    BackupFreshnessOperator(task_id="check_backup_freshness")
    AppRuntimeAvailabilityOperator(task_id="check_app_runtime_availability")
    VolumeSnapshotFreshnessOperator(task_id="check_volume_snapshots")
    EdgeConfigFreshnessOperator(task_id="check_edge_config_export")
    KeysAndSecretsStateOperator(task_id="check_keys_and_secrets")
