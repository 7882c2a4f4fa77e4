"""SnapshotStoreScrubOperator: one scheduled scrub of the volume snapshot store (``rehearsal.snapshots.scrub``)."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from airflow.sdk import Context

from rehearsal.errors import RehearsalError
from rehearsal.snapshots.scrub import DEFAULT_INTERVAL, DEFAULT_PERIOD
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import DrillStepOperator
from rehearsal_airflow.operators.volumes import StoreMixin


class SnapshotStoreDamaged(RehearsalError):
    """The scrub found a corrupt or missing chunk (or an unreadable index entry); the message names each chunk with
    every volume and snapshot that references it."""

    kind = "verification_failed"


class SnapshotStoreScrubOperator(StoreMixin, DrillStepOperator):
    """Read this run's share of the store's chunks (every chunk at least once per ``period`` when run every
    ``interval``) and every chunk marked bad, check each one's sha256; check every index entry's chunk references
    against the listing. The state (rotation cursor, bad chunks and who references them) is written to the store
    itself before the verdict. Fails naming every bad chunk with the volumes and snapshots that reference it.

    :param period_seconds: every chunk read at least once in this long (default 7 days)
    :param interval_seconds: how often the DAG runs (its schedule); sets the share each run reads
    :param full: read every chunk this run
    :param workers: parallel GETs
    """

    template_fields: Sequence[str] = ("full",)

    def __init__(self, *, period_seconds: float = DEFAULT_PERIOD.total_seconds(),
                 interval_seconds: float = DEFAULT_INTERVAL.total_seconds(), full: bool | str = False, workers: int = 8,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.period_seconds, self.interval_seconds, self.full, self.workers = period_seconds, interval_seconds, full, workers

    def run_step(self, context: Context) -> dict:
        from rehearsal.snapshots.scrub import scrub_store

        if not current_environment().snapshot_bucket:
            raise SnapshotStoreDamaged("the rehearsal_environment Variable names no snapshot_bucket: nothing to scrub")
        store = self.snapshots().primary
        full = self.full if isinstance(self.full, bool) else str(self.full).strip().lower() in ("true", "1", "yes")
        record = scrub_store(store, timedelta(seconds=float(self.period_seconds)),
                             timedelta(seconds=float(self.interval_seconds)), full=full, workers=int(self.workers))
        for check in record.checks:
            self.log.info("%s %s: %s", "ok" if check["ok"] else "FAILED", check["name"], check["detail"])
        out = record.to_dict()
        if not record.ok:
            raise SnapshotStoreDamaged(f"scrub of {record.store}: {record.detail}")
        return out
