"""BackupVerificationOperator: verify a base backup or logical dump; fail naming artifact and checks."""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from airflow.sdk import Context

from rehearsal.backups.verification import verify_base_backup, verify_logical_dump
from rehearsal.errors import ManifestError, VerificationFailed
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.backup_store import BackupStoreHook
from rehearsal_airflow.operators.base import DrillStepOperator
from rehearsal_airflow.operators.scratch import ensure_traversable_dir


class BackupVerificationOperator(DrillStepOperator):
    """Stream every object through sha256 against our manifest, pg_verifybackup, WAL continuity (base
    backups); sha256 and ``pg_restore --list`` plus a read-through (dumps). Source objects are only read.

    :param kind: ``base_backup`` or ``logical_dump``
    :param backup_id: an id, or ``latest``
    """

    template_fields: Sequence[str] = ("backup_id", "bucket")

    def __init__(self, *, kind: str = "base_backup", backup_id: str = "latest", bucket: str | None = None,
                 cluster: str = "controlplane", aws_conn_id: str = "aws_default", **kwargs) -> None:
        super().__init__(**kwargs)
        if kind not in ("base_backup", "logical_dump"):
            raise ValueError(f"unknown backup kind {kind!r}")
        self.kind = kind
        self.backup_id = backup_id
        self.bucket = bucket
        self.cluster = cluster
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> BackupStoreHook:
        return BackupStoreHook(self.bucket or current_environment().backup_bucket, self.cluster, self.aws_conn_id)

    def run_step(self, context: Context) -> dict:
        store = self.hook.store
        backup_id = self.backup_id
        if backup_id in (None, "", "latest"):
            ids = store.backup_ids(self.kind)
            if not ids:
                raise ManifestError(f"no {self.kind} with a manifest in s3://{store.bucket}/{store.prefix(self.kind)}")
            backup_id = ids[-1]
        root = current_environment().scratch_root
        if root:
            ensure_traversable_dir(root)  # a fresh sandbox (or host) may not have it yet
        scratch = Path(tempfile.mkdtemp(prefix=f"verify-{backup_id}-", dir=root))
        try:
            verify = verify_base_backup if self.kind == "base_backup" else verify_logical_dump
            checks, _manifest = verify(store, backup_id, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        for check in checks.checks:
            self.log.info("%s %s: %s", "ok  " if check.ok else "FAIL", check.name, check.detail)
        if not checks.ok:
            raise VerificationFailed(checks.subject, checks.failed)
        return {"backup_id": backup_id, "kind": self.kind, "ok": True, "checks": checks.as_dicts(),
                "detail": f"{checks.subject}: {len(checks.checks)} checks passed"}
