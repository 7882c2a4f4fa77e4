"""Take a snapshot of a directory: chunk every file, upload only chunks the store lacks, write the index entry last.

Writing the index entry last is what makes a snapshot exist: a crash before it leaves only unreferenced chunks
(harmless, reused by the next attempt); a failure after the walk started is recorded as an ``error`` entry so
freshness sees the failed attempt but never counts it as restorable. The source is only ever read.
"""
from __future__ import annotations

import os
import stat
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import sha256
from pathlib import Path

from rehearsal.errors import BackupFailed, PreconditionFailed
from rehearsal.snapshots.scrub import bad_chunks as marked_bad
from rehearsal.snapshots.store import (
    STATE_COMPLETED,
    STATE_ERROR,
    FileEntry,
    IndexKey,
    SnapshotEntry,
    SnapshotStore,
    check_name,
    format_time,
    record_dict,
)


@dataclass
class SnapshotRecord:
    """What a snapshot took: how much was read, how much was new, and how long it took."""

    snapshot_id: str
    volume_id: str
    key: str
    created_at: str
    parent: str | None
    state: str
    files: int
    skipped: list[str]  # not regular files (symlinks, sockets, ...): not in the snapshot
    bytes_read: int
    bytes_uploaded: int
    chunks_total: int
    chunks_new: int
    chunks_reused: int
    seconds: float
    api_calls: int

    def to_dict(self) -> dict:
        return record_dict(self)


def walk_files(source: Path) -> Iterator[tuple[str, Path | None]]:
    """(relative POSIX path, absolute path) of every regular file under ``source``, sorted; None for the rest."""
    for root, dirs, names in os.walk(source, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            rel = path.relative_to(source).as_posix()
            yield rel, path if stat.S_ISREG(path.lstat().st_mode) else None


def iter_file_chunks(path: Path, chunk_size: int) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while data := fh.read(chunk_size):
            yield data


class _Uploader:
    """Uploads chunks the store lacks on a bounded pool: at most ``2 x workers`` chunks held in memory."""

    def __init__(self, store: SnapshotStore, known: set[str], workers: int, bad: set[str] | None = None) -> None:
        self.store = store
        self.known = known  # chunks certainly in the store (the parent's, or already handled in this snapshot)
        self.bad = bad or set()  # chunks the scrub marked corrupt or missing: uploaded again, never deduplicated
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="snapshot-upload")
        self.limit = workers * 2
        self.pending: set[Future] = set()
        self.new = self.reused = self.bytes_uploaded = 0

    def submit(self, digest: str, data: bytes) -> None:
        if digest in self.known:
            self.reused += 1
            return
        self.known.add(digest)
        while len(self.pending) >= self.limit:
            self._drain(FIRST_COMPLETED)
        self.pending.add(self.pool.submit(self._upload, digest, data))

    def _upload(self, digest: str, data: bytes) -> int:
        """Bytes uploaded: 0 when a HEAD finds the chunk already stored (chunks are never empty); a chunk marked
        bad is put again without asking (its stored bytes are wrong, or it is gone)."""
        if digest not in self.bad and self.store.has_chunk(digest):
            return 0
        self.store.put_chunk(data, digest)
        return len(data)

    def _drain(self, how: str) -> None:
        done, self.pending = wait(self.pending, return_when=how)
        for future in done:
            uploaded = future.result()
            self.new += uploaded > 0
            self.reused += uploaded == 0
            self.bytes_uploaded += uploaded

    def finish(self) -> None:
        try:
            if self.pending:
                self._drain("ALL_COMPLETED")
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)


def parent_chunks(store: SnapshotStore, parent: str | IndexKey | SnapshotEntry | None, volume_id: str) -> tuple[str | None, set[str]]:
    """The parent's id and the chunks it references (known present: no HEAD needed for them)."""
    if parent is None:
        return None, set()
    entry = parent if isinstance(parent, SnapshotEntry) else store.read_snapshot(parent, volume_id)
    return entry.snapshot_id, entry.chunk_names()


def take_snapshot(store: SnapshotStore, volume_id: str, source_dir: str | Path,
                  parent: str | IndexKey | SnapshotEntry | None = None, snapshot_id: str | None = None,
                  now: datetime | None = None, workers: int = 8, bad_chunks: set[str] | None = None) -> SnapshotRecord:
    """Snapshot every regular file under ``source_dir`` as volume ``volume_id``.

    Chunks of ``store.chunk_size``; a chunk is uploaded only when it is neither in the parent's entry nor found
    by a HEAD, so a second snapshot of an unchanged tree uploads nothing. The index entry is written last.

    :param parent: the previous snapshot (id, index key or entry): its chunks are known present
    :param snapshot_id: defaults to ``snap-<created_at>-<random>``
    :param now: the snapshot's created_at (defaults to the current UTC time)
    :param bad_chunks: chunks the scrub marked corrupt or missing (default: read from the store's scrub state, one
        GET): uploaded again even when the parent references them or a HEAD finds them, so the new snapshot does
        not depend on the bad copy
    """
    started = time.monotonic()
    calls_before = store.api_calls
    check_name("volume", volume_id)
    source = Path(source_dir)
    if not source.is_dir():
        raise PreconditionFailed(f"volume {volume_id}: source {source} is not a directory; no snapshot taken")
    created_at = (now or datetime.now(UTC)).astimezone(UTC)
    snapshot_id = check_name("snapshot", snapshot_id or f"snap-{format_time(created_at)}-{uuid.uuid4().hex[:8]}")
    parent_id, known = parent_chunks(store, parent, volume_id)
    bad = set(marked_bad(store) if bad_chunks is None else bad_chunks)
    uploader = _Uploader(store, set(known) - bad, max(1, workers), bad)
    files: list[FileEntry] = []
    skipped: list[str] = []
    bytes_read = chunks_total = 0
    state, failure = STATE_COMPLETED, None
    try:
        for rel, path in walk_files(source):
            if path is None:
                skipped.append(rel)
                continue
            digests, size = [], 0
            for data in iter_file_chunks(path, store.chunk_size):
                digest = sha256(data).hexdigest()
                uploader.submit(digest, data)
                digests.append(digest)
                size += len(data)
            files.append(FileEntry(rel, size, stat.S_IMODE(path.stat().st_mode), tuple(digests)))
            bytes_read += size
            chunks_total += len(digests)
        uploader.finish()
    except Exception as exc:  # any failure mid-walk or mid-upload: record the attempt as error, then raise
        uploader.pool.shutdown(wait=True, cancel_futures=True)
        state, failure = STATE_ERROR, exc
    entry = SnapshotEntry(snapshot_id, volume_id, created_at, parent_id, state, tuple(files), bytes_read,
                          store.chunk_size)
    if failure is None:
        key = store.write_index_entry(entry)
    else:
        try:
            key = store.write_index_entry(entry)
        except Exception as exc:
            raise BackupFailed(f"volume {volume_id} snapshot {snapshot_id}: failed after {len(files)} file(s) "
                               f"({failure}); recording it as state error failed too: {exc}") from failure
        raise BackupFailed(f"volume {volume_id} snapshot {snapshot_id}: failed after {len(files)} file(s), recorded "
                           f"as state error at {store.location(key)}: {failure}") from failure
    return SnapshotRecord(snapshot_id, volume_id, key, created_at.isoformat(), parent_id, state, len(files), skipped,
                          bytes_read, uploader.bytes_uploaded, chunks_total, uploader.new, uploader.reused,
                          round(time.monotonic() - started, 3), store.api_calls - calls_before)
