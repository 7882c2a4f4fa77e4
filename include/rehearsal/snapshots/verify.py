"""Check a restored tree against its index entry byte for byte, and digest a tree to compare source with restore.

``verify_restored`` re-reads what a restore wrote (independently of the restore's own checks): no file missing,
none extra, every size and every chunk's sha256 as the index records. ``tree_digest`` is one sha256 over a
whole tree, so a drill can show "the restore equals the source" with two strings.
"""
from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from rehearsal.checks import CheckSet
from rehearsal.snapshots.store import READ_PIECE, SnapshotEntry
from rehearsal.snapshots.take import walk_files

NAMED = 10  # offenders named per check; the count is always complete


def _named(items: list[str]) -> str:
    more = f" and {len(items) - NAMED} more" if len(items) > NAMED else ""
    return ", ".join(items[:NAMED]) + more


def chunk_digests(path: Path, chunk_size: int) -> list[str]:
    """sha256 of each ``chunk_size`` piece of a file, read in bounded pieces."""
    digests = []
    with path.open("rb") as fh:
        while True:
            hasher, left, size = hashlib.sha256(), chunk_size, 0
            while left and (data := fh.read(min(left, READ_PIECE))):
                hasher.update(data)
                left -= len(data)
                size += len(data)
            if not size:
                return digests
            digests.append(hasher.hexdigest())


def verify_restored(entry: SnapshotEntry, dest_dir: str | Path) -> CheckSet:
    """Named checks of ``dest_dir`` against ``entry``: files_present, no_extra_files, sizes, content.

    Each failed check names the files (and for content the first differing chunk); ``raise_if_failed`` turns
    the set into VerificationFailed.
    """
    dest = Path(dest_dir)
    checks = CheckSet(f"restore of volume {entry.volume_id} snapshot {entry.snapshot_id} into {dest}")
    on_disk = {rel: path for rel, path in walk_files(dest)} if dest.is_dir() else {}
    expected = {f.path: f for f in entry.files}
    missing = sorted(p for p in expected if on_disk.get(p) is None)
    extra = sorted(p for p in on_disk if p not in expected)
    checks.add("files_present", not missing, f"{len(missing)} of {len(expected)} file(s) missing: {_named(missing)}"
               if missing else f"all {len(expected)} file(s) present")
    checks.add("no_extra_files", not extra, f"{len(extra)} file(s) not in the snapshot: {_named(extra)}"
               if extra else "no file beyond the snapshot's")
    wrong_size, wrong_content = [], []
    checked_bytes = 0
    for rel, file in sorted(expected.items()):
        path = on_disk.get(rel)
        if path is None:
            continue
        size = path.stat().st_size
        if size != file.size:
            wrong_size.append(f"{rel} ({size} bytes, index {file.size})")
            continue
        digests = chunk_digests(path, entry.chunk_size)
        checked_bytes += size
        if tuple(digests) != file.chunks:
            first = next((i for i, (a, b) in enumerate(zip(digests, file.chunks, strict=False)) if a != b),
                         min(len(digests), len(file.chunks)))
            named = file.chunks[first] if first < len(file.chunks) else "(none)"
            wrong_content.append(f"{rel} (chunk {first + 1} of {len(file.chunks)}, {named[:16]}...)")
    checks.add("sizes", not wrong_size, f"{len(wrong_size)} file(s) of the wrong size: {_named(wrong_size)}"
               if wrong_size else "every file's size matches the index")
    checks.add("content", not wrong_content, f"{len(wrong_content)} file(s) differ: {_named(wrong_content)}"
               if wrong_content else f"every chunk's sha256 matches the index ({checked_bytes} bytes read)")
    return checks


def tree_digest(directory: str | Path) -> str:
    """sha256 over every regular file's relative path, size and content, in sorted path order.

    Symlinks and special files are left out (snapshots leave them out too); so are empty directories.
    """
    root = Path(directory)
    digest = hashlib.sha256()
    for rel, path in sorted(walk_files(root)):
        if path is None:
            continue
        digest.update(rel.encode() + b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as fh:
            for data in iter(lambda fh=fh: fh.read(READ_PIECE), b""):
                digest.update(data)
    return digest.hexdigest()


def file_modes(directory: str | Path) -> dict[str, int]:
    """Permission bits of every regular file (for comparing a restore's modes with its source's)."""
    root = Path(directory)
    return {rel: stat.S_IMODE(path.stat().st_mode) for rel, path in walk_files(root) if path is not None}
