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


class VolumeSnapshotFreshnessOperator(DrillStepOperator):
    """Every volume of the platform (the control-plane database's ``volumes`` table) has a restorable snapshot
    within the volume RPO, from the store's index keys alone (API calls bounded by listing pages, not volumes);
    the replica's lag and the index backup's age within their limits. Stale volumes are named by id. A volume whose
    newest snapshot depends on a chunk the scrub (``dr_snapshot_store_scrub``) found corrupt or missing is red too,
    naming the chunk, until a new snapshot no longer depends on it.

    :param volume_ids: the volumes to check (default: every volume of the platform's inventory)"""

    aws_conn_id = "aws_default"

    def __init__(self, *, volume_ids: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.volume_ids = volume_ids

    def run_step(self, context: Context) -> dict:
        from rehearsal.catalog import SNAPSHOT_KINDS
        from rehearsal.snapshots import replica_lag, volume_freshness
        from rehearsal.snapshots.freshness import newest_entry
        from rehearsal.snapshots.scrub import damaged_snapshots, read_state
        from rehearsal_airflow.hooks.controlplane_db import ControlPlaneDbHook
        from rehearsal_airflow.hooks.snapshot_store import SnapshotStoreHook
        from rehearsal_airflow.operators.snapshot_store import volume_inventory

        env = current_environment()
        assets = [a for a in load_catalog().assets.values() if a.kind in SNAPSHOT_KINDS]
        if not assets:
            return {"detail": "no volume snapshot asset in the catalog"}
        if not env.snapshot_bucket:
            raise StaleBackup(f"the catalog watches {', '.join(a.name for a in assets)} but the rehearsal_environment "
                              "Variable names no snapshot_bucket: volume snapshots are not watched")
        hook = SnapshotStoreHook(env, self.aws_conn_id)
        now = datetime.now(UTC)
        checks, details, calls = [], [], 0
        for asset in assets:
            if asset.kind == "volume_snapshots":
                volumes = self.volume_ids or [v["volume_id"] for v in volume_inventory(
                    ControlPlaneDbHook("controlplane_admin", self.aws_conn_id))]
                report = volume_freshness(hook.primary, volumes, asset.max_age, now,
                                          damaged_snapshots(read_state(hook.primary)))
                calls += report.api_calls
                ok, detail = report.ok, (f"{asset.name}: {len(volumes)} volume(s), " + (report.detail if not report.ok else
                                         f"each with a restorable snapshot within {asset.max_age.total_seconds():.0f}s")
                                         + f" ({report.pages} listing page(s))")
            elif asset.kind == "snapshot_replica":
                if hook.replica is None:
                    ok, detail = False, f"{asset.name}: the environment names no snapshot replica"
                else:
                    lag = replica_lag(hook.primary, hook.replica, asset.max_age)
                    ok, detail = lag.ok, f"{asset.name}: {lag.detail}"
            else:
                if hook.index_backup is None:
                    ok, detail = False, f"{asset.name}: the environment names no index backup"
                else:
                    newest, count = newest_entry(hook.index_backup)
                    age = None if newest is None else (now - newest.created_at).total_seconds()
                    ok = age is not None and age <= asset.max_age.total_seconds()
                    detail = (f"{asset.name}: {count} entries, newest {newest.snapshot_id} {age:.0f}s old "
                              f"(limit {asset.max_age.total_seconds():.0f}s)" if newest else f"{asset.name}: the index backup is empty")
            checks.append({"name": f"fresh:{asset.name}", "ok": ok, "detail": detail, "critical": True})
            details.append(detail)
        stale = [c["detail"] for c in checks if not c["ok"]]
        if stale:
            raise StaleBackup("stale volume snapshots: " + "; ".join(stale))
        return {"checks": checks, "api_calls": calls, "detail": "; ".join(details)}


class EdgeConfigFreshnessOperator(DrillStepOperator):
    """Every ``edge_config_export`` asset of the catalog: the newest export of the edge configuration whose manifest
    checksums verify is within its limit (a newer corrupt or incomplete one does not count, and is named)."""

    def __init__(self, *, bucket: str | None = None, aws_conn_id: str = "aws_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.bucket = bucket
        self.aws_conn_id = aws_conn_id

    def run_step(self, context: Context) -> dict:
        from rehearsal.catalog import EDGE_KINDS
        from rehearsal.freshness import edge_export_freshness

        assets = [a for a in load_catalog().assets.values() if a.kind in EDGE_KINDS]
        if not assets:
            return {"detail": "no edge_config_export asset in the catalog"}
        env = current_environment()
        store = BackupStoreHook(self.bucket or env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        results = [edge_export_freshness(store, a, datetime.now(UTC)) for a in assets]
        stale = [r for r in results if not r.ok]
        if stale:
            raise StaleBackup("stale edge configuration: " + "; ".join(r.detail for r in stale))
        return {"assets": [r.to_dict() for r in results], "api_calls": store.api_calls,
                "checks": [{"name": f"fresh:{r.asset}", "ok": r.ok, "detail": r.detail, "critical": True} for r in results],
                "detail": "; ".join(r.detail for r in results)}


class KeysAndSecretsStateOperator(DrillStepOperator):
    """The ``kms_key_state`` and ``secrets_canary`` assets of the catalog, as they are now: every KMS key the secrets
    depend on Enabled in every region (read from its description), the canary decrypting in every region, every
    secrets file valid (``rehearsal_airflow.operators.keys``). A key disabled or pending deletion is a Sev0 finding."""

    def __init__(self, *, secrets_conn_id: str = "rehearsal_secrets", aws_conn_id: str = "aws_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.secrets_conn_id = secrets_conn_id
        self.aws_conn_id = aws_conn_id

    def run_step(self, context: Context) -> dict:
        from rehearsal.catalog import STATE_KINDS
        from rehearsal.secrets import KeysNotRecoverable
        from rehearsal_airflow.operators.keys import check_recoverability, kms_client, secrets_settings

        assets = [a for a in load_catalog().assets.values() if a.kind in STATE_KINDS]
        if not assets:
            return {"detail": "no kms_key_state or secrets_canary asset in the catalog"}
        result = check_recoverability(secrets_settings(self.secrets_conn_id),
                                      lambda region: kms_client(self.aws_conn_id, region), None)
        prefixes = {"kms_key_state": ("key_state:",), "secrets_canary": ("canary:", "secrets_files:")}
        checks, bad = [], []
        for asset in assets:
            mine = [c for c in result.checks() if c["name"].startswith(prefixes[asset.kind])]
            failed = [c["detail"] for c in mine if not c["ok"]]
            detail = (f"{asset.name}: " + ("; ".join(failed) if failed else
                      f"{len(mine)} check(s) pass ({', '.join(c['name'] for c in mine)})" if mine else "nothing to check"))
            ok = bool(mine) and not failed
            checks.append({"name": f"state:{asset.name}", "ok": ok, "detail": detail, "critical": True})
            if not ok:
                bad.append(detail)
        if bad:
            sev = "Sev0" if result.sev0 else "Sev1"
            raise KeysNotRecoverable(f"{sev}: keys and secrets not recoverable: " + "; ".join(bad))
        return {"checks": checks, "findings": [f.to_dict() for f in result.findings],
                "detail": "; ".join(c["detail"] for c in checks)}
