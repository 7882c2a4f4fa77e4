"""Rebuild the snapshot store from its own backups into a new primary bucket.

Chunks come from the replica, each checked against its name on the way (a corrupt replica chunk is named and not
copied); the index is the union of the index backup and the replica's index, the newest copy of each key that
parses; then every chunk every completed entry references must be in the new primary. Safe to re-run: chunks
already in the target are not copied again. The replica and the index backup are only read.
"""
from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rehearsal.errors import PreconditionFailed, RestoreError
from rehearsal.snapshots.store import (
    ChunkCorrupt,
    ChunkMissing,
    IndexEntryInvalid,
    IndexKey,
    SnapshotStore,
    StoreUnavailable,
    parse_entry,
    record_dict,
)

NAMED = 50


@dataclass
class RebuildRecord:
    """What a rebuild copied and what it could not; ``ok`` only when every referenced chunk is in the target."""

    target: str
    replica: str
    index_backup: str | None
    chunks_copied: int
    chunks_already_present: int
    bytes_copied: int
    chunks_corrupt: dict[str, str]  # chunk -> what its replica copy hashes to (not copied)
    index_entries: int
    index_from_backup: int
    index_from_replica: int
    index_unreadable: dict[str, str]  # relative key -> why no copy could be used
    missing: dict[str, list[str]]  # chunk -> completed snapshots referencing it, absent from the target
    missing_count: int
    seconds: float
    api_calls: int
    ok: bool
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return record_dict(self)

    def raise_if_failed(self) -> None:
        if not self.ok:
            raise RestoreError(f"rebuild of {self.target}: " + "; ".join(self.problems))


def _copy_chunks(replica: SnapshotStore, target: SnapshotStore, present: set[str], workers: int,
                 record: RebuildRecord) -> None:
    def copy(digest: str) -> int:
        data = replica.read_chunk(digest)  # ChunkCorrupt when the bytes do not hash to the name
        target.put_chunk(data, digest)
        return len(data)

    pending: dict[Future, str] = {}

    def collect() -> None:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            digest = pending.pop(future)
            try:
                record.bytes_copied += future.result()
                record.chunks_copied += 1
            except ChunkCorrupt as exc:
                record.chunks_corrupt[digest] = exc.actual
            except ChunkMissing:
                record.chunks_corrupt[digest] = "vanished from the replica between listing and copy"

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snapshot-rebuild") as pool:
        for chunk in replica.iter_chunks():
            if chunk.digest in present:
                record.chunks_already_present += 1
                continue
            while len(pending) >= workers * 2:
                collect()
            pending[pool.submit(copy, chunk.digest)] = chunk.digest
        while pending:
            collect()


def _sources(store: SnapshotStore | None, label: str, keys: dict[str, list[tuple[IndexKey, SnapshotStore, str]]],
             problems: list[str]) -> None:
    if store is None:
        return
    try:
        for key in store.index_entries():
            keys.setdefault(key.relative_key, []).append((key, store, label))
    except StoreUnavailable as exc:
        problems.append(f"{label} {exc}")


def rebuild_store(replica: SnapshotStore, index_backup: SnapshotStore | None, target: SnapshotStore,
                  workers: int = 8) -> RebuildRecord:
    """Fill ``target`` (an existing, new bucket) with the replica's chunks and the union of both indexes.

    Returns the record; ``raise_if_failed`` raises RestoreError naming corrupt chunks, unreadable index entries
    and chunks still missing.
    """
    started = time.monotonic()
    calls_before = sum(s.api_calls for s in {id(s): s for s in (replica, index_backup, target) if s}.values())
    record = RebuildRecord(target.url, replica.url, index_backup.url if index_backup else None, 0, 0, 0, {}, 0, 0, 0,
                           {}, {}, 0, 0.0, 0, False)
    try:
        present = {c.digest for c in target.iter_chunks()}
    except StoreUnavailable as exc:
        raise PreconditionFailed(f"rebuild target {exc}: create the new primary bucket first") from None
    try:
        _copy_chunks(replica, target, present, max(1, workers), record)
    except StoreUnavailable as exc:
        record.problems.append(f"replica {exc}: no chunk could be copied")

    # the index: newest readable copy of each key, from the index backup and the replica
    keys: dict[str, list[tuple[IndexKey, SnapshotStore, str]]] = {}
    _sources(index_backup, "index backup", keys, record.problems)
    _sources(replica, "replica", keys, record.problems)
    epoch = datetime.min.replace(tzinfo=UTC)
    referenced: dict[str, list[str]] = {}
    for rel, candidates in sorted(keys.items()):
        candidates.sort(key=lambda c: c[0].last_modified or epoch, reverse=True)
        reasons = []
        for key, source, label in candidates:
            try:
                body = source.read_index_object(key.key)
                entry = parse_entry(body, source.location(key.key))
            except IndexEntryInvalid as exc:
                reasons.append(str(exc))
                continue
            target.write_index_object(target.prefix + rel, body)
            record.index_entries += 1
            if label == "index backup":
                record.index_from_backup += 1
            else:
                record.index_from_replica += 1
            if entry.restorable:
                for digest in entry.chunk_names():
                    refs = referenced.setdefault(digest, [])
                    if len(refs) < 5:
                        refs.append(entry.snapshot_id)
            break
        else:
            record.index_unreadable[rel] = "; ".join(reasons)

    # every chunk every completed entry references must now be in the target
    in_target = {bytes.fromhex(c.digest) for c in target.iter_chunks()}
    missing = {d: refs for d, refs in referenced.items() if bytes.fromhex(d) not in in_target}
    record.missing = dict(sorted(missing.items())[:NAMED])
    record.missing_count = len(missing)
    if record.chunks_corrupt:
        record.problems.append(f"{len(record.chunks_corrupt)} corrupt chunk(s) in the replica {replica.url}, not "
                               f"copied: " + ", ".join(f"{d} hashes to {a}" for d, a in list(record.chunks_corrupt.items())[:5]))
    if record.index_unreadable:
        record.problems.append(f"{len(record.index_unreadable)} index entr(y/ies) unreadable in every copy: "
                               + ", ".join(list(record.index_unreadable)[:5]))
    if missing:
        record.problems.append(f"{len(missing)} chunk(s) referenced by completed snapshots are not in {target.url}: "
                               + ", ".join(f"{d} (snapshot {', '.join(r)})" for d, r in list(missing.items())[:5]))
    record.chunks_corrupt = dict(list(record.chunks_corrupt.items())[:NAMED])
    record.ok = not record.problems
    record.seconds = round(time.monotonic() - started, 3)
    record.api_calls = sum(s.api_calls for s in {id(s): s for s in (replica, index_backup, target) if s}.values()) - calls_before
    return record
