"""BackupStoreHook: the backup store on S3 through the Amazon provider's S3Hook (``aws_default``)."""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from rehearsal.backups.store import BackupStore


class BackupStoreHook(BaseHook):
    def __init__(self, bucket: str, cluster: str = "controlplane", aws_conn_id: str = "aws_default") -> None:
        super().__init__()
        self.bucket = bucket
        self.cluster = cluster
        self.aws_conn_id = aws_conn_id

    @cached_property
    def store(self) -> BackupStore:
        # Imported here, not at module level: DAG files import this hook and must parse fast.
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from rehearsal.backups.store import BackupStore

        return BackupStore(S3Hook(aws_conn_id=self.aws_conn_id).get_conn(), self.bucket, self.cluster)

    def get_conn(self) -> BackupStore:
        return self.store
