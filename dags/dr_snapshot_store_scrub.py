"""
### Snapshot store scrub (every 6 hours)

The volume snapshot store deduplicates chunks: one corrupt or lost chunk silently breaks every later snapshot that
shares it, and freshness reads index keys only. Each run reads a rotating share of the store's chunks and checks each
one's sha256 against its name (every chunk is read at least once every 7 days; a run that finds earlier runs missed
reads their share too), reads again every chunk marked bad, and checks every index entry's chunk references against
the chunk listing.

A corrupt or missing chunk fails the run, named with every volume and snapshot that references it. The finding is
kept in the store (`<prefix>scrub/state.json`), not on a worker: `dr_backup_freshness` holds each volume whose newest
snapshot depends on it red, and the snapshotter uploads the chunk again instead of deduplicating against it, so the
volume's next snapshot is restorable and the next scrub clears the mark once the chunk reads right.
Trigger with `{"full": true}` to read every chunk now.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from rehearsal.snapshots.scrub import DEFAULT_PERIOD
from rehearsal_airflow.deadlines import rpo_deadline
from rehearsal_airflow.operators.snapshot_store_scrub import SnapshotStoreScrubOperator

SCRUB_INTERVAL = timedelta(hours=6)

with DAG(
    dag_id="dr_snapshot_store_scrub",
    description="Scrub of the volume snapshot store: chunk checksums on a 7-day rotation, index references",
    doc_md=__doc__,
    schedule="0 */6 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=SCRUB_INTERVAL,
    deadline=rpo_deadline("volume_restore", "dr_snapshot_store_scrub"),  # the store unchecked longer than the volume RPO
    params={"full": Param(False, type="boolean", description="read every chunk this run, not only this run's share")},
    tags=["dr", "backups", "monitoring", "volumes"],
    default_args={"owner": "sre", "retries": 1, "retry_delay": timedelta(minutes=5)},
) as dag:
    SnapshotStoreScrubOperator(task_id="scrub_snapshot_store", period_seconds=DEFAULT_PERIOD.total_seconds(),
                               interval_seconds=SCRUB_INTERVAL.total_seconds(), full="{{ params.full }}")
