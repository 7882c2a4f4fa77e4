"""SnapshotStoreHook: the volume snapshot store, its replica in a second region and its index backup, on S3
through the Amazon provider's S3Hook (``aws_default``); and EC2 for the EBS path."""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from airflow.sdk import BaseHook

from rehearsal.errors import PreconditionFailed

if TYPE_CHECKING:
    from rehearsal.environment import Environment
    from rehearsal.snapshots import SnapshotStore


class SnapshotStoreHook(BaseHook):
    def __init__(self, environment: Environment, aws_conn_id: str = "aws_default") -> None:
        super().__init__()
        self.environment = environment
        self.aws_conn_id = aws_conn_id

    def _s3(self, region: str | None = None):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id, region_name=region or None).get_conn()

    def _store(self, bucket: str, what: str, region: str | None = None) -> SnapshotStore:
        from rehearsal.snapshots import SnapshotStore

        if not bucket:
            raise PreconditionFailed(f"the rehearsal_environment Variable names no {what}")
        return SnapshotStore(self._s3(region), bucket, self.environment.snapshot_prefix)

    @cached_property
    def primary(self) -> SnapshotStore:
        return self._store(self.environment.snapshot_bucket, "snapshot_bucket")

    @cached_property
    def replica(self) -> SnapshotStore | None:
        env = self.environment
        return self._store(env.snapshot_replica_bucket, "snapshot_replica_bucket", env.snapshot_replica_region) \
            if env.snapshot_replica_bucket else None

    @cached_property
    def index_backup(self) -> SnapshotStore | None:
        env = self.environment
        return self._store(env.snapshot_index_backup_bucket, "snapshot_index_backup_bucket") \
            if env.snapshot_index_backup_bucket else None

    def ec2(self, region: str | None = None):
        from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook

        return EC2Hook(aws_conn_id=self.aws_conn_id, api_type="client_type", region_name=region or None).conn

    def get_conn(self) -> SnapshotStore:
        return self.primary
