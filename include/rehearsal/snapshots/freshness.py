"""Snapshot freshness and replica lag from index keys alone: one listing call per 1000 snapshots, whatever the
number of volumes, and memory for one newest key per volume (the listing is streamed, never held)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from rehearsal.snapshots.store import IndexKey, SnapshotStore, StoreUnavailable, record_dict


@dataclass(frozen=True)
class VolumeFreshness:
    """One volume's newest restorable snapshot and its age against the limit."""

    volume_id: str
    newest_snapshot: str | None
    newest_at: str | None
    age_seconds: float | None
    max_age_seconds: float
    ok: bool
    detail: str
    failed_since: int = 0  # snapshots in state error newer than the newest completed one

    def to_dict(self) -> dict:
        return record_dict(self)


@dataclass
class FreshnessReport:
    """Every asked-for volume's freshness; ``stale`` and ``missing`` name the volumes that fail."""

    store: str
    max_age_seconds: float
    volumes: list[VolumeFreshness]
    stale: list[str]
    missing: list[str]
    index_keys: int  # keys listed (all volumes, not only those asked for)
    pages: int  # listing calls
    api_calls: int
    ok: bool
    detail: str
    damaged: list[str] = field(default_factory=list)  # volumes whose newest snapshot depends on a chunk the scrub marked bad

    def to_dict(self) -> dict:
        return record_dict(self)


def evaluate_volume(volume_id: str, newest: IndexKey | None, failed_since: int, max_age: timedelta,
                    now: datetime, bad_chunks: list[str] | None = None) -> VolumeFreshness:
    """``bad_chunks``: the chunks the scrub marked bad that ``newest`` references (then it is not ok, whatever
    its age, until a newer snapshot no longer depends on them)."""
    limit = max_age.total_seconds()
    failed = f"; {failed_since} newer snapshot(s) ended in state error" if failed_since else ""
    if newest is None:
        return VolumeFreshness(volume_id, None, None, None, limit, False,
                               f"volume {volume_id}: no completed snapshot in the index{failed}", failed_since)
    age = (now - newest.created_at).total_seconds()
    if bad_chunks:
        return VolumeFreshness(volume_id, newest.snapshot_id, newest.created_at.isoformat(), age, limit, False,
                               f"volume {volume_id}: newest completed snapshot {newest.snapshot_id} ({age:.0f}s old) "
                               f"depends on {len(bad_chunks)} chunk(s) the scrub found bad: {', '.join(bad_chunks[:5])}; "
                               f"not restorable until a new snapshot no longer depends on them{failed}", failed_since)
    ok = age <= limit
    detail = (f"volume {volume_id}: newest completed snapshot {newest.snapshot_id} is {age:.0f}s old, within "
              f"{limit:.0f}s{failed}" if ok else
              f"volume {volume_id}: newest completed snapshot {newest.snapshot_id} is {age:.0f}s old, "
              f"{age - limit:.0f}s over its {limit:.0f}s limit{failed}")
    return VolumeFreshness(volume_id, newest.snapshot_id, newest.created_at.isoformat(), age, limit, ok, detail,
                           failed_since)


def volume_freshness(store: SnapshotStore, volume_ids: Iterable[str], max_age: timedelta,
                     now: datetime | None = None,
                     damaged: Mapping[tuple[str, str], list[str]] | None = None) -> FreshnessReport:
    """Each volume's newest completed snapshot and its age, from one streamed listing of the whole index.

    API calls equal the listing's pages (keys / 1000, rounded up), not the number of volumes; memory holds one
    newest key per asked-for volume. Volumes with no completed snapshot are ``missing``; older than
    ``max_age`` are ``stale``. ``damaged`` (``rehearsal.snapshots.scrub.damaged_snapshots``: (volume, snapshot) ->
    bad chunks it references) makes a volume ``damaged`` while its newest completed snapshot is among them.
    """
    now = now or datetime.now(UTC)
    wanted = dict.fromkeys(volume_ids)
    newest: dict[str, IndexKey] = {}
    failed_since: dict[str, int] = {}
    calls_before, pages_before = store.api_calls, store.calls.by_operation["list_objects_v2"]
    listed = 0
    for key in store.index_entries():
        listed += 1
        volume = key.volume_id
        if volume not in wanted:
            continue
        best = newest.get(volume)
        if key.restorable:
            if best is None or key.created_at >= best.created_at:
                newest[volume] = key
                failed_since[volume] = 0
        elif best is None or key.created_at > best.created_at:
            failed_since[volume] = failed_since.get(volume, 0) + 1
    damaged = damaged or {}
    results = [evaluate_volume(v, newest.get(v), failed_since.get(v, 0), max_age, now,
                               damaged.get((v, newest[v].snapshot_id)) if v in newest else None) for v in wanted]
    missing = [r.volume_id for r in results if r.newest_snapshot is None]
    hurt = [v for v in wanted if v in newest and (v, newest[v].snapshot_id) in damaged]
    stale = [r.volume_id for r in results if r.newest_snapshot is not None and not r.ok and r.volume_id not in hurt]
    pages = store.calls.by_operation["list_objects_v2"] - pages_before
    limit = max_age.total_seconds()
    ok = not missing and not stale and not hurt
    detail = (f"all {len(results)} volume(s) have a completed snapshot within {limit:.0f}s" if ok else
              f"{len(stale)} stale, {len(missing)} without a completed snapshot, "
              + (f"{len(hurt)} whose newest depends on a bad chunk, " if hurt else "")
              + f"of {len(results)} volume(s) (limit {limit:.0f}s)" + (f"; stale: {', '.join(stale[:10])}" if stale else "")
              + (f"; missing: {', '.join(missing[:10])}" if missing else "")
              + ("; damaged: " + "; ".join(r.detail for r in results if r.volume_id in hurt[:10]) if hurt else ""))
    return FreshnessReport(store.url, limit, results, stale, missing, listed, pages, store.api_calls - calls_before,
                           ok, detail, hurt)


@dataclass(frozen=True)
class ReplicaLag:
    """How far the replica's index trails the primary's: newest entry (any state) in each, the difference."""

    primary: str
    replica: str
    primary_newest: str | None
    primary_newest_at: str | None
    replica_newest: str | None
    replica_newest_at: str | None
    primary_entries: int
    replica_entries: int
    lag_seconds: float | None
    max_lag_seconds: float | None
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return record_dict(self)


def newest_entry(store: SnapshotStore) -> tuple[IndexKey | None, int]:
    """The newest index key of any volume and state, and how many keys were listed (streamed)."""
    newest, count = None, 0
    for key in store.index_entries():
        count += 1
        if newest is None or key.created_at > newest.created_at:
            newest = key
    return newest, count


def replica_lag(primary: SnapshotStore, replica: SnapshotStore, max_lag: timedelta | None = None) -> ReplicaLag:
    """Seconds between the newest index entry in the primary and in the replica, from listing both.

    Not ok when the replica is missing, holds no entry while the primary does, or trails by more than ``max_lag``.
    """
    limit = max_lag.total_seconds() if max_lag is not None else None
    problems = []
    try:
        p_newest, p_count = newest_entry(primary)
    except StoreUnavailable as exc:
        p_newest, p_count = None, 0
        problems.append(f"primary {exc}")
    try:
        r_newest, r_count = newest_entry(replica)
    except StoreUnavailable as exc:
        r_newest, r_count = None, 0
        problems.append(f"replica {exc}")
    lag = None
    if p_newest and r_newest:
        lag = max(0.0, (p_newest.created_at - r_newest.created_at).total_seconds())
        if limit is not None and lag > limit:
            problems.append(f"replica {replica.url} trails by {lag:.0f}s, over its {limit:.0f}s limit: newest "
                            f"{r_newest.snapshot_id} ({r_newest.created_at.isoformat()}), primary's "
                            f"{p_newest.snapshot_id} ({p_newest.created_at.isoformat()})")
    elif p_newest and not problems:
        problems.append(f"replica {replica.url} holds no index entry; the primary's newest is {p_newest.snapshot_id}")
    detail = "; ".join(problems) or (f"replica {replica.url} trails the primary by {lag:.0f}s" if lag is not None
                                     else "neither index holds an entry")
    return ReplicaLag(primary.url, replica.url, p_newest.snapshot_id if p_newest else None,
                      p_newest.created_at.isoformat() if p_newest else None,
                      r_newest.snapshot_id if r_newest else None, r_newest.created_at.isoformat() if r_newest else None,
                      p_count, r_count, lag, limit, not problems, detail)
