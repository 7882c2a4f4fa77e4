"""
### Drill: snapshot store loss (twice a year)

Beyond the plan's three quarterly drills: in a drill environment it deletes the snapshot store's primary bucket
(or only its index, `scope=prefix`), then runs Scenario D (the very tasks of
`dr_scenario_d_snapshot_store_loss`) in `drill` mode, and measures it.

**Params**: `mode`: `disruptive` only (a non-disruptive variant cannot lose a store; the guard refuses it
saying so); `scope`: `bucket` or `prefix`; `volume_id`: the volume whose restore proves the rebuilt store.

**Measured**: RTO from the deletion to a volume restored from the rebuilt store and verified byte for byte; RPO
as, per volume, the time between its newest restore point after the rebuild and the loss (the worst volume).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from rehearsal.capabilities import SnapshotStoreFaults
from rehearsal.drills.stop_conditions import StopConditions
from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.drills.frame import DrillGuard, Rehearsed, drill_frame
from rehearsal_airflow.faults.snapshot_store import InjectSnapshotStoreLossOperator
from rehearsal_airflow.operators.snapshot_store import MeasureSnapshotStoreRecoveryOperator
from rehearsal_airflow.operators.volumes import VolumeDrillGuardOperator
from rehearsal_airflow.runbooks.snapshot_store_loss import GROUP_ID, SCENARIO_DAG_ID, snapshot_store_loss

DAG_ID = "dr_drill_snapshot_store_loss"
COMPONENT = "volume_restore"
SCENARIO = "Snapshot store loss (twice a year)"
IDEMPOTENT = {"retries": 1, "retry_delay": timedelta(seconds=5)}
NO_NON_DISRUPTIVE = ("it proves the store comes back from its own backups after a real loss; without deleting it "
                     "there is nothing to rebuild (the volume-restore drill already proves restores)")

with DAG(
    dag_id=DAG_ID,
    description="Drill: delete the snapshot store, run Scenario D, measure",
    doc_md=__doc__,
    schedule="0 6 15 4,10 *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "drill", "volumes"],
    params={
        "mode": Param("disruptive", enum=["disruptive", "non_disruptive"],
                      description="disruptive: really delete the store (drill environments only)"),
        "scope": Param("bucket", enum=["bucket", "prefix"], description="the whole bucket, or only its index"),
        "volume_id": Param("vol-1", type="string", minLength=1),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, DAG_ID),
) as dag:
    drill_frame(
        scenario=SCENARIO, component=COMPONENT,
        guard=DrillGuard(operator=VolumeDrillGuardOperator, mode="{{ params.mode }}", fault=SnapshotStoreFaults,
                         harm="it deletes the snapshot store", refuse_non_disruptive=NO_NON_DISRUPTIVE,
                         harms=("snapshot_store",), stop_conditions=StopConditions().to_dict(),
                         options={"volume_ids": "{{ params.volume_id }}"}),
        fault=lambda drill: InjectSnapshotStoreLossOperator(task_id="inject_snapshot_store_loss", guard=drill.guard.output,
                                                            scope="{{ params.scope }}"),
        runbook=lambda drill: snapshot_store_loss(mode="drill", volume_ids=drill.guard.output["volume_ids"], approve="auto"),
        rehearses=Rehearsed(SCENARIO_DAG_ID, GROUP_ID),
        measure=lambda drill: MeasureSnapshotStoreRecoveryOperator(task_id="measure_rto_rpo", fault=drill.fault.output,
                                                                   verified=drill.runbook.volumes.verify.output,
                                                                   **IDEMPOTENT),
        report_inputs=lambda drill: {"recovery": drill.runbook.restore_store.output},
    )
