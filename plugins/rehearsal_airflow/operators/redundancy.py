"""RebuildRedundancyOperator: after the recovery point and outside the outage, a new standby and a fresh base
backup of the new timeline. Hands on hosts come from the environment's provisioner; without one the runbook
says "redundancy not rebuilt: no provisioner" and still takes the base backup (that needs connections only)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.capabilities import DatabaseHosts, capability_limitation
from rehearsal.platform import load_provisioner
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.backup_store import BackupStoreHook
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator


class RebuildRedundancyOperator(ControlPlaneMixin, DrillStepOperator):
    template_fields: Sequence[str] = ("recovery", "target")

    def __init__(self, *, recovery: Any, target: str = "production", app_conn_id: str = "controlplane_db", **kwargs) -> None:
        super().__init__(**kwargs)
        self.recovery = recovery
        self.target = target
        self.app_conn_id = app_conn_id

    def run_step(self, context: Context) -> dict:
        if self.target == "scratch":
            raise AirflowSkipException("target scratch: production's redundancy is untouched")
        from rehearsal.backups.base_backup import take_base_backup

        env = current_environment()
        address = self.recovery["address"]
        provisioner = load_provisioner(env.provisioner, environment=env)
        done: list[str] = []
        degraded: list[dict] = []
        if provisioner is None or not isinstance(provisioner, DatabaseHosts):
            why = ("no provisioner (the environment names none)" if provisioner is None
                   else capability_limitation(provisioner, DatabaseHosts))
            done.append(f"redundancy not rebuilt: {why}; build a standby by hand")
            degraded.append({"step": self.task_id, "item": "standby not rebuilt",
                             "what_to_do": f"the new primary {address} has no standby ({why}): build one by hand "
                                           "(pg_basebackup -R from it) and list it in the replica record"})
        else:
            done += provisioner.adopt_primary(address, self.recovery.get("data_dir"))
            done += provisioner.rebuild_standby(address)
        platform = self.controlplane.platform()
        store = BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        backup = take_base_backup(platform.admin_endpoint(address).with_(dbname=platform.app.dbname),
                                  platform.app_endpoint(address), store)
        done.append(f"base backup {backup.backup_id} of timeline {backup.timeline}")
        return {"actions": done, "base_backup": backup.backup_id, "provisioner": env.provisioner or "none",
                "resources": [f"backup:{backup.backup_id}"], "degraded": degraded, "detail": "; ".join(done)}
