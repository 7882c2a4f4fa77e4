"""BackupFreshnessOperator: newest base backup, archived WAL and dump against the catalog's limits."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from airflow.sdk import Context

from rehearsal.catalog import BACKUP_KINDS, load_catalog
from rehearsal.errors import RehearsalError
from rehearsal.freshness import check_assets
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.backup_store import BackupStoreHook
from rehearsal_airflow.operators.base import DrillStepOperator


class StaleBackup(RehearsalError):
    """A backup asset is older than its RPO allows."""


class BackupFreshnessOperator(DrillStepOperator):
    """:param assets: catalog asset names (default: every asset in the catalog)"""

    template_fields: Sequence[str] = ("bucket",)

    def __init__(self, *, assets: list[str] | None = None, bucket: str | None = None, aws_conn_id: str = "aws_default",
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.assets = assets
        self.bucket = bucket
        self.aws_conn_id = aws_conn_id

    def run_step(self, context: Context) -> dict:
        catalog = load_catalog()
        assets = ([catalog.asset(a) for a in self.assets] if self.assets else
                  [a for a in catalog.assets.values() if a.kind in BACKUP_KINDS])
        env = current_environment()
        store = BackupStoreHook(self.bucket or env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        results = check_assets(store, assets, datetime.now(UTC))
        for r in results:
            self.log.info("%s %s", "fresh" if r.ok else "STALE", r.detail)
        stale = [r for r in results if not r.ok]
        if stale:
            raise StaleBackup("stale backups: " + "; ".join(r.detail for r in stale))
        return {"assets": [r.to_dict() for r in results], "api_calls": store.api_calls,
                "checks": [{"name": f"fresh:{r.asset}", "ok": r.ok, "detail": r.detail, "critical": True} for r in results],
                "detail": "; ".join(r.detail for r in results)}


class AppRuntimeAvailabilityOperator(DrillStepOperator):
    """The app runtime's RPO-0 promise, watched like a backup's freshness: every ``data_plane_probe`` asset of the
    catalog against the blackbox prober's rounds (the environment's ``probe_log``)."""

    def run_step(self, context: Context) -> dict:
        from pathlib import Path

        from rehearsal.dataplane import read_probe_log
        from rehearsal.freshness import evaluate_probes

        env = current_environment()
        assets = [a for a in load_catalog().assets.values() if a.kind == "data_plane_probe"]
        now = datetime.now(UTC)
        if assets and not env.probe_log:
            raise StaleBackup("the rehearsal_environment Variable names no probe_log: the app runtime's availability "
                              "is not watched")
        results = [evaluate_probes(a, read_probe_log(Path(env.probe_log), now.timestamp() - a.max_age.total_seconds(),
                                                     now.timestamp() + 1), now) for a in assets]
        bad = [r for r in results if not r.ok]
        if bad:
            raise StaleBackup("app runtime not meeting its promise: " + "; ".join(r.detail for r in bad))
        return {"assets": [r.to_dict() for r in results],
                "checks": [{"name": f"available:{r.asset}", "ok": r.ok, "detail": r.detail, "critical": True} for r in results],
                "detail": "; ".join(r.detail for r in results) or "no data_plane_probe asset in the catalog"}
