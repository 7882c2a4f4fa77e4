"""Verify backups: every object against the manifest's sha256, pg_verifybackup, WAL continuity,
and for dumps a parse of ``pg_restore --list`` and a full read-through. Source objects are only read."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rehearsal.backups.manifest import BackupManifest
from rehearsal.backups.store import BackupStore, stored_by
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


def stream_into_tar(store: BackupStore, key: str, dest: Path, as_server_user: bool = False) -> tuple[int, str]:
    """Stream an S3 tar object into ``tar -x`` under ``dest`` while hashing it; (size, sha256)."""
    user = server_user() if as_server_user else None
    extra = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
    proc = subprocess.Popen(["tar", "-x", "-f", "-", "-C", str(dest)], stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, **extra)
    try:
        size, digest = store.stream(key, proc.stdin.write)
    except BrokenPipeError:
        proc.stdin = None
        proc.wait()
        raise RuntimeError(f"tar refused s3://{store.bucket}/{key}: {proc.stderr.read().decode()[-300:]}") from None
    finally:
        if proc.stdin:
            proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError(f"tar could not unpack s3://{store.bucket}/{key}: {proc.stderr.read().decode()[-300:]}")
    return size, digest


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
    for name, dest in (("base.tar", data), ("pg_wal.tar", data / "pg_wal")):
        obj = manifest.object(name)
        try:
            size, digest = stream_into_tar(store, obj.key, dest)
        except RuntimeError as exc:
            checks.add(f"sha256:{name}", False, str(exc))
            continue
        checks.add(f"sha256:{name}", digest == obj.sha256,
                   f"s3://{store.bucket}/{obj.key}: sha256 {digest[:16]}..., manifest {obj.sha256[:16]}... ({size} bytes)")
    obj = manifest.object("backup_manifest")
    size, digest = store.download(obj.key, data / "backup_manifest")
    checks.add("sha256:backup_manifest", digest == obj.sha256, f"sha256 {digest[:16]}..., manifest {obj.sha256[:16]}...")
    if checks.ok:
        proc = subprocess.run([pg_tool("pg_verifybackup"), str(data)], capture_output=True, text=True, timeout=3600)
        detail = (proc.stdout + proc.stderr).strip().splitlines()
        checks.add("pg_verifybackup", proc.returncode == 0, detail[-1] if detail else f"exit {proc.returncode}")
    else:
        checks.add("pg_verifybackup", False, "skipped: the backup's objects do not match the manifest")
    if check_wal:
        check_wal_continuity(store, manifest, checks)
    return checks, manifest


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

