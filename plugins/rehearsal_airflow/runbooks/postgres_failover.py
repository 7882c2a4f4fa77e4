"""The postgres-failover runbook as one task group, built by one function for the runbook DAG and the drill:
the steps a drill rehearses are the steps an incident runs.

assess the cluster -> choose the path -> approve (incidents: a person, once) -> fence the old primary ->
recover (promote the standby, or PITR into a new cluster) -> validate -> re-enable WAL archiving ->
switch service discovery -> confirm clients followed -> rebuild redundancy

With ``target="scratch"`` it recovers into a scratch copy and stops after validation: fencing, archiving, the
switch, the confirmation and the rebuild are skipped, and production is untouched.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, TaskGroup

from rehearsal_airflow.operators.approval import RecoveryApprovalOperator
from rehearsal_airflow.operators.archiving import ReenableWalArchivingOperator
from rehearsal_airflow.operators.postgres_recovery import (
    AssessClusterOperator,
    ChooseRecoveryPathOperator,
    FenceOldPrimaryOperator,
    RecoverPostgresOperator,
)
from rehearsal_airflow.operators.postgres_validate import PostgresValidateOperator
from rehearsal_airflow.operators.redundancy import RebuildRedundancyOperator
from rehearsal_airflow.operators.service_discovery import ConfirmClientsFollowedOperator, ServiceDiscoverySwitchOperator

GROUP_ID = "postgres_failover"
RUNBOOK_DAG_ID = "dr_runbook_postgres_failover"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}


@dataclass
class PostgresFailoverTasks:
    """The runbook's group and the steps whose records later steps (a drill's measurement, the report) take."""

    group: TaskGroup
    assess: AssessClusterOperator
    choose: ChooseRecoveryPathOperator
    approve: RecoveryApprovalOperator
    recover: RecoverPostgresOperator
    validate: PostgresValidateOperator
    rebuild: RebuildRedundancyOperator


def postgres_failover(*, mode: str, path: str = "auto", target: str = "production", approve: str = "wait",
                      recovery_target: str = "latest", archived_before: str = "", base_backup: str = "",
                      component: str = "control_plane_api", group_id: str = GROUP_ID,
                      also_validate: Callable[[Any], BaseOperator] | None = None) -> PostgresFailoverTasks:
    """Build the runbook's tasks in the current DAG. Every argument may be a template (``{{ params.mode }}``) or an
    XComArg; none changes which tasks exist, only what they do.

    :param also_validate: builds one more check of the recovered cluster (given the recovery's record), run after
        the standard validation and before anything is switched (Scenario B: the damage must be gone)"""
    with TaskGroup(group_id=group_id, tooltip="The postgres-failover runbook") as group:
        assess = AssessClusterOperator(task_id="assess_cluster", mode=mode, target=target, **IDEMPOTENT)
        choose = ChooseRecoveryPathOperator(task_id="choose_recovery_path", assessment=assess.output, path=path,
                                            target=target, component=component, mode=mode, approve=approve, **IDEMPOTENT)
        approval = RecoveryApprovalOperator(task_id="approve_recovery", mode=mode, approve=approve, target=target,
                                            decision=choose.output, assessment=assess.output, base_backup=base_backup,
                                            recovery_target=recovery_target, **IDEMPOTENT)
        fence = FenceOldPrimaryOperator(task_id="fence_old_primary", assessment=assess.output, target=target, **IDEMPOTENT)
        recover = RecoverPostgresOperator(task_id="recover_database", decision=choose.output, assessment=assess.output,
                                          recovery_target=recovery_target, archived_before=archived_before,
                                          base_backup=base_backup, component=component, target=target,
                                          trigger_rule="none_failed_min_one_success", **IDEMPOTENT)
        validate = PostgresValidateOperator(task_id="validate_recovered_database", recovery=recover.output,
                                            schema_rule="at_least", count_tolerance=0.05, **IDEMPOTENT)
        archiving = ReenableWalArchivingOperator(task_id="reenable_wal_archiving", recovery=recover.output, target=target,
                                                 **IDEMPOTENT)
        switch = ServiceDiscoverySwitchOperator(task_id="switch_service_discovery", recovery=recover.output, target=target,
                                                **IDEMPOTENT)
        confirm = ConfirmClientsFollowedOperator(task_id="confirm_clients_followed", recovery=recover.output,
                                                 target=target, **IDEMPOTENT)
        rebuild = RebuildRedundancyOperator(task_id="rebuild_redundancy", recovery=recover.output, target=target,
                                            **IDEMPOTENT)
        # The approval's Reject skips its direct downstream (fence and recover); a fence skipped for a scratch
        # target does not stop the recovery (none_failed_min_one_success), and the rest follows in order.
        approval >> [fence, recover]
        fence >> recover >> validate
        if also_validate is not None:
            validate = validate >> also_validate(recover.output)
        validate >> archiving >> switch >> confirm >> rebuild
    return PostgresFailoverTasks(group, assess, choose, approval, recover, validate, rebuild)
