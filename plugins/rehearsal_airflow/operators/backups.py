"""BaseBackupOperator and LogicalDumpOperator: take a backup of the control-plane database, upload it
with our manifest, and update the Asset that triggers its verification."""
from __future__ import annotations

from functools import cached_property

from airflow.sdk import Context

from rehearsal.backups.base_backup import take_base_backup
from rehearsal.backups.logical_dump import take_logical_dump
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.backup_store import BackupStoreHook
from rehearsal_airflow.hooks.controlplane_db import ControlPlaneDbHook
from rehearsal_airflow.operators.base import DrillStepOperator


class _BackupOperator(DrillStepOperator):
    def __init__(self, *, admin_conn_id: str = "controlplane_admin", app_conn_id: str = "controlplane_db",
                 aws_conn_id: str = "aws_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.admin_conn_id = admin_conn_id
        self.app_conn_id = app_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def store(self):
        env = current_environment()
        return BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store


class BaseBackupOperator(_BackupOperator):
    def run_step(self, context: Context) -> dict:
        admin = ControlPlaneDbHook(self.admin_conn_id, self.aws_conn_id).endpoint()
        app = ControlPlaneDbHook(self.app_conn_id, self.aws_conn_id).endpoint()
        manifest = take_base_backup(admin, app, self.store)
        return {"backup_id": manifest.backup_id, "kind": "base_backup", "start_lsn": manifest.start_lsn,
                "detail": f"base backup {manifest.backup_id} from {admin.address()}"}


class LogicalDumpOperator(_BackupOperator):
    def run_step(self, context: Context) -> dict:
        app = ControlPlaneDbHook(self.app_conn_id, self.aws_conn_id).endpoint()
        manifest = take_logical_dump(app, self.store)
        return {"backup_id": manifest.backup_id, "kind": "logical_dump",
                "detail": f"logical dump {manifest.backup_id} of {app.address()}"}
