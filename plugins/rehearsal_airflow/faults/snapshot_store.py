"""Drill-only fault: the snapshot store's primary bucket (or its index prefix) deleted, through the environment's
provisioner. Runbook operators never import this module."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Context

from rehearsal.platform import load_provisioner
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import DrillStepOperator
from rehearsal_airflow.operators.volumes import StoreMixin


class InjectSnapshotStoreLossOperator(StoreMixin, DrillStepOperator):
    """Delete the primary snapshot bucket (``scope=bucket``) or its index (``scope=prefix``), recording what the
    store held just before."""

    template_fields: Sequence[str] = ("guard", "scope")

    def __init__(self, *, guard: Any, scope: str = "bucket", **kwargs) -> None:
        super().__init__(**kwargs)
        self.guard, self.scope = guard, scope

    def run_step(self, context: Context) -> dict:
        from rehearsal.snapshots.freshness import newest_entry

        env = current_environment()
        env.require_drill_environment("delete the snapshot store")
        provisioner = load_provisioner(env.provisioner, environment=env)
        from rehearsal_airflow.faults.targets import check_snapshot_store

        check_snapshot_store(env, self.snapshots())  # the recorded store, by identity, or nothing
        newest, entries = newest_entry(self.snapshots().primary)
        done = provisioner.delete_snapshot_store(self.scope)
        return {"fault_at": done["deleted_at"], "entries_before": entries,
                "newest_before": newest.snapshot_id if newest else None, **done,
                "detail": f"deleted the snapshot store's {self.scope} ({done.get('bucket')}, "
                          f"{done.get('objects_deleted')} objects) at "
                          f"{datetime.fromtimestamp(done['deleted_at'], UTC).isoformat()}; it held {entries} index entries"}
