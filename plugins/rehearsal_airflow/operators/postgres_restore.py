"""PostgresRestoreOperator: restore the control-plane database into a new cluster.

Methods: ``pitr`` (base backup + archived WAL to a time, an LSN or ``latest``), ``logical``
(``pg_restore -j N``), ``rds_snapshot`` and ``rds_pitr`` (through RdsHook).
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from airflow.sdk import Context

from rehearsal.errors import PreconditionFailed
from rehearsal.postgres.restore import RecoveryTarget, archive_cutoff, restore_logical, restore_pitr
from rehearsal.scratch import run_cluster
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.backup_store import BackupStoreHook
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator, key_of

METHODS = ("pitr", "logical", "rds_snapshot", "rds_pitr")
RESTORE_POOL = "restores"  # caps concurrent restores; created by `make airflow` and the test fixtures


class PostgresRestoreOperator(ControlPlaneMixin, DrillStepOperator):
    """Restore into a new cluster on a free port; returns its address, restored LSN and timings.

    :param method: one of pitr, logical, rds_snapshot, rds_pitr
    :param target: for pitr/rds_pitr: ``latest``, an ISO time with timezone, or an LSN
    :param cluster_name: name of the new cluster (default: unique per run); a retry reuses or wipes it
    :param archived_before: pitr only: an ISO time with timezone (or empty); use only the base backups and WAL the
        archive held then (what a non-disruptive drill's simulated fault would have left)
    """

    template_fields: Sequence[str] = ("target", "backup_id", "cluster_name", "db_snapshot_identifier",
                                      "source_db_instance_identifier", "archived_before")

    def __init__(self, *, method: str = "pitr", target: str = "latest", backup_id: str | None = None,
                 cluster_name: str | None = None, jobs: int = 2, controlplane_conn_id: str = "controlplane_admin",
                 aws_conn_id: str = "aws_default", db_snapshot_identifier: str | None = None,
                 source_db_instance_identifier: str | None = None, db_instance_class: str = "db.t3.medium",
                 wait_timeout: int = 3600, archived_before: str | None = None, **kwargs) -> None:
        kwargs.setdefault("pool", RESTORE_POOL)
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"unknown restore method {method!r}: use one of {', '.join(METHODS)}")
        self.method = method
        self.target = target
        self.backup_id = backup_id
        self.cluster_name = cluster_name
        self.jobs = jobs
        self.controlplane_conn_id = controlplane_conn_id
        self.aws_conn_id = aws_conn_id
        self.db_snapshot_identifier = db_snapshot_identifier
        self.source_db_instance_identifier = source_db_instance_identifier
        self.db_instance_class = db_instance_class
        self.wait_timeout = wait_timeout
        self.archived_before = archived_before

    def run_step(self, context: Context) -> dict:
        name = self.cluster_name or f"{key_of(context)}-{self.method}"
        if self.method in ("rds_snapshot", "rds_pitr"):
            return self._restore_rds(name)
        env = current_environment()
        if not env.scratch_root:
            raise PreconditionFailed("the rehearsal_environment Variable sets no scratch_root for restored clusters")
        store = BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        run_dir = Path(env.scratch_root) / key_of(context)
        dest = run_cluster(run_dir, name)
        production = [self.controlplane.current_address()]
        if self.method == "pitr":
            result = restore_pitr(store, RecoveryTarget.parse(self.target), dest, production, timeout=self.wait_timeout,
                                  archived_before=archive_cutoff(self.archived_before))
        else:
            admin = self.controlplane.endpoint()
            result = restore_logical(store, self.backup_id, dest, admin.password, production, jobs=self.jobs)
        out = result.to_dict()
        out["address"] = result.address
        out["resources"] = [f"cluster:{dest.name}@{result.address}", f"dir:{run_dir}"]
        cutoff = result.archive.get("archived_before")
        out["detail"] = (f"{self.method} restore of {result.backup_id} to {result.target} at {result.address}, "
                         f"LSN {result.restored_lsn}, {result.timings.get('total', 0):.1f}s"
                         + (f", from what the archive held at {cutoff}" if cutoff else "")
                         + (" (reused a finished restore)" if result.reused else ""))
        return out

    def _restore_rds(self, name: str) -> dict:
        from airflow.providers.amazon.aws.hooks.rds import RdsHook  # not at parse time

        hook = RdsHook(aws_conn_id=self.aws_conn_id)
        rds = hook.conn
        started = datetime.now(UTC)
        existing = rds.describe_db_instances(Filters=[{"Name": "db-instance-id", "Values": [name]}])["DBInstances"]
        if not existing:
            if self.method == "rds_snapshot":
                if not self.db_snapshot_identifier:
                    raise PreconditionFailed("rds_snapshot needs db_snapshot_identifier")
                rds.restore_db_instance_from_db_snapshot(DBInstanceIdentifier=name, DBSnapshotIdentifier=self.db_snapshot_identifier,
                                                         DBInstanceClass=self.db_instance_class)
            else:
                restore_time = self._validated_restore_time(rds)
                kwargs = {"SourceDBInstanceIdentifier": self.source_db_instance_identifier, "TargetDBInstanceIdentifier": name,
                          "DBInstanceClass": self.db_instance_class}
                if restore_time is None:
                    kwargs["UseLatestRestorableTime"] = True
                else:
                    kwargs["RestoreTime"] = restore_time
                rds.restore_db_instance_to_point_in_time(**kwargs)
        hook.wait_for_db_instance_state(name, target_state="available", check_interval=5, max_attempts=self.wait_timeout // 5)
        instance = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
        address = f"{instance['Endpoint']['Address']}:{instance['Endpoint']['Port']}"
        return {"method": self.method, "cluster": name, "address": address, "backup_id": self.db_snapshot_identifier,
                "target": self.target, "timings": {"total": (datetime.now(UTC) - started).total_seconds()},
                "resources": [f"rds:{name}"], "detail": f"{self.method} restore into RDS instance {name} at {address}"}

    def _validated_restore_time(self, rds) -> datetime | None:
        """moto accepts any RestoreTime: check it against the source's snapshots and now ourselves."""
        if not self.source_db_instance_identifier:
            raise PreconditionFailed("rds_pitr needs source_db_instance_identifier")
        if self.target in (None, "", "latest"):
            return None
        moment = datetime.fromisoformat(self.target)
        if moment.tzinfo is None:
            raise PreconditionFailed(f"restore time {self.target!r} needs a timezone")
        if moment > datetime.now(UTC):
            raise PreconditionFailed(f"restore time {self.target} is in the future")
        snaps = rds.describe_db_snapshots(DBInstanceIdentifier=self.source_db_instance_identifier)["DBSnapshots"]
        created = sorted(s["SnapshotCreateTime"] for s in snaps if s.get("SnapshotCreateTime"))
        if not created or moment < created[0]:
            raise PreconditionFailed(f"restore time {self.target} is before the earliest backup of "
                                     f"{self.source_db_instance_identifier} ({created[0].isoformat() if created else 'none'})")
        return moment

