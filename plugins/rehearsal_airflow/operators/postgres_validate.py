"""PostgresValidateOperator: schema version, basic reads, row counts against the backup manifest, amcheck."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from rehearsal.errors import PreconditionFailed, VerificationFailed
from rehearsal.platform import split_address
from rehearsal.postgres.validate import validate_controlplane
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.backup_store import BackupStoreHook
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator


class PostgresValidateOperator(ControlPlaneMixin, DrillStepOperator):
    """:param address: host:port of the database to validate (templated)
    :param recovery: or the record of the recovery that produced it (``{"address": ...}``, an XComArg)
    :param expected_schema_version: default: the schema version in the newest base backup's manifest
    :param count_tolerance: how far below that manifest's row counts a table may be
    :param schema_rule: ``exact`` (restore tests) or ``at_least`` (a failover: newer than its last backup is fine)
    :param amcheck: check btree indexes; never on a promoted standby (production, inside the outage), which was a
        physical replica of the old primary
    """

    template_fields: Sequence[str] = ("address", "expected_schema_version", "recovery")

    def __init__(self, *, address: str | None = None, recovery: Any = None, expected_schema_version: str | None = None,
                 count_tolerance: float = 0.01, schema_rule: str = "exact", amcheck: bool = True,
                 controlplane_conn_id: str = "controlplane_admin", aws_conn_id: str = "aws_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.address = address
        self.recovery = recovery
        self.expected_schema_version = expected_schema_version
        self.count_tolerance = count_tolerance
        self.schema_rule = schema_rule
        self.amcheck = amcheck
        self.controlplane_conn_id = controlplane_conn_id
        self.aws_conn_id = aws_conn_id

    def run_step(self, context: Context) -> dict:
        env = current_environment()
        manifest = BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store.latest_manifest("base_backup")
        expected = self.expected_schema_version or manifest.schema_version
        address = self.address or (self.recovery or {}).get("address")
        if not address:
            raise PreconditionFailed("nothing to validate: no address and no recovered database")
        endpoint = self.controlplane.endpoint(*split_address(address))
        promoted = (self.recovery or {}).get("method") == "promote_standby"
        checks = validate_controlplane(endpoint, expected, manifest.row_counts, self.count_tolerance,
                                       run_amcheck=self.amcheck and not promoted, schema_rule=self.schema_rule)
        for check in checks.checks:
            self.log.info("%s %s: %s", "ok  " if check.ok else "FAIL", check.name, check.detail)
        if not checks.ok:
            raise VerificationFailed(checks.subject, checks.failed)
        return {"address": address, "ok": True, "checks": checks.as_dicts(), "schema_version": expected,
                "detail": f"{len(checks.checks)} checks passed against backup {manifest.backup_id}"}
