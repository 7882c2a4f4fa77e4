"""Scenario A (control plane down, data plane still running) as one task group, built by one function for the
scenario DAG and its drill:

declare incident (confirming it is happening: a false alarm ends ``not_applicable``, nothing changed) -> approve
(incidents: only when a running service would be degraded) -> verify hosts still run workloads -> restore the API
read-only -> the scheduler -> the
reconciler (paused) -> validate Postgres health, or run the postgres-failover runbook -> resume writes (canary
first) -> resume the reconciler gradually -> confirm time-to-converge is back to normal
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import TaskGroup

from rehearsal_airflow.operators.approval import ScenarioApprovalOperator
from rehearsal_airflow.operators.control_plane import (
    CheckPostgresHealthOperator,
    DeclareIncidentOperator,
    RestoreServiceOperator,
    ResumeReconcilerGraduallyOperator,
    ResumeWritesOperator,
    TimeToConvergeSensor,
    VerifyDataPlaneOperator,
)
from rehearsal_airflow.runbooks.postgres_failover import GROUP_ID as FAILOVER_GROUP
from rehearsal_airflow.runbooks.postgres_failover import PostgresFailoverTasks, postgres_failover

GROUP_ID = "scenario_a"
SCENARIO_DAG_ID = "dr_scenario_a_control_plane_down"
SCENARIO = "Scenario A: control plane down, data plane still running"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}


@dataclass
class ControlPlaneDownTasks:
    group: TaskGroup
    declare: DeclareIncidentOperator
    approve: ScenarioApprovalOperator
    verify: VerifyDataPlaneOperator
    restore_api: RestoreServiceOperator
    resume_writes: ResumeWritesOperator
    resume_reconciler: ResumeReconcilerGraduallyOperator
    converge: TimeToConvergeSensor
    failover: PostgresFailoverTasks


def control_plane_down(*, mode: str, approve: str = "wait", path: str = "auto", converge_threshold: float = 30,
                       ramp_steps: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0), ramp_hold_seconds: float = 3.0,
                       component: str = "control_plane_api", group_id: str = GROUP_ID) -> ControlPlaneDownTasks:
    """Build Scenario A's tasks in the current DAG (arguments may be templates; none changes which tasks exist)."""
    with TaskGroup(group_id=group_id, tooltip=SCENARIO) as group:
        declare = DeclareIncidentOperator(task_id="declare_incident", mode=mode, scenario=SCENARIO,
                                          confirms="control_plane", **IDEMPOTENT)
        # Before anything that still runs is degraded (a running API put read-only, a running reconciler paused).
        approval = ScenarioApprovalOperator(task_id="approve_degrading_steps", mode=mode, approve=approve,
                                            scenario=GROUP_ID, records=declare.output, **IDEMPOTENT)
        verify = VerifyDataPlaneOperator(task_id="verify_hosts_running_workloads", **IDEMPOTENT)
        api = RestoreServiceOperator(task_id="restore_api_read_only", service="api", **IDEMPOTENT)
        scheduler = RestoreServiceOperator(task_id="restore_scheduler", service="scheduler", **IDEMPOTENT)
        reconciler = RestoreServiceOperator(task_id="restore_reconciler_paused", service="reconciler", **IDEMPOTENT)
        postgres_healthy = EmptyOperator(task_id="postgres_healthy", **IDEMPOTENT)
        check = CheckPostgresHealthOperator(task_id="validate_postgres_health",
                                            healthy_task_id=f"{group_id}.postgres_healthy",
                                            failover_group_id=f"{group_id}.{FAILOVER_GROUP}", **IDEMPOTENT)
        failover = postgres_failover(mode=mode, path=path, approve=approve, component=component)
        resume_writes = ResumeWritesOperator(task_id="resume_writes", trigger_rule="none_failed_min_one_success",
                                             **IDEMPOTENT)
        resume_reconciler = ResumeReconcilerGraduallyOperator(task_id="resume_reconciler_gradually", steps=ramp_steps,
                                                              hold_seconds=ramp_hold_seconds, paused_by=reconciler,
                                                              **IDEMPOTENT)
        converge = TimeToConvergeSensor(task_id="confirm_time_to_converge", threshold_seconds=converge_threshold,
                                        **IDEMPOTENT)
        declare >> approval >> verify >> api >> scheduler >> reconciler >> check >> [postgres_healthy, failover.group]
        [postgres_healthy, failover.group] >> resume_writes >> resume_reconciler >> converge
    return ControlPlaneDownTasks(group, declare, approval, verify, api, resume_writes, resume_reconciler, converge,
                                 failover)
