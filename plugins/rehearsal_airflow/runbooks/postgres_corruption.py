"""Scenario B (Postgres unrecoverable corruption) as one task group, built by one function for the scenario
DAG and its drill:

declare incident -> establish when the damage happened (none found and no time given: ``not_applicable``, nothing
changed) -> pick the last good backup -> approve (incidents: the freeze and the restore, before anything is
degraded; a rejection leaves everything as found) -> freeze mutations -> keep the writes since then -> archive WAL
past the damage -> the postgres-failover runbook (its own approval covered by the scenario's; PITR into a new
cluster to just before the damage; validate, and validate the damage is gone, before anything is switched;
re-archive; switch discovery; confirm clients; rebuild redundancy) -> repair drift (still frozen) -> resume
writes (canary first) -> resume the reconciler gradually -> confirm time-to-converge
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from airflow.sdk import TaskGroup

from rehearsal_airflow.operators.approval import ScenarioApprovalOperator
from rehearsal_airflow.operators.control_plane import (
    DeclareIncidentOperator,
    FreezeMutationsOperator,
    ResumeReconcilerGraduallyOperator,
    ResumeWritesOperator,
    TimeToConvergeSensor,
)
from rehearsal_airflow.operators.corruption import (
    ArchiveWalPastCorruptionOperator,
    CaptureWritesSinceOperator,
    EstablishCorruptionPointOperator,
    PickLastGoodBackupOperator,
    RepairDriftOperator,
    ValidateDamageGoneOperator,
)
from rehearsal_airflow.runbooks.postgres_failover import PostgresFailoverTasks, postgres_failover

GROUP_ID = "scenario_b"
SCENARIO_DAG_ID = "dr_scenario_b_postgres_corruption"
SCENARIO = "Scenario B: Postgres unrecoverable corruption"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}


@dataclass
class PostgresCorruptionTasks:
    group: TaskGroup
    declare: DeclareIncidentOperator
    point: EstablishCorruptionPointOperator
    approve: ScenarioApprovalOperator
    freeze: FreezeMutationsOperator
    capture: CaptureWritesSinceOperator
    pick: PickLastGoodBackupOperator
    failover: PostgresFailoverTasks
    damage: ValidateDamageGoneOperator
    resume_writes: ResumeWritesOperator
    repair: RepairDriftOperator
    converge: TimeToConvergeSensor


def postgres_corruption(*, mode: str, approve: str = "wait", corruption_time: str = "",
                        converge_threshold: float = 30, ramp_steps: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0),
                        ramp_hold_seconds: float = 3.0, component: str = "control_plane_api",
                        group_id: str = GROUP_ID) -> PostgresCorruptionTasks:
    """Build Scenario B's tasks in the current DAG (arguments may be templates or XComArgs)."""
    with TaskGroup(group_id=group_id, tooltip=SCENARIO) as group:
        declare = DeclareIncidentOperator(task_id="declare_incident", mode=mode, scenario=SCENARIO, **IDEMPOTENT)
        point = EstablishCorruptionPointOperator(task_id="establish_corruption_time", corruption_time=corruption_time,
                                                 **IDEMPOTENT)
        pick = PickLastGoodBackupOperator(task_id="pick_last_good_backup", point=point.output, **IDEMPOTENT)
        # One question, before anything still working is degraded: the freeze, and the restore from that backup.
        approval = ScenarioApprovalOperator(task_id="approve_freeze_and_restore", mode=mode, approve=approve,
                                            scenario=group_id, records={"point": point.output, "pick": pick.output},
                                            **IDEMPOTENT)
        freeze = FreezeMutationsOperator(task_id="freeze_mutations", **IDEMPOTENT)
        capture = CaptureWritesSinceOperator(task_id="keep_writes_since_corruption", point=point.output, **IDEMPOTENT)
        archive = ArchiveWalPastCorruptionOperator(task_id="archive_wal_past_corruption", **IDEMPOTENT)
        damage: list[ValidateDamageGoneOperator] = []

        def damage_gone(recovery) -> ValidateDamageGoneOperator:
            # Inside the failover runbook, after its validation and before anything is switched.
            damage.append(ValidateDamageGoneOperator(task_id="validate_damage_gone", point=point.output,
                                                     recovery=recovery, **IDEMPOTENT))
            return damage[0]

        # The person approved the restore above (backup and target shown): the runbook does not ask again.
        failover = postgres_failover(mode=mode, path="pitr", approve="auto",
                                     recovery_target=pick.output["recovery_target"],
                                     base_backup=pick.output["backup_id"], component=component,
                                     also_validate=damage_gone)
        # Lost writes go back while everyone else is still frozen: nothing newer can be overwritten by them.
        repair = RepairDriftOperator(task_id="repair_drift", captured=capture.output, **IDEMPOTENT)
        resume_writes = ResumeWritesOperator(task_id="resume_writes", **IDEMPOTENT)
        resume_reconciler = ResumeReconcilerGraduallyOperator(task_id="resume_reconciler_gradually", steps=ramp_steps,
                                                              hold_seconds=ramp_hold_seconds, paused_by=freeze,
                                                              **IDEMPOTENT)
        converge = TimeToConvergeSensor(task_id="confirm_time_to_converge", threshold_seconds=converge_threshold,
                                        **IDEMPOTENT)
        declare >> point >> pick >> approval >> freeze >> capture >> archive >> failover.group
        failover.group >> repair >> resume_writes >> resume_reconciler >> converge
    return PostgresCorruptionTasks(group, declare, point, approval, freeze, capture, pick, failover, damage[0],
                                   resume_writes, repair, converge)
