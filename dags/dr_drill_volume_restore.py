"""
### Quarterly drill: restore volumes from snapshots

The plan's third quarterly drill ("simulate restoring a volume from snapshot"): it picks volumes (a random
sample, the largest, and every volume marked critical), runs the volume-restore runbook (the very tasks of
`dr_runbook_volume_restore`) in `drill` mode, verifies every restored byte against the snapshot index, and measures
each volume's restore time and snapshot age against the targets (4 h RTO, 24 h RPO); what it restored is always
torn down.

**Params**: `mode`: `non_disruptive` (default: restores into scratch; nothing of production is touched) or
`disruptive` (drill environments only: restores in place over the volumes). `backend`: `object_store` or `ebs`.
`volume_id`: restore these instead of the sample.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from rehearsal.capabilities import VolumeHosts
from rehearsal.drills.stop_conditions import StopConditions
from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.drills.frame import DrillGuard, Rehearsed, drill_frame
from rehearsal_airflow.operators.volumes import CleanUpRestoredVolumesOperator, VolumeDrillGuardOperator
from rehearsal_airflow.runbooks.volume_restore import GROUP_ID, RUNBOOK_DAG_ID, volume_restore

DAG_ID = "dr_drill_volume_restore"
COMPONENT = "volume_restore"
SCENARIO = "Volume restore from snapshot (quarterly drill 3)"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}
TARGET = "{{ 'in_place' if params.mode == 'disruptive' else 'scratch' }}"

with DAG(
    dag_id=DAG_ID,
    description="Quarterly drill: restore sampled, largest and critical volumes from snapshots; verify; measure",
    doc_md=__doc__,
    schedule="0 6 1 3,6,9,12 *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "drill", "volumes", "quarterly"],
    params={
        "mode": Param("non_disruptive", enum=["disruptive", "non_disruptive"],
                      description="non_disruptive: into scratch (default); disruptive: in place (drill environments)"),
        "backend": Param("object_store", enum=["object_store", "ebs"]),
        "volume_id": Param("", type="string", description="empty: a random sample, the largest and the critical ones"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, DAG_ID),
) as dag:
    drill_frame(
        scenario=SCENARIO, component=COMPONENT,
        # No fault: the restore is the rehearsal. Disruptive means in place, on the volumes' own hosts.
        guard=DrillGuard(operator=VolumeDrillGuardOperator, mode="{{ params.mode }}", fault=VolumeHosts,
                         harm="it restores over the volumes in place", harms=(),
                         stop_conditions=StopConditions().to_dict(),
                         options={"volume_ids": "{{ params.volume_id }}"}),
        runbook=lambda drill: volume_restore(mode="drill", volume_ids=drill.guard.output["volume_ids"], target=TARGET,
                                             backend="{{ params.backend }}", approve="auto", targets_critical=True),
        rehearses=Rehearsed(RUNBOOK_DAG_ID, GROUP_ID),
        # The runbook's own verification measures each volume's restore time and snapshot age.
        report_inputs=lambda drill: {"approval": drill.runbook.approve.output,
                                     "measurement": drill.runbook.verify.output},
        teardown=lambda drill: [CleanUpRestoredVolumesOperator(task_id="clean_up_restored_volumes", **IDEMPOTENT)],
    )
