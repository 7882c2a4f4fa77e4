"""Restore a snapshot into a directory: chunks fetched in parallel and streamed to disk, every one checked.

Every chunk's bytes must hash to its name and every file must come out at the size the index records; the first
failure stops the restore and names volume, snapshot, file and chunk. Files are written under temporary names
next to their final ones and renamed into place only when complete, so a retry into the same directory
overwrites cleanly and a reader never sees a half-written file under its real name. A restore only reads the
store.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from rehearsal.snapshots.store import (
    ChunkCorrupt,
    ChunkMissing,
    FileEntry,
    IndexEntryInvalid,
    IndexKey,
    SizeMismatch,
    SnapshotEntry,
    SnapshotInError,
    SnapshotStore,
    record_dict,
)

PARTIAL_SUFFIX = ".rehearsal-partial"


@dataclass
class FileResult:
    path: str
    size: int
    chunks: int

    def to_dict(self) -> dict:
        return record_dict(self)


@dataclass
class RestoreRecord:
    """A finished restore: what was written where, how fast, and that every chunk was checked."""

    snapshot_id: str
    volume_id: str
    store: str
    dest: str
    files: list[FileResult]
    file_count: int
    bytes: int
    chunks: int
    seconds: float
    throughput_mb_s: float  # bytes / seconds / 1e6
    workers: int
    api_calls: int
    content_checked: bool = True  # every chunk's sha256 against its name, every file's size against the index

    def to_dict(self) -> dict:
        return record_dict(self)


def resolve_entry(store: SnapshotStore, snapshot: str | IndexKey | SnapshotEntry, volume_id: str | None = None) -> SnapshotEntry:
    """The entry to restore, refusing one not in state completed before reading it when the key already says so.

    SnapshotNotFound when the id is not in the index, SnapshotInError when the snapshot is not restorable.
    """
    if isinstance(snapshot, SnapshotEntry):
        entry = snapshot
        where = store.url
    else:
        key = snapshot if isinstance(snapshot, IndexKey) else None
        if key is None and not (snapshot.endswith(".json") and "index/" in snapshot):
            key = store.find(snapshot, volume_id)
        if key is not None and not key.restorable:
            raise SnapshotInError(key.snapshot_id, key.volume_id, key.state, store.location(key.key))
        entry = store.read_snapshot(key or snapshot, volume_id)
        where = store.location(store.index_key(entry))
    if not entry.restorable:
        raise SnapshotInError(entry.snapshot_id, entry.volume_id, entry.state, where)
    return entry


def safe_relative(entry: SnapshotEntry, file: FileEntry) -> PurePosixPath:
    """A file's path, refused when it would land outside the destination (absolute, ``..``, empty)."""
    rel = PurePosixPath(file.path)
    if not file.path or rel.is_absolute() or ".." in rel.parts or rel.parts[0] in ("", "."):
        raise IndexEntryInvalid(f"volume {entry.volume_id} snapshot {entry.snapshot_id}: file path {file.path!r} "
                                "would be restored outside the destination")
    return rel


@dataclass
class _FilePlan:
    file: FileEntry
    final: Path
    temp: Path
    remaining: int
    written: int = 0
    done: bool = False


@dataclass
class _Restore:
    store: SnapshotStore
    entry: SnapshotEntry
    dest: Path
    workers: int
    plans: list[_FilePlan] = field(default_factory=list)

    def plan(self) -> None:
        seen: set[str] = set()
        for file in self.entry.files:
            rel = safe_relative(self.entry, file)
            if rel.as_posix() in seen:
                raise IndexEntryInvalid(f"volume {self.entry.volume_id} snapshot {self.entry.snapshot_id}: "
                                        f"file {file.path} is listed twice")
            seen.add(rel.as_posix())
            final = self.dest.joinpath(*rel.parts)
            final.parent.mkdir(parents=True, exist_ok=True)
            temp = final.with_name(f".{final.name}{PARTIAL_SUFFIX}")
            self.plans.append(_FilePlan(file, final, temp, len(file.chunks)))

    def where(self, digest: str) -> str:
        return self.store.location(self.store.chunk_key(digest))

    def fetch(self, plan: _FilePlan, index: int) -> int:
        """One chunk into its place in the file's temporary, streamed; checked against its name and size."""
        digest = plan.file.chunks[index]
        position = f" (chunk {index + 1} of {len(plan.file.chunks)})"
        ids = {"volume_id": self.entry.volume_id, "snapshot_id": self.entry.snapshot_id, "path": plan.file.path,
               "position": position}
        offset = index * self.entry.chunk_size
        fd = os.open(plan.temp, os.O_WRONLY)
        cursor = offset

        def sink(data: bytes) -> None:
            nonlocal cursor
            view = memoryview(data)
            while view:
                n = os.pwrite(fd, view, cursor)
                cursor += n
                view = view[n:]
        try:
            size, actual = self.store.get_chunk(digest, sink)
        except ChunkMissing:
            raise ChunkMissing(digest, self.where(digest), **ids) from None
        finally:
            os.close(fd)
        if actual != digest:
            raise ChunkCorrupt(digest, actual, self.where(digest), **ids)
        last = index == len(plan.file.chunks) - 1
        if not last and size != self.entry.chunk_size:
            raise SizeMismatch(plan.file.path, size, self.entry.chunk_size, self.entry.volume_id,
                               self.entry.snapshot_id, digest, f" (the snapshot's chunk size){position}")
        return size

    def finalize(self, plan: _FilePlan) -> None:
        actual = plan.temp.stat().st_size
        if plan.written != plan.file.size or actual != plan.file.size:
            raise SizeMismatch(plan.file.path, max(plan.written, actual), plan.file.size, self.entry.volume_id,
                               self.entry.snapshot_id)
        os.chmod(plan.temp, plan.file.mode)
        os.replace(plan.temp, plan.final)
        plan.done = True

    def run(self) -> None:
        for plan in self.plans:
            plan.temp.unlink(missing_ok=True)  # a previous attempt's leftover
            os.close(os.open(plan.temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            if plan.remaining == 0:
                self.finalize(plan)
        pending: dict[Future, _FilePlan] = {}
        limit = self.workers * 4
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="snapshot-restore") as pool:
            try:
                for plan in self.plans:
                    for index in range(len(plan.file.chunks)):
                        while len(pending) >= limit:
                            self._collect(pending, FIRST_COMPLETED)
                        pending[pool.submit(self.fetch, plan, index)] = plan
                while pending:
                    self._collect(pending, FIRST_COMPLETED)
            except BaseException:
                for future in pending:
                    future.cancel()
                wait(pending)
                raise

    def _collect(self, pending: dict[Future, _FilePlan], how: str) -> None:
        done, _ = wait(pending, return_when=how)
        for future in done:
            plan = pending.pop(future)
            plan.written += future.result()
            plan.remaining -= 1
            if plan.remaining == 0:
                self.finalize(plan)

    def cleanup(self) -> None:
        for plan in self.plans:
            if not plan.done:
                plan.temp.unlink(missing_ok=True)


def restore_snapshot(store: SnapshotStore, snapshot: str | IndexKey | SnapshotEntry, dest_dir: str | Path,
                     workers: int = 8, volume_id: str | None = None) -> RestoreRecord:
    """Restore a completed snapshot into ``dest_dir`` (created if need be), ``workers`` chunk GETs at a time.

    Files the snapshot holds are overwritten; other files in ``dest_dir`` are left alone (``verify_restored``
    reports them as extra). Raises SnapshotNotFound, SnapshotInError, ChunkMissing, ChunkCorrupt or SizeMismatch,
    each naming volume, snapshot and, where it applies, file and chunk; no partial file keeps its final name.

    :param snapshot: a snapshot id (found by listing the index), an index key or an entry already read
    :param volume_id: narrows the index listing when ``snapshot`` is an id
    """
    started = time.monotonic()
    calls_before = store.api_calls
    entry = resolve_entry(store, snapshot, volume_id)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    job = _Restore(store, entry, dest, max(1, workers))
    try:
        job.plan()
        job.run()
    finally:
        job.cleanup()
    seconds = time.monotonic() - started
    total = sum(p.written for p in job.plans)
    return RestoreRecord(entry.snapshot_id, entry.volume_id, store.url, str(dest),
                         [FileResult(p.file.path, p.written, len(p.file.chunks)) for p in job.plans], len(job.plans),
                         total, sum(len(p.file.chunks) for p in job.plans), round(seconds, 3),
                         round(total / seconds / 1e6, 2) if seconds > 0 else 0.0, job.workers,
                         store.api_calls - calls_before)
