"""ReenableWalArchivingOperator: the new primary archives into production's archive again, and that is proven."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.postgres.archiving import reenable_archiving
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.backup_store import BackupStoreHook
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator


class ReenableWalArchivingOperator(ControlPlaneMixin, DrillStepOperator):
    """A restored copy's quarantined WAL goes to the archive and its ``archive_command`` back to production's (the
    environment's ``archive_command``); a promoted standby keeps the one it inherited. Either way a segment is
    switched and must reach the archive. Skipped for a scratch target: the copy stays quarantined.

    :param recovery: the recovered primary (``RecoverPostgresOperator.output``)
    """

    template_fields: Sequence[str] = ("recovery", "target")

    def __init__(self, *, recovery: Any, target: str = "production", timeout: float = 60, **kwargs) -> None:
        super().__init__(**kwargs)
        self.recovery = recovery
        self.target = target
        self.timeout = timeout

    def run_step(self, context: Context) -> dict:
        if self.target == "scratch":
            raise AirflowSkipException("target scratch: the copy keeps archiving into its quarantine")
        env = current_environment()
        store = BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        admin = self.controlplane.platform().admin_endpoint(self.recovery["address"])
        quarantine = self.recovery.get("quarantine") or None  # on the copy's host: read over SQL
        done = reenable_archiving(admin, env.archive_command, store, quarantine, timeout=self.timeout)
        done["detail"] = (f"archiving from {self.recovery['address']} verified: segment {done['verified_segment']} reached "
                          f"the archive; {len(done['uploaded_from_quarantine'])} quarantined file(s) handed over")
        return done
