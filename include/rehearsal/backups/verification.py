"""Verify backups: every object against the manifest's sha256, pg_verifybackup, WAL continuity,
and for dumps a parse of ``pg_restore --list`` and a full read-through. Source objects are only read."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rehearsal.backups.manifest import BackupManifest
from rehearsal.backups.store import BackupStore, ChunkConsumer, stored_by
from rehearsal.checks import CheckSet
from rehearsal.controlplane import CRITICAL_TABLES
from rehearsal.errors import ManifestError
from rehearsal.postgres.binaries import major_version, pg_tool, server_user
from rehearsal.wal import check_continuity, parse_lsn

HISTORY_SUFFIX = ".history"


@dataclass
class ArchiveListing:
    segments: list[str]
    histories: dict[int, str]
    newest_key: str | None
    newest_modified: object
    count: int


def list_archive(store: BackupStore, stored_before: datetime | None = None) -> ArchiveListing:
    """The WAL archive's segments and timeline histories.

    :param stored_before: only objects certainly stored before this moment (S3's LastModified has a resolution
        of one second, so an object counts only when ``LastModified + 1 s <= stored_before``): what the archive
        held then
    """
    prefix = store.prefix("wal_archive")
    names, history_keys = [], {}
    newest = None
    for obj in store.iter_objects(prefix):
        if stored_before is not None and not stored_by(obj.last_modified, stored_before):
            continue
        name = obj.key[len(prefix):]
        if name.endswith(HISTORY_SUFFIX):
            history_keys[int(name[:8], 16)] = obj.key
        elif len(name) == 24:
            names.append(name)
        if newest is None or obj.last_modified > newest.last_modified:
            newest = obj
    histories = {tli: store.read_text(key) for tli, key in history_keys.items()}
    return ArchiveListing(names, histories, newest.key if newest else None,
                          newest.last_modified if newest else None, len(names))


def check_wal_continuity(store: BackupStore, manifest: BackupManifest, checks: CheckSet,
                         listing: ArchiveListing | None = None) -> None:
    listing = listing or list_archive(store)
    result = check_continuity(listing.segments, listing.histories, parse_lsn(manifest.start_lsn),
                              manifest.timeline, manifest.wal_segment_size)
    checks.add("wal_continuity", result.ok, result.describe())


def stream_into_tar(store: BackupStore, key: str, dest: Path, as_server_user: bool = False,
                    also: Callable[[bytes], None] | None = None) -> tuple[int, str]:
    """Stream an S3 tar object into ``tar -x`` under ``dest`` while hashing it; (size, sha256).

    :param also: handed every chunk too, in order (e.g. a :class:`TarMemberHashes` checking the files inside)
    """
    user = server_user() if as_server_user else None
    extra = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
    proc = subprocess.Popen(["tar", "-x", "-f", "-", "-C", str(dest)], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, **extra)
    write = proc.stdin.write
    beside = ChunkConsumer(also) if also is not None else None  # on its own thread: a second hash, another core
    sink = write if beside is None else (lambda chunk: (beside(chunk), write(chunk)))
    try:
        size, digest = store.stream(key, sink)
    except BrokenPipeError:
        proc.stdin = None
        proc.wait()
        raise RuntimeError(f"tar refused s3://{store.bucket}/{key}: {proc.stderr.read().decode()[-300:]}") from None
    finally:
        if proc.stdin:
            proc.stdin.close()
        if beside is not None:
            beside.close()  # waits for the last chunks; re-raises what the consumer raised
    if proc.wait() != 0:
        raise RuntimeError(f"tar could not unpack s3://{store.bucket}/{key}: {proc.stderr.read().decode()[-300:]}")
    return size, digest


TAR_BLOCK = 512


class TarMemberHashes:
    """SHA-256 and size of every regular file inside a tar stream, fed chunk by chunk (no disk, no seeking).

    Reads ustar/GNU headers (with GNU long names and pax ``path``/``size`` records), as ``pg_basebackup -Ft``
    and GNU tar write them. :meth:`close` returns each file's path mapped to ``(size, sha256 hex)``.
    """

    def __init__(self) -> None:
        self.members: dict[str, tuple[int, str]] = {}
        self._buf = bytearray()  # a header block being gathered
        self._kind = ""  # the current member: "file", "meta-L", "meta-x" or "skip"
        self._path = ""
        self._size = 0
        self._hash = None
        self._meta = bytearray()
        self._left = 0  # data bytes of the current member still to come
        self._pad = 0  # padding after them
        self._next: dict[str, str] = {}  # path/size from a long-name or pax record, for the next member
        self._ended = False

    def __call__(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            if self._left:
                take = view[:self._left]
                if self._hash is not None:
                    self._hash.update(take)
                elif self._kind.startswith("meta"):
                    self._meta += take
                self._left -= len(take)
                view = view[len(take):]
                if not self._left:
                    self._end_member()
            elif self._pad:
                skip = min(self._pad, len(view))
                self._pad -= skip
                view = view[skip:]
            elif self._ended:
                return
            else:
                need = TAR_BLOCK - len(self._buf)
                self._buf += view[:need]
                view = view[need:]
                if len(self._buf) == TAR_BLOCK:
                    block, self._buf = bytes(self._buf), bytearray()
                    self._header(block)

    def _header(self, block: bytes) -> None:
        if block == bytes(TAR_BLOCK):
            self._ended = True  # end of archive: what follows is padding
            return
        kind = block[156:157]
        name = block[0:100].split(b"\0", 1)[0].decode()
        prefix = block[345:500].split(b"\0", 1)[0].decode() if block[257:262] == b"ustar" else ""
        self._path = self._next.get("path") or (f"{prefix}/{name}" if prefix else name)
        self._size = int(self._next["size"]) if "size" in self._next else _tar_number(block[124:136])
        self._left, self._pad, self._hash = self._size, -self._size % TAR_BLOCK, None
        if kind in (b"L", b"x"):
            self._kind, self._meta = f"meta-{kind.decode()}", bytearray()
        else:
            self._next = {}
            self._kind = "file" if kind in (b"0", b"\0", b"7") else "skip"
            if self._kind == "file":
                self._hash = hashlib.sha256()
        if not self._left:
            self._end_member()

    def _end_member(self) -> None:
        if self._kind == "file":
            self.members[self._path.removeprefix("./")] = (self._size, self._hash.hexdigest())
        elif self._kind == "meta-L":
            self._next["path"] = self._meta.split(b"\0", 1)[0].decode()
        elif self._kind == "meta-x":  # "<len> key=value\n" records
            for line in bytes(self._meta).decode().splitlines():
                key, _, value = line.partition(" ")[2].partition("=")
                if key in ("path", "size"):
                    self._next[key] = value
        self._kind, self._hash = "", None

    def close(self) -> dict[str, tuple[int, str]]:
        """:raises ValueError: the stream ended inside a member or a header"""
        if self._left or self._buf:
            raise ValueError(f"the tar stream ended inside {self._path or 'a header'} ({self._left} bytes missing)")
        return self.members


def _tar_number(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for sizes over 8 GB
        return int.from_bytes(field[1:], "big")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits, 8) if digits else 0


def check_objects(store: BackupStore, manifest: BackupManifest, checks: CheckSet, names: list[str]) -> None:
    """Size (HEAD) of every object the manifest lists, except ``names`` that the caller streams."""
    for obj in manifest.objects:
        head = store.head(obj.key)
        if head is None:
            checks.add(f"object_present:{obj.name}", False, f"s3://{store.bucket}/{obj.key} is missing")
            continue
        checks.add(f"object_size:{obj.name}", head["ContentLength"] == obj.size,
                   f"{head['ContentLength']} bytes, manifest says {obj.size}")


def verify_base_backup(store: BackupStore, backup_id: str, scratch: Path, check_wal: bool = True) -> tuple[CheckSet, BackupManifest | None]:
    """Download into ``scratch`` (plain layout) while hashing, then pg_verifybackup and WAL continuity."""
    from botocore.exceptions import ClientError  # here, not at import: DAG parsing stays fast

    checks = CheckSet(f"base backup {backup_id}")
    try:
        manifest = store.manifest("base_backup", backup_id)
    except ManifestError as exc:
        checks.add("manifest", False, str(exc))
        return checks, None
    checks.add("manifest", True, f"{len(manifest.objects)} objects, start LSN {manifest.start_lsn}")
    local_major = major_version()
    checks.add("server_major", manifest.server_major == local_major,
               f"backup from PostgreSQL {manifest.server_major}, tools are {local_major}")
    check_objects(store, manifest, checks, [])
    data = scratch / "data"
    (data / "pg_wal").mkdir(parents=True, exist_ok=True)
    obj = manifest.object("backup_manifest")
    try:
        size, digest = store.download(obj.key, data / "backup_manifest")
    except ClientError as exc:
        size, digest = 0, f"unreadable ({exc})"
    checks.add("sha256:backup_manifest", digest == obj.sha256, f"sha256 {digest[:16]}..., manifest {obj.sha256[:16]}...")
    # The files' own SHA-256 (pg_basebackup --manifest-checksums=SHA256) are checked while base.tar streams, with
    # OpenSSL's SHA-256, instead of pg_verifybackup re-reading every file from disk afterwards.
    expected = streamable_file_checksums(data / "backup_manifest") if digest == obj.sha256 else None
    hashes = TarMemberHashes() if expected is not None else None
    for name, dest in (("base.tar", data), ("pg_wal.tar", data / "pg_wal")):
        obj = manifest.object(name)
        try:
            size, digest = stream_into_tar(store, obj.key, dest, also=hashes if name == "base.tar" else None)
        except RuntimeError as exc:
            checks.add(f"sha256:{name}", False, str(exc))
            continue
        checks.add(f"sha256:{name}", digest == obj.sha256,
                   f"s3://{store.bucket}/{obj.key}: sha256 {digest[:16]}..., manifest {obj.sha256[:16]}... ({size} bytes)")
    if hashes is not None and checks.ok:
        check_file_checksums(expected, hashes, manifest.object("base.tar").key, checks)
    if checks.ok:
        skip = ["--skip-checksums"] if hashes is not None else []
        proc = subprocess.run([pg_tool("pg_verifybackup"), *skip, str(data)], capture_output=True, text=True, timeout=3600)
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        checks.add("pg_verifybackup", proc.returncode == 0,
                   (detail[-1] if detail else f"exit {proc.returncode}")
                   + (" (files, sizes, manifest and WAL; the files' checksums were checked while streaming)" if skip else ""))
    else:
        checks.add("pg_verifybackup", False, "skipped: the backup's objects do not match the manifest")
    if check_wal:
        check_wal_continuity(store, manifest, checks)
    return checks, manifest


def streamable_file_checksums(backup_manifest: Path) -> dict[str, tuple[int, str]] | None:
    """Each file's (size, SHA-256) from a PostgreSQL backup manifest, or ``None`` when any file has another
    checksum algorithm (CRC32C, SHA-224 ...): then pg_verifybackup checks them from disk as before."""
    try:
        files = json.loads(backup_manifest.read_text())["Files"]
    except (ValueError, KeyError):
        return None  # pg_verifybackup names what is wrong with it
    if any(f.get("Checksum-Algorithm") != "SHA256" or "Path" not in f for f in files):
        return None
    return {f["Path"]: (int(f["Size"]), f["Checksum"]) for f in files}


def check_file_checksums(expected: dict[str, tuple[int, str]], hashes: TarMemberHashes, key: str,
                         checks: CheckSet) -> None:
    """Every file the PostgreSQL backup manifest lists, against its size and SHA-256 as it streamed out of ``key``."""
    try:
        seen = hashes.close()
    except ValueError as exc:
        checks.add("file_checksums", False, f"{key}: {exc}")
        return
    wrong = []
    for path, (size, sha) in sorted(expected.items()):
        got = seen.get(path)
        if got is None:
            wrong.append(f"{path} is not in the tar")
        elif got != (size, sha):
            wrong.append(f"{path}: {got[0]} bytes, sha256 {got[1][:16]}..., backup_manifest says {size} bytes, "
                         f"{sha[:16]}...")
    checks.add("file_checksums", not wrong,
               f"{len(wrong)} of {len(expected)} files in {key} differ from backup_manifest: " + "; ".join(wrong[:5])
               if wrong else f"{len(expected)} files in {key} match backup_manifest (SHA-256, while streaming)")


TOC_TABLE_DATA = re.compile(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ")


def verify_logical_dump(store: BackupStore, backup_id: str, scratch: Path) -> tuple[CheckSet, BackupManifest | None]:
    checks = CheckSet(f"logical dump {backup_id}")
    try:
        manifest = store.manifest("logical_dump", backup_id)
    except ManifestError as exc:
        checks.add("manifest", False, str(exc))
        return checks, None
    checks.add("manifest", True, f"{len(manifest.objects)} object(s), schema {manifest.schema_version}")
    check_objects(store, manifest, checks, [])
    obj = manifest.objects[0]
    path = scratch / obj.name
    size, digest = store.download(obj.key, path)
    checks.add(f"sha256:{obj.name}", digest == obj.sha256,
               f"s3://{store.bucket}/{obj.key}: sha256 {digest[:16]}..., manifest {obj.sha256[:16]}... ({size} bytes)")
    listing = subprocess.run([pg_tool("pg_restore"), "--list", str(path)], capture_output=True, text=True, timeout=600)
    if listing.returncode != 0:
        checks.add("pg_restore_list", False, listing.stderr.strip()[-300:])
    else:
        tables = {m.group(2) for line in listing.stdout.splitlines() if (m := TOC_TABLE_DATA.match(line))}
        absent = [t for t in CRITICAL_TABLES if t not in tables]
        checks.add("pg_restore_list", not absent,
                   f"TOC lists data of {len(tables)} tables" + (f"; missing: {', '.join(absent)}" if absent else ""))
    read = subprocess.run([pg_tool("pg_restore"), "-f", "/dev/null", str(path)], capture_output=True, text=True, timeout=3600)
    checks.add("pg_restore_readthrough", read.returncode == 0,
               "every entry readable" if read.returncode == 0 else read.stderr.strip()[-300:])
    return checks, manifest

