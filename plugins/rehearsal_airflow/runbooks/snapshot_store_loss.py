"""Scenario D (snapshot store loss) as one task group, built by one function for the scenario DAG and its drill:

confirm the blast radius -> find backups elsewhere -> raise snapshot frequency (only while the store is healthy)
-> restore the snapshot store from its own backups -> the volume-restore runbook for at least one volume ->
report each volume's newest restore point -> put the snapshot frequency back -> clean up the proof restore
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup

from rehearsal_airflow.operators.snapshot_store import (
    ConfirmBlastRadiusOperator,
    FindBackupsElsewhereOperator,
    PutSnapshotFrequencyBackOperator,
    RaiseSnapshotFrequencyOperator,
    ReportRestorePointsOperator,
    RestoreSnapshotStoreOperator,
)
from rehearsal_airflow.operators.volumes import CleanUpRestoredVolumesOperator
from rehearsal_airflow.runbooks.volume_restore import VolumeRestoreTasks, volume_restore

GROUP_ID = "scenario_d"
SCENARIO_DAG_ID = "dr_scenario_d_snapshot_store_loss"
SCENARIO = "Scenario D: snapshot store loss"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}


@dataclass
class SnapshotStoreLossTasks:
    group: TaskGroup
    blast_radius: ConfirmBlastRadiusOperator
    restore_store: RestoreSnapshotStoreOperator
    volumes: VolumeRestoreTasks
    restore_points: ReportRestorePointsOperator


def snapshot_store_loss(*, mode: str, volume_ids: Any, approve: str = "wait", frequent_interval_seconds: float = 60,
                        group_id: str = GROUP_ID) -> SnapshotStoreLossTasks:
    with TaskGroup(group_id=group_id, tooltip=SCENARIO) as group:
        blast = ConfirmBlastRadiusOperator(task_id="confirm_blast_radius", mode=mode, **IDEMPOTENT)
        elsewhere = FindBackupsElsewhereOperator(task_id="find_backups_elsewhere", **IDEMPOTENT)
        frequency = RaiseSnapshotFrequencyOperator(task_id="raise_snapshot_frequency_if_healthy", health=blast.output,
                                                   interval_seconds=frequent_interval_seconds, **IDEMPOTENT)
        restore_store = RestoreSnapshotStoreOperator(task_id="restore_snapshot_store", health=blast.output,
                                                     trigger_rule="none_failed", **IDEMPOTENT)
        volumes = volume_restore(mode=mode, volume_ids=volume_ids, target="scratch", approve=approve,
                                 targets_critical=True)
        points = ReportRestorePointsOperator(task_id="report_restore_points", **IDEMPOTENT)
        # What the runbook raised goes back at the end, whatever happened (all_done).
        frequency_back = PutSnapshotFrequencyBackOperator(task_id="put_snapshot_frequency_back", raised=frequency.output,
                                                          **IDEMPOTENT)
        # The proof restore is scratch, not for inspection: it goes whatever happened (all_done).
        clean_up = CleanUpRestoredVolumesOperator(task_id="clean_up_proof_restore", **IDEMPOTENT)
        blast >> elsewhere >> frequency >> restore_store >> volumes.group >> points >> frequency_back >> clean_up
        volumes.choose.trigger_rule = "none_failed"
    return SnapshotStoreLossTasks(group, blast, restore_store, volumes, points)
