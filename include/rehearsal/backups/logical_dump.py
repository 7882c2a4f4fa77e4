"""Take a logical dump (pg_dump -Fc) and upload it with our manifest."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from rehearsal.backups.base_backup import client_env, new_backup_id, upload_with_digest
from rehearsal.backups.manifest import BackupManifest
from rehearsal.backups.store import BackupStore
from rehearsal.controlplane import row_counts, schema_version
from rehearsal.postgres.binaries import pg_tool
from rehearsal.postgres.connection import Endpoint, query_one

DUMP_NAME = "controlplane.dump"


def take_logical_dump(endpoint: Endpoint, store: BackupStore, work_dir: Path | None = None) -> BackupManifest:
    """pg_dump -Fc of the control-plane database, uploaded with sizes, sha256 and row counts."""
    backup_id = new_backup_id("dump")
    staging = Path(tempfile.mkdtemp(prefix=f"{backup_id}-", dir=work_dir))
    try:
        version = query_one(endpoint, "SELECT current_setting('server_version'), current_setting('server_version_num')::int / 10000")
        schema = schema_version(endpoint) or ""
        counts = row_counts(endpoint)
        started = datetime.now(UTC)
        path = staging / DUMP_NAME
        try:
            subprocess.run([pg_tool("pg_dump"), "-h", endpoint.host, "-p", str(endpoint.port), "-U", endpoint.user,
                            "-d", endpoint.dbname, "-Fc", "-Z", "1", "-f", str(path), "--no-password"],
                           check=True, capture_output=True, text=True, env=client_env(endpoint), timeout=3600)
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"pg_dump of {endpoint.describe()} failed: {exc.stderr.strip()}") from None
        stopped = datetime.now(UTC)
        key = store.backup_key("logical_dump", backup_id, DUMP_NAME)
        obj = upload_with_digest(store, path, key)
        manifest = BackupManifest(
            backup_id=backup_id, kind="logical_dump", cluster=store.cluster, start_time=started, stop_time=stopped,
            server_version=version[0], server_major=int(version[1]), schema_version=schema, objects=[obj],
            row_counts=counts)
        store.put_bytes(store.backup_key("logical_dump", backup_id, "manifest.json"), manifest.to_json().encode())
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
