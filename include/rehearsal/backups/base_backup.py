"""Take a base backup with pg_basebackup (tar, WAL streamed, backup manifest) and upload it."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from rehearsal.backups.manifest import BackupManifest, BackupObject
from rehearsal.backups.store import BackupStore, sha256_file
from rehearsal.controlplane import row_counts, schema_version
from rehearsal.postgres.binaries import pg_tool
from rehearsal.postgres.connection import Endpoint, query_one

log = logging.getLogger(__name__)


def new_backup_id(prefix: str, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return f"{prefix}-{now.strftime('%Y%m%dT%H%M%S%fZ')}"


def client_env(endpoint: Endpoint) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGPASSWORD"] = endpoint.password
    env["PGCONNECT_TIMEOUT"] = "5"
    return env


def take_base_backup(endpoint: Endpoint, app_endpoint: Endpoint, store: BackupStore,
                     work_dir: Path | None = None) -> BackupManifest:
    """pg_basebackup -Ft -X stream with SHA256 manifest checksums, uploaded with our manifest.

    :param endpoint: superuser/replication endpoint of the primary
    :param app_endpoint: endpoint used to read the schema version and row counts
    """
    backup_id = new_backup_id("base")
    staging = Path(tempfile.mkdtemp(prefix=f"{backup_id}-", dir=work_dir))
    try:
        version = query_one(endpoint, "SELECT current_setting('server_version'), current_setting('server_version_num')::int / 10000, current_setting('wal_segment_size')")
        schema = schema_version(app_endpoint) or ""
        counts = row_counts(app_endpoint)
        started = datetime.now(UTC)
        subprocess.run([pg_tool("pg_basebackup"), "-h", endpoint.host, "-p", str(endpoint.port), "-U", endpoint.user,
                        "-D", str(staging / "backup"), "-Ft", "-X", "stream", "-c", "fast",
                        "--manifest-checksums=SHA256", "-l", backup_id, "--no-password"],
                       check=True, capture_output=True, text=True, env=client_env(endpoint), timeout=3600)
        stopped = datetime.now(UTC)
        pg_manifest = json.loads((staging / "backup" / "backup_manifest").read_text())
        wal_range = pg_manifest["WAL-Ranges"][0]
        objects = [upload_with_digest(store, staging / "backup" / name, store.backup_key("base_backup", backup_id, name))
                   for name in ("base.tar", "pg_wal.tar", "backup_manifest")]
        manifest = BackupManifest(
            backup_id=backup_id, kind="base_backup", cluster=store.cluster, start_time=started, stop_time=stopped,
            server_version=version[0], server_major=int(version[1]), schema_version=schema, objects=objects,
            start_lsn=wal_range["Start-LSN"], stop_lsn=wal_range["End-LSN"], timeline=int(wal_range["Timeline"]),
            wal_segment_size=_size_bytes(version[2]), row_counts=counts)
        store.put_bytes(store.backup_key("base_backup", backup_id, "manifest.json"), manifest.to_json().encode())
        log.info("base backup %s uploaded: %s objects, start LSN %s", backup_id, len(objects), manifest.start_lsn)
        return manifest
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"pg_basebackup of {endpoint.describe()} failed: {exc.stderr.strip()}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def upload_with_digest(store: BackupStore, path: Path, key: str) -> BackupObject:
    """Upload a staged file and take its SHA-256 at the same time (hashlib releases the GIL)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256") as pool:
        digest = pool.submit(sha256_file, path)
        store.upload_file(path, key)
        return BackupObject(name=path.name, key=key, size=path.stat().st_size, sha256=digest.result())


def _size_bytes(setting: str) -> int:
    units = {"kB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3}
    for unit, factor in units.items():
        if setting.endswith(unit):
            return int(setting[: -len(unit)]) * factor
    return int(setting)
