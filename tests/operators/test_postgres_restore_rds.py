"""PostgresRestoreOperator's RDS methods against the local AWS endpoint, at API level.

moto creates instances at once and accepts any RestoreTime: the operator's own checks of the
restore time are what is under test, not moto's canned answers.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rehearsal.errors import PreconditionFailed

pytestmark = pytest.mark.sandbox


class RecordingTaskInstance:
    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def run(operator) -> tuple[dict | None, dict]:
    ti = RecordingTaskInstance()
    context = {"ti": ti, "run_id": "manual__test", "dag": None}
    try:
        result = operator.execute(context)
    except PreconditionFailed:
        result = None
    return result, ti.xcom["step"]


def test_rds_snapshot_and_point_in_time_restores(sandbox):
    from rehearsal_airflow.operators.postgres_restore import PostgresRestoreOperator

    rds = sandbox.aws("rds")
    rds.create_db_instance(DBInstanceIdentifier="cp-prod", Engine="postgres", DBInstanceClass="db.t3.medium",
                           MasterUsername="postgres", MasterUserPassword="not-a-real-secret", AllocatedStorage=20)
    rds.create_db_snapshot(DBInstanceIdentifier="cp-prod", DBSnapshotIdentifier="cp-snap")
    try:
        result, step = run(PostgresRestoreOperator(task_id="from_snapshot", method="rds_snapshot",
                                                   db_snapshot_identifier="cp-snap", cluster_name="cp-from-snap"))
        assert step["status"] == "success" and result["resources"] == ["rds:cp-from-snap"]
        assert result["address"].endswith(":5432")

        result, step = run(PostgresRestoreOperator(task_id="to_latest", method="rds_pitr", target="latest",
                                                   source_db_instance_identifier="cp-prod", cluster_name="cp-pitr-latest"))
        assert step["status"] == "success", step["detail"]

        early = (datetime.now(UTC) - timedelta(days=30)).isoformat()
        _, step = run(PostgresRestoreOperator(task_id="before_backups", method="rds_pitr", target=early,
                                              source_db_instance_identifier="cp-prod", cluster_name="cp-pitr-early"))
        # (moto reports a fresh creation time for its automated snapshot on every call: compare up to it)
        assert step["status"] == "failed"
        assert step["detail"].startswith(f"PreconditionFailed: restore time {early} is before the earliest backup of cp-prod (")

        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        _, step = run(PostgresRestoreOperator(task_id="in_the_future", method="rds_pitr", target=future,
                                              source_db_instance_identifier="cp-prod", cluster_name="cp-pitr-future"))
        assert step["detail"] == f"PreconditionFailed: restore time {future} is in the future"

        instances = {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}
        assert {"cp-from-snap", "cp-pitr-latest"} <= instances
        assert not {"cp-pitr-early", "cp-pitr-future"} & instances
    finally:
        for name in ("cp-from-snap", "cp-pitr-latest", "cp-prod"):
            try:
                rds.delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True)
            except rds.exceptions.DBInstanceNotFoundFault:
                pass
