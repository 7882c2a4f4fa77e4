"""The backup-restore runbook for volumes (``docs/ops/07-backup-restore-runbook.md``) as one task group, built by
one function for the runbook DAG, its drill and Scenario D:

choose restore points -> approve (an in-place restore in an incident) -> restore -> verify byte for byte
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup

from rehearsal_airflow.operators.volumes import (
    ChooseRestorePointsOperator,
    SnapshotRestoreOperator,
    VerifyRestoredVolumesOperator,
    VolumeRestoreApprovalOperator,
)

GROUP_ID = "volume_restore"
RUNBOOK_DAG_ID = "dr_runbook_volume_restore"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}


@dataclass
class VolumeRestoreTasks:
    group: TaskGroup
    choose: ChooseRestorePointsOperator
    approve: VolumeRestoreApprovalOperator
    restore: SnapshotRestoreOperator
    verify: VerifyRestoredVolumesOperator


def volume_restore(*, mode: str, volume_ids: Any, snapshot_id: str = "", target: str = "scratch",
                   backend: str = "object_store", approve: str = "wait", region: str = "",
                   targets_critical: bool = False, group_id: str = GROUP_ID) -> VolumeRestoreTasks:
    """Build the runbook's tasks in the current DAG (arguments may be templates or XComArgs)."""
    with TaskGroup(group_id=group_id, tooltip="The volume-restore runbook") as group:
        choose = ChooseRestorePointsOperator(task_id="choose_restore_points", mode=mode, volume_ids=volume_ids,
                                             snapshot_id=snapshot_id, target=target, backend=backend, **IDEMPOTENT)
        approval = VolumeRestoreApprovalOperator(task_id="approve_restore", mode=mode, approve=approve, target=target,
                                                 points=choose.output, **IDEMPOTENT)
        restore = SnapshotRestoreOperator(task_id="restore_volumes", points=choose.output, mode=mode, region=region,
                                          **IDEMPOTENT)
        verify = VerifyRestoredVolumesOperator(task_id="verify_restored_volumes", restored=restore.output,
                                               points=choose.output, targets_critical=targets_critical, **IDEMPOTENT)
        choose >> approval >> restore >> verify
    return VolumeRestoreTasks(group, choose, approval, restore, verify)
