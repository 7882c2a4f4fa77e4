"""
### Scenario D: snapshot store loss

The plan's Scenario D, step by step: maintain operational service but accept reduced restore ability, then
restore it.

**Steps** (task group `scenario_d`)
1. `confirm_blast_radius`: which buckets, index entries and chunks are missing or unreadable, against the
   replica and the index backup; which volumes and snapshots that touches.
2. `find_backups_elsewhere`: the replica in the second region (its age; a stale one is refused by name) and the
   index backup.
3. `raise_snapshot_frequency_if_healthy`: only while the store is healthy (never write into a failing store);
   skipped, saying why, otherwise.
4. `restore_snapshot_store`: every chunk copied back from the replica with its checksum verified, the index
   rebuilt from the index backup and the replica, every referenced chunk present.
5. `volume_restore.*`: the volume-restore runbook for at least one volume, into scratch, byte for byte.
6. `report_restore_points`: per volume, the newest restore point now available and its age.
7. `put_snapshot_frequency_back`: the interval step 3 raised goes back to what it was (always); when it cannot,
   the run ends `degraded`, saying so.
8. `clean_up_proof_restore`: the scratch restore goes (always).

**Params**: `mode` (required), `volume_id` (the volume(s) whose restore proves the store; default `vol-1`),
`approve`.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from rehearsal_airflow.deadlines import rto_deadline
from rehearsal_airflow.operators.report import RunReportOperator
from rehearsal_airflow.runbooks.snapshot_store_loss import (
    GROUP_ID,
    IDEMPOTENT,
    SCENARIO,
    SCENARIO_DAG_ID,
    snapshot_store_loss,
)

COMPONENT = "volume_restore"

with DAG(
    dag_id=SCENARIO_DAG_ID,
    description="Scenario D: confirm the blast radius, restore the snapshot store from its backups, prove a restore",
    doc_md=__doc__,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "scenario", "volumes"],
    params={
        "mode": Param(type="string", enum=["incident", "drill"], title="Mode",
                      description="incident: a real one; drill: a rehearsal (labels the run; no default)"),
        "volume_id": Param("vol-1", type="string", minLength=1, title="Volume(s) to prove the store with"),
        "approve": Param("wait", type="string", enum=["wait", "auto"], title="Approval"),
    },
    default_args={"owner": "sre", "retries": 0},
    deadline=rto_deadline(COMPONENT, SCENARIO_DAG_ID),
) as dag:
    scenario = snapshot_store_loss(mode="{{ params.mode }}", volume_ids="{{ params.volume_id }}",
                                   approve="{{ params.approve }}")
    report = RunReportOperator(
        task_id="write_scenario_report", scenario=SCENARIO, component=COMPONENT, gate=scenario.blast_radius.output,
        mode="{{ params.mode }}", runbook={"dag_id": SCENARIO_DAG_ID, "group": GROUP_ID},
        recovery=scenario.restore_store.output, **IDEMPOTENT)
    scenario.group >> report
