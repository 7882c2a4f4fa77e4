"""Scenario C (a full region outage) as one task group, built by one function for the scenario DAG and its drill:

declare the region outage (confirmed from what the runbook probes; a false alarm ends ``not_applicable``) -> the
path it chose:

- ``multi_region``: approve -> shift edge traffic to the healthy region (probed before and after each step) ->
  promote the standby control plane there (the postgres-failover runbook's own tasks) -> its API, scheduler and
  reconciler started there, each confirmed -> writes back (canary first) -> reconcile desired state into the hosts
  available there (reconciler ramped, convergence confirmed) -> every endpoint through that region's edge -> keys
  and secrets -> edge configuration
- ``single_region``: approve -> restore the control-plane database on new hosts from backups (the failover
  runbook's PITR) -> its services -> a minimal host fleet -> critical volumes by priority (the volume-restore
  runbook's tasks) -> the edge configuration from its newest verified export -> what is and is not back
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from airflow.sdk import TaskGroup

from rehearsal_airflow.operators.control_plane import (
    RestoreServiceOperator,
    ResumeReconcilerGraduallyOperator,
    ResumeWritesOperator,
    TimeToConvergeSensor,
)
from rehearsal_airflow.operators.region import (
    BranchOnRegionPathOperator,
    BringUpFleetOperator,
    ChooseCriticalVolumesOperator,
    DeclareRegionOutageOperator,
    RegionApprovalOperator,
    SummarizeRebuildOperator,
    VerifyEndpointsThroughEdgeOperator,
)
from rehearsal_airflow.operators.region_drills import MeasureRegionOutageOperator
from rehearsal_airflow.runbooks.postgres_failover import PostgresFailoverTasks, postgres_failover
from rehearsal_airflow.runbooks.volume_restore import volume_restore

GROUP_ID = "scenario_c"
SCENARIO_DAG_ID = "dr_scenario_c_region_outage"
SCENARIO = "Scenario C: full region outage"
COMPONENT = "full_region"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}
MULTI, SINGLE = "multi_region", "single_region"


@dataclass
class RegionOutageTasks:
    group: TaskGroup
    declare: DeclareRegionOutageOperator
    branch: BranchOnRegionPathOperator
    approve: RegionApprovalOperator
    shift: object
    promote: PostgresFailoverTasks
    verify: VerifyEndpointsThroughEdgeOperator
    converge: TimeToConvergeSensor
    keys: object
    edge_config: object
    rebuild: PostgresFailoverTasks | None = None
    summary: object = None
    measure: object = None


def region_outage(*, mode: str, failed_region: str, path: str = "auto", approve: str = "wait",
                  shift_steps: str = "at_once", group_id: str = GROUP_ID) -> RegionOutageTasks:
    """Build Scenario C's tasks in the current DAG (arguments may be templates; none changes which tasks exist)."""
    from rehearsal_airflow.operators.edge_config import RestoreEdgeConfigurationOperator, VerifyEdgeConfigurationOperator
    from rehearsal_airflow.operators.keys import VerifyKeysAndSecretsOperator
    from rehearsal_airflow.operators.traffic_shift import TrafficShiftOperator

    with TaskGroup(group_id=group_id, tooltip=SCENARIO) as group:
        declare = DeclareRegionOutageOperator(task_id="declare_region_outage", mode=mode, failed_region=failed_region,
                                              path=path, scenario=SCENARIO, **IDEMPOTENT)
        branch = BranchOnRegionPathOperator(task_id="choose_region_path", declaration=declare.output,
                                            multi_region_task_id=f"{group_id}.{MULTI}.approve_region_failover",
                                            single_region_task_id=f"{group_id}.{SINGLE}.approve_rebuild", **IDEMPOTENT)
        target = declare.output["target_region"]
        failed = declare.output["failed_region"]  # as declared (a drill's fault names it at run time)
        with TaskGroup(group_id=MULTI, tooltip="fail over to the healthy region") as multi:
            approval = RegionApprovalOperator(task_id="approve_region_failover", mode=mode, approve=approve,
                                              declaration=declare.output, **IDEMPOTENT)
            shift = TrafficShiftOperator(task_id="shift_edge_traffic", failed_region=failed,
                                         target_region=target, steps=shift_steps, **IDEMPOTENT)
            promote = postgres_failover(mode=mode, path="promote_standby", approve=approve, component="control_plane_api",
                                        group_id="promote_standby_control_plane")
            api = RestoreServiceOperator(task_id="start_api_read_only", service="api", region=target, **IDEMPOTENT)
            scheduler = RestoreServiceOperator(task_id="start_scheduler", service="scheduler", region=target, **IDEMPOTENT)
            reconciler = RestoreServiceOperator(task_id="start_reconciler_paused", service="reconciler", region=target,
                                                **IDEMPOTENT)
            writes = ResumeWritesOperator(task_id="resume_writes", **IDEMPOTENT)
            reconcile = ResumeReconcilerGraduallyOperator(task_id="reconcile_into_available_hosts",
                                                          steps=(0.5, 1.0, 2.0, 5.0), hold_seconds=3.0,
                                                          paused_by=reconciler, **IDEMPOTENT)
            converge = TimeToConvergeSensor(task_id="confirm_time_to_converge", threshold_seconds=30, **IDEMPOTENT)
            verify = VerifyEndpointsThroughEdgeOperator(task_id="verify_endpoint_availability", region=target,
                                                        **IDEMPOTENT)
            keys = VerifyKeysAndSecretsOperator(task_id="verify_keys_and_secrets", region=target, **IDEMPOTENT)
            edge_config = VerifyEdgeConfigurationOperator(task_id="verify_edge_configuration", **IDEMPOTENT)
            (approval >> shift >> promote.group >> api >> scheduler >> reconciler >> writes >> reconcile >> converge
             >> verify >> keys >> edge_config)
        with TaskGroup(group_id=SINGLE, tooltip="rebuild the region from backups") as single:
            rebuild_approval = RegionApprovalOperator(task_id="approve_rebuild", mode=mode, approve=approve,
                                                      declaration=declare.output, **IDEMPOTENT)
            rebuild = postgres_failover(mode=mode, path="pitr", approve=approve, component="control_plane_api",
                                        group_id="restore_control_plane_database")
            services = [RestoreServiceOperator(task_id=task_id, service=service, region=failed, **IDEMPOTENT)
                        for task_id, service in (("start_api_read_only", "api"), ("start_scheduler", "scheduler"),
                                                 ("start_reconciler_paused", "reconciler"))]
            rebuilt_writes = ResumeWritesOperator(task_id="resume_writes", **IDEMPOTENT)
            fleet = BringUpFleetOperator(task_id="bring_up_minimal_fleet", region=failed, **IDEMPOTENT)
            critical = ChooseCriticalVolumesOperator(task_id="choose_critical_volumes", **IDEMPOTENT)
            volumes = volume_restore(mode=mode, volume_ids=critical.output["volume_ids"], target="in_place",
                                     approve="auto", targets_critical=True, group_id="restore_critical_volumes")
            edge_restore = RestoreEdgeConfigurationOperator(task_id="restore_edge_configuration", **IDEMPOTENT)
            summary = SummarizeRebuildOperator(
                task_id="report_what_is_back", trigger_rule="all_done", declaration=declare.output,
                records={"control_plane_database": rebuild.validate.output, "api": services[0].output,
                         "scheduler": services[1].output, "reconciler": services[2].output, "fleet": fleet.output,
                         "critical_volumes": volumes.verify.output, "edge_configuration": edge_restore.output},
                **IDEMPOTENT)
            (rebuild_approval >> rebuild.group >> services[0] >> services[1] >> services[2] >> rebuilt_writes >> fleet
             >> critical >> volumes.group >> edge_restore >> summary)
        # Customers' experience, from their own traffic where the environment records it (a sandbox, a synthetic
        # monitor): the outage start, when they were answered again, availability before, during and after, RPO.
        measure = MeasureRegionOutageOperator(task_id="measure_customer_impact", fault=None, declaration=declare.output,
                                              verified=verify.output, trigger_rule="none_failed_min_one_success",
                                              **IDEMPOTENT)
        declare >> branch >> [multi, single] >> measure
    return RegionOutageTasks(group, declare, branch, approval, shift, promote, verify, converge, keys, edge_config,
                             rebuild, summary, measure)
