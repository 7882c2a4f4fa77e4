"""
### Runbook: restore a volume from its snapshot (`docs/ops/07-backup-restore-runbook.md`)

What the on-call engineer triggers when a customer's volume must come back: from the UI, the REST API, or
another DAG (Scenario D runs the same tasks).

**Steps** (task group `volume_restore`)
1. `choose_restore_points`: per volume, the snapshot asked for (it must be restorable) or the newest
   restorable one, with its age against the volume RPO.
2. `approve_restore`: an `in_place` restore in `incident` mode with `approve=wait` waits once for a person.
3. `restore_volumes`: `object_store`: every chunk fetched from the snapshot store and its sha256 checked, into a
   scratch folder of the run or in place (restored beside the volume, then swapped in; the previous bytes are kept
   beside it). `ebs`: a new EBS volume from the snapshot (copied to `region` when given), waited for, tagged with
   the run; its content is not checked on that backend, and the report says so.
4. `verify_restored_volumes`: byte for byte against the index (object store), or size, tags and state (EBS);
   each volume's restore time against the 4 h RTO and snapshot age against the 24 h RPO.

**Params**: `mode` (required), `volume_id` (`vol-3`, or `vol-3,vol-7`), `snapshot_id` (default: the newest
restorable), `target` (`scratch` or `in_place`), `backend` (`object_store` or `ebs`), `region` (EBS only),
`approve`. A scratch restore is left in place for inspection; the report names it.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.operators.report import RunReportOperator
from rehearsal_airflow.runbooks.volume_restore import GROUP_ID, IDEMPOTENT, RUNBOOK_DAG_ID, volume_restore

COMPONENT = "volume_restore"

with DAG(
    dag_id=RUNBOOK_DAG_ID,
    description="Runbook: restore volumes from their snapshots, verified byte for byte",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=2,
    tags=["dr", "runbook", "volumes"],
    params={
        "mode": Param(type="string", enum=["incident", "drill"], title="Mode",
                      description="incident: a real one; drill: a rehearsal (labels the run; no default)"),
        "volume_id": Param(type="string", minLength=1, title="Volume(s)", description="vol-3, or vol-3,vol-7"),
        "snapshot_id": Param("", type="string", title="Snapshot", description="empty: the newest restorable"),
        "target": Param("scratch", type="string", enum=["scratch", "in_place"], title="Target",
                        description="in_place replaces the volume's bytes (an incident waits for approval)"),
        "backend": Param("object_store", type="string", enum=["object_store", "ebs"], title="Backend"),
        "region": Param("", type="string", title="Region (EBS)", description="copy the snapshot to this region first"),
        "approve": Param("wait", type="string", enum=["wait", "auto"], title="Approval"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, RUNBOOK_DAG_ID),
) as dag:
    runbook = volume_restore(mode="{{ params.mode }}", volume_ids="{{ params.volume_id }}",
                             snapshot_id="{{ params.snapshot_id }}", target="{{ params.target }}",
                             backend="{{ params.backend }}", region="{{ params.region }}", approve="{{ params.approve }}")
    report = RunReportOperator(
        task_id="write_runbook_report", scenario="Volume restore runbook", component=COMPONENT,
        gate=runbook.choose.output, mode="{{ params.mode }}", runbook={"dag_id": RUNBOOK_DAG_ID, "group": GROUP_ID},
        approval=runbook.approve.output, measurement=runbook.verify.output, **IDEMPOTENT)
    runbook.group >> report
