"""Snapshot store health and blast radius: what the primary lost that its replica or index backup still holds.

Compares the primary store with a replica store (another bucket, perhaps another region's client) and an index
backup (a bucket/prefix holding copies of the index objects), and reports: buckets that do not exist; index
entries missing from the primary, or unreadable there (empty, not parseable, or differing from every copy's
ETag); chunks that readable entries reference but the primary lacks (and whether the replica still has them);
the snapshots and volumes those touch; and the replica's lag.

Scales by listing: one call per 1000 keys of each index and chunk listing, plus one GET per primary index entry
when references are checked; never a HEAD per chunk.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from rehearsal.snapshots.store import (
    IndexEntryInvalid,
    IndexKey,
    SnapshotStore,
    StoreUnavailable,
    parse_entry,
    record_dict,
)

NAMED = 50  # offenders named per list; the counts are always complete


@dataclass
class StoreHealth:
    """The primary's health against its copies; ``problems`` says in words what is wrong, ``ok`` if nothing is."""

    primary: str
    replica: str | None
    index_backup: str | None
    buckets_missing: list[str]
    primary_entries: int
    primary_chunks: int
    index_missing: list[str]  # relative index keys a copy holds and the primary does not
    index_missing_count: int
    index_unreadable: dict[str, str]  # relative index key -> why it cannot be used
    index_unreadable_count: int
    chunks_missing: dict[str, list[str]]  # chunk -> snapshot ids referencing it (up to 5 each)
    chunks_missing_count: int
    chunks_missing_in_replica_too: list[str]  # of those, the ones no copy can bring back
    snapshots_affected: list[str]  # blast radius: snapshots with a missing chunk or a missing/unreadable entry
    volumes_affected: list[str]
    replica_newest_at: str | None
    primary_newest_at: str | None
    replica_lag_seconds: float | None
    max_replica_lag_seconds: float | None
    index_reads: int
    pages: int
    api_calls: int
    ok: bool
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return record_dict(self)


def _list_index(store: SnapshotStore, missing_buckets: list[str]) -> dict[str, IndexKey] | None:
    """Relative key -> index key; None when the bucket does not exist (recorded by name)."""
    try:
        return {k.relative_key: k for k in store.index_entries()}
    except StoreUnavailable:
        missing_buckets.append(store.bucket)
        return None


def _list_chunks(store: SnapshotStore, missing_buckets: list[str]) -> set[bytes] | None:
    try:
        return {bytes.fromhex(c.digest) for c in store.iter_chunks()}
    except StoreUnavailable:
        if store.bucket not in missing_buckets:
            missing_buckets.append(store.bucket)
        return None


def _calls(*stores: SnapshotStore | None) -> tuple[int, int]:
    unique = {id(s): s for s in stores if s is not None}.values()
    return sum(s.api_calls for s in unique), sum(s.calls.by_operation["list_objects_v2"] for s in unique)


def _compare_index(primary_keys: dict[str, IndexKey], copies: list[dict[str, IndexKey]]) -> tuple[list[str], dict[str, str]]:
    """Keys a copy holds and the primary does not; primary keys that are empty or differ from every copy's ETag."""
    missing = sorted({k for idx in copies for k in idx} - set(primary_keys))
    unreadable: dict[str, str] = {}
    for rel, key in primary_keys.items():
        etags = {idx[rel].etag for idx in copies if rel in idx}
        if key.size == 0:
            unreadable[rel] = "empty object"
        elif etags and key.etag not in etags:
            unreadable[rel] = f"content differs from every copy (ETag {key.etag}, copies {', '.join(sorted(etags))})"
    return missing, unreadable


def _missing_references(primary: SnapshotStore, primary_keys: dict[str, IndexKey], unreadable: dict[str, str],
                        chunks: set[bytes], affected: dict[str, str]) -> tuple[dict[str, list[str]], int]:
    """Read every usable primary entry (one GET each); chunks it references that the listing lacks."""
    missing: dict[str, list[str]] = {}
    reads = 0
    for rel, key in primary_keys.items():
        if rel in unreadable:
            continue
        reads += 1
        try:
            entry = parse_entry(primary.read_index_object(key.key), primary.location(key.key))
        except IndexEntryInvalid as exc:
            unreadable[rel] = str(exc)
            continue
        for digest in entry.chunk_names():
            if bytes.fromhex(digest) not in chunks:
                refs = missing.setdefault(digest, [])
                if len(refs) < 5:
                    refs.append(entry.snapshot_id)
                affected[entry.snapshot_id] = entry.volume_id
    return missing, reads


def _missing_from_replica(replica: SnapshotStore, digests: dict[str, list[str]], missing_buckets: list[str]) -> list[str]:
    """Of the chunks the primary lacks, those the replica's chunk listing lacks too (nothing can bring them back)."""
    wanted = {bytes.fromhex(d) for d in digests}
    found = set()
    try:
        for chunk in replica.iter_chunks():
            raw = bytes.fromhex(chunk.digest)
            if raw in wanted:
                found.add(raw)
    except StoreUnavailable:
        missing_buckets.append(replica.bucket)
    return sorted(d for d in digests if bytes.fromhex(d) not in found)


def store_health(primary: SnapshotStore, replica: SnapshotStore | None = None,
                 index_backup: SnapshotStore | None = None, check_references: bool = True,
                 max_replica_lag: timedelta | None = None) -> StoreHealth:
    """Health of ``primary`` against ``replica`` and ``index_backup`` (either may be None).

    :param check_references: read every primary index entry (one GET each) and compare the chunks it references
        with the primary's chunk listing; off, only listings are compared
    :param max_replica_lag: report the replica as stale when it trails the primary's newest entry by more
    """
    calls_before, pages_before = _calls(primary, replica, index_backup)
    missing_buckets: list[str] = []
    p_index = _list_index(primary, missing_buckets)
    r_index = _list_index(replica, missing_buckets) if replica else None
    b_index = _list_index(index_backup, missing_buckets) if index_backup else None
    primary_keys = p_index or {}
    copies = [idx for idx in (r_index, b_index) if idx is not None]
    missing_keys, unreadable = _compare_index(primary_keys, copies)
    affected: dict[str, str] = {}  # blast radius: snapshot id -> volume id
    for rel in missing_keys:
        key = next(idx[rel] for idx in copies if rel in idx)
        affected[key.snapshot_id] = key.volume_id

    chunks_missing: dict[str, list[str]] = {}
    index_reads = 0
    p_chunks = _list_chunks(primary, missing_buckets) if check_references and p_index is not None else None
    if p_chunks is not None:
        chunks_missing, index_reads = _missing_references(primary, primary_keys, unreadable, p_chunks, affected)
    for rel in unreadable:
        affected[primary_keys[rel].snapshot_id] = primary_keys[rel].volume_id
    gone_everywhere: list[str] = []
    if chunks_missing and replica is not None and r_index is not None:
        gone_everywhere = _missing_from_replica(replica, chunks_missing, missing_buckets)

    # replica lag, from the listings already made
    p_newest = max((k.created_at for k in primary_keys.values()), default=None)
    r_newest = max((k.created_at for k in (r_index or {}).values()), default=None)
    lag = max(0.0, (p_newest - r_newest).total_seconds()) if p_newest and r_newest else None
    limit = max_replica_lag.total_seconds() if max_replica_lag is not None else None

    problems = [f"bucket {bucket} does not exist (NoSuchBucket)" for bucket in missing_buckets]
    if missing_keys:
        problems.append(f"{len(missing_keys)} index entr(y/ies) missing from {primary.url} that a copy holds: "
                        f"{', '.join(missing_keys[:5])}")
    if unreadable:
        problems.append(f"{len(unreadable)} index entr(y/ies) unreadable in {primary.url}: "
                        + "; ".join(f"{k}: {v}" for k, v in list(unreadable.items())[:5]))
    if chunks_missing:
        problems.append(f"{len(chunks_missing)} chunk(s) referenced by the index missing from {primary.url} "
                        f"({len(gone_everywhere)} missing from the replica too), affecting snapshot(s) "
                        f"{', '.join(sorted({s for refs in chunks_missing.values() for s in refs})[:5])}")
    if replica is not None and r_index is not None and p_newest and r_newest is None:
        problems.append(f"replica {replica.url} holds no index entry")
    if replica is not None and lag is not None and limit is not None and lag > limit:
        problems.append(f"replica {replica.url} trails the primary by {lag:.0f}s, over its {limit:.0f}s limit")
    calls_after, pages_after = _calls(primary, replica, index_backup)
    return StoreHealth(
        primary.url, replica.url if replica else None, index_backup.url if index_backup else None,
        missing_buckets, len(primary_keys), len(p_chunks) if p_chunks is not None else 0,
        missing_keys[:NAMED], len(missing_keys), dict(list(unreadable.items())[:NAMED]), len(unreadable),
        dict(list(chunks_missing.items())[:NAMED]), len(chunks_missing), gone_everywhere[:NAMED],
        sorted(affected)[:NAMED], sorted(set(affected.values()))[:NAMED],
        r_newest.isoformat() if r_newest else None, p_newest.isoformat() if p_newest else None, lag, limit,
        index_reads, pages_after - pages_before, calls_after - calls_before, not problems, problems)
