"""Backup freshness: how old the newest base backup, archived WAL and logical dump are, against RPO."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from rehearsal.backups.store import BackupStore
from rehearsal.catalog import Asset
from rehearsal.errors import ManifestError


@dataclass(frozen=True)
class Freshness:
    asset: str
    kind: str
    newest: str | None
    newest_at: str | None
    age_seconds: float | None
    max_age_seconds: float
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(asset: Asset, newest: str | None, newest_at: datetime | None, now: datetime) -> Freshness:
    limit = asset.max_age.total_seconds()
    if newest_at is None:
        return Freshness(asset.name, asset.kind, None, None, None, limit, False, f"{asset.name}: no {asset.kind} exists")
    age = (now - newest_at).total_seconds()
    ok = age <= limit
    detail = (f"{asset.name}: newest {asset.kind} {newest} is {age:.0f}s old, within {limit:.0f}s" if ok else
              f"{asset.name}: newest {asset.kind} {newest} is {age:.0f}s old, {age - limit:.0f}s over its {limit:.0f}s limit")
    return Freshness(asset.name, asset.kind, newest, newest_at.isoformat(), age, limit, ok, detail)


def newest_backup(store: BackupStore, kind: str) -> tuple[str | None, datetime | None]:
    """Newest artifact of a kind and when it was completed."""
    if kind == "wal_archive":
        newest = None
        for obj in store.iter_objects(store.prefix("wal_archive")):
            if newest is None or obj.last_modified > newest.last_modified:
                newest = obj
        return (newest.key.rsplit("/", 1)[-1], newest.last_modified) if newest else (None, None)
    ids = store.backup_ids(kind)
    for backup_id in reversed(ids):
        try:
            manifest = store.manifest(kind, backup_id)
        except ManifestError:
            continue  # an unreadable manifest is not a backup we can count on
        return backup_id, manifest.stop_time
    return None, None


def check_assets(store: BackupStore, assets: list[Asset], now: datetime) -> list[Freshness]:
    return [evaluate(asset, *newest_backup(store, asset.kind), now) for asset in assets]


def evaluate_probes(asset: Asset, rounds: list[dict], now: datetime) -> Freshness:
    """The app runtime's promise over the last ``max_age``: the prober ran (its newest round within the window)
    and every endpoint answered in every round; the worst round is named otherwise."""
    limit = asset.max_age.total_seconds()
    if not rounds:
        return Freshness(asset.name, asset.kind, None, None, None, limit, False,
                         f"{asset.name}: no probe round in the last {limit:.0f}s (is the prober running?)")
    newest = max(rounds, key=lambda r: r["t"])
    age = now.timestamp() - newest["t"]
    failing = [r for r in rounds if r["ok"] < r["endpoints"]]
    when = datetime.fromtimestamp(newest["t"], now.tzinfo).isoformat()
    if failing:
        worst = min(failing, key=lambda r: r["ok"] / r["endpoints"] if r["endpoints"] else 1)
        detail = (f"{asset.name}: {len(failing)} of {len(rounds)} probe round(s) in the last {limit:.0f}s had endpoints "
                  f"down; worst {worst['ok']}/{worst['endpoints']} at "
                  f"{datetime.fromtimestamp(worst['t'], now.tzinfo).isoformat()}: {', '.join(worst.get('failed', [])[:5])}")
        return Freshness(asset.name, asset.kind, "probe round", when, age, limit, False, detail)
    if not any(r["endpoints"] for r in rounds):
        return Freshness(asset.name, asset.kind, "probe round", when, age, limit, False,
                         f"{asset.name}: the prober found no endpoint to probe in {len(rounds)} round(s)")
    return Freshness(asset.name, asset.kind, "probe round", when, age, limit, True,
                     f"{asset.name}: every endpoint answered in all {len(rounds)} probe round(s) of the last {limit:.0f}s "
                     f"({newest['endpoints']} endpoints; newest round {age:.0f}s old)")


def edge_export_freshness(store: BackupStore, asset: Asset, now: datetime) -> Freshness:
    """The newest edge-configuration export whose manifest checksums verify, by its export time, against the asset's
    limit; newer exports that do not verify do not count, and are named."""
    from rehearsal.edge_config import EXPORT_PREFIX, EdgeExportMissing, newest_verified_export

    try:
        chosen = newest_verified_export(store)
    except EdgeExportMissing as exc:
        limit = asset.max_age.total_seconds()
        return Freshness(asset.name, asset.kind, None, None, None, limit, False, f"{asset.name}: {exc}")
    result = evaluate(asset, chosen.export_id, datetime.fromisoformat(chosen.manifest.exported_at), now)
    if chosen.skipped:
        detail = (f"{result.detail}; newer export(s) under s3://{store.bucket}/{EXPORT_PREFIX} that do not verify: "
                  + "; ".join(chosen.skipped))
        result = Freshness(**{**result.to_dict(), "detail": detail})
    return result
