"""Edge configuration (endpoint mappings, IPv4 allocation state, DNS routing): export it to the backup store, restore
it from the newest export that verifies, verify it. The work is in ``rehearsal.edge_config``.

Where it reads from: the control-plane database (``controlplane_db``: placements and hosts, ``ipv4_allocations``,
the agents' ``host_reports`` for liveness), Route 53 (the zone and routing record names of the ``edge``
connection's extra: ``zone``, ``record``, ``failover_record``; or ``routing_records`` given to the operator), and
the backup bucket of the ``rehearsal_environment`` Variable under ``edge-config/``.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property

from airflow.sdk import Context

from rehearsal.edge_config import (
    EXPORT_PREFIX,
    EdgeConfig,
    Liveness,
    allocation_changes,
    apply_allocations,
    describe_record,
    dns_changes,
    newest_verified_export,
    read_allocations,
    read_endpoints,
    read_host_reports,
    read_record_sets,
    verify_edge_config,
    write_export,
    zone_id_by_name,
)
from rehearsal.errors import PreconditionFailed
from rehearsal.postgres.connection import connect
from rehearsal_airflow.operators.base import DrillStepOperator, now_iso


class EdgeConfigMixin:
    """What the three operators share: where the configuration lives and how the live one is read."""

    controlplane_conn_id: str
    edge_conn_id: str
    aws_conn_id: str
    bucket: str | None
    routing_records: list[str] | None

    def _init_sources(self, controlplane_conn_id: str, edge_conn_id: str, aws_conn_id: str, bucket: str | None,
                      routing_records: list[str] | None) -> None:
        self.controlplane_conn_id = controlplane_conn_id
        self.edge_conn_id = edge_conn_id
        self.aws_conn_id = aws_conn_id
        self.bucket = bucket
        self.routing_records = routing_records

    @cached_property
    def edge_settings(self) -> tuple[str, list[str], str | None]:
        """(zone name, routing record names, zone id if the connection names it), from the edge connection."""
        from airflow.sdk import BaseHook

        try:
            extra = BaseHook.get_connection(self.edge_conn_id).extra_dejson
        except Exception as exc:  # noqa: BLE001 - the connection is missing: say which
            raise PreconditionFailed(f"the edge connection {self.edge_conn_id!r} cannot be read ({exc}): it names the "
                                     "DNS zone and routing records of the edge configuration") from exc
        names = list(self.routing_records or [n for n in (extra.get("record"), extra.get("failover_record")) if n])
        if not extra.get("zone") or not names:
            raise PreconditionFailed(f"the edge connection {self.edge_conn_id!r} names no zone or no routing record "
                                     f"(extra zone={extra.get('zone')!r}, record={extra.get('record')!r})")
        return extra["zone"], names, extra.get("zone_id")

    @cached_property
    def route53(self):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="route53").get_conn()

    @cached_property
    def controlplane(self):
        from rehearsal_airflow.hooks.controlplane_db import ControlPlaneDbHook

        return ControlPlaneDbHook(postgres_conn_id=self.controlplane_conn_id, aws_conn_id=self.aws_conn_id)

    @cached_property
    def store(self):
        from rehearsal_airflow.environment import current_environment
        from rehearsal_airflow.hooks.backup_store import BackupStoreHook

        env = current_environment()
        return BackupStoreHook(self.bucket or env.backup_bucket, env.backup_cluster, self.aws_conn_id).store

    def zone_id(self) -> str:
        zone, _, zone_id = self.edge_settings
        return zone_id or zone_id_by_name(self.route53, zone)

    def read_live(self) -> tuple[EdgeConfig, Liveness, int]:
        """The edge configuration as it is now, the hosts' liveness, and the Route 53 calls it took."""
        zone, names, _ = self.edge_settings
        zone_id = self.zone_id()
        with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
            endpoints, allocations = read_endpoints(conn), read_allocations(conn)
            report_age, _ = read_host_reports(conn)
        record_sets, calls = read_record_sets(self.route53, zone_id, names)
        config = EdgeConfig(endpoints, allocations, zone, zone_id, record_sets, datetime.now(UTC).isoformat())
        return config, Liveness.from_reports(report_age), calls

    def verify_live(self, subject: str) -> tuple[EdgeConfig, dict]:
        config, liveness, _ = self.read_live()
        checks = verify_edge_config(config, liveness, subject, self.edge_settings[1])
        return config, {"checks": checks.as_dicts(), "ok": checks.ok, "checkset": checks}


class ExportEdgeConfigurationOperator(EdgeConfigMixin, DrillStepOperator):
    """Export the live edge configuration with its manifest (sizes, sha256). The content's findings (an address
    allocated twice, an endpoint on a dead host) are recorded in the output and logged, not raised: the export is the
    truth at this moment, and ``dr_backup_freshness`` / the verify step judge it."""

    template_fields: Sequence[str] = ("bucket",)

    def __init__(self, *, controlplane_conn_id: str = "controlplane_db", edge_conn_id: str = "edge",
                 aws_conn_id: str = "aws_default", bucket: str | None = None, routing_records: list[str] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_sources(controlplane_conn_id, edge_conn_id, aws_conn_id, bucket, routing_records)

    def run_step(self, context: Context) -> dict:
        config, liveness, calls = self.read_live()
        manifest = write_export(self.store, config)
        checks = verify_edge_config(config, liveness, f"edge configuration exported as {manifest.export_id}",
                                    self.edge_settings[1])
        for check in checks.failed:
            self.log.warning("exported edge configuration: %s: %s", check.name, check.detail)
        summary = manifest.summary
        return {"export_id": manifest.export_id, "exported_at": manifest.exported_at,
                "location": f"s3://{self.store.bucket}/{EXPORT_PREFIX}{manifest.export_id}/", "summary": summary,
                "objects": manifest.objects, "route53_calls": calls,
                "checks": [{**c, "critical": False} for c in checks.as_dicts()],
                "detail": (f"exported {summary['endpoints']} endpoint(s) on {summary['hosts']} host(s), "
                           f"{summary['allocations']} IPv4 allocation(s), {summary['record_sets']} routing record set(s) "
                           f"as {manifest.export_id}" + ("" if checks.ok else "; findings: " + "; ".join(
                               f"{c.name}: {c.detail}" for c in checks.failed)))}


class RestoreEdgeConfigurationOperator(EdgeConfigMixin, DrillStepOperator):
    """Restore from the newest export whose manifest checksums verify (newer corrupt or incomplete ones skipped and
    named): the DNS routing record sets that are missing or differ are UPSERTed, the IPv4 allocations that are missing
    or differ re-applied; then the live configuration is verified (``VerificationFailed`` names each failed check).
    Idempotent: a second run changes nothing. A missing export is ``EdgeExportMissing`` naming the prefix."""

    template_fields: Sequence[str] = ("bucket",)

    def __init__(self, *, controlplane_conn_id: str = "controlplane_db", edge_conn_id: str = "edge",
                 aws_conn_id: str = "aws_default", bucket: str | None = None, routing_records: list[str] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_sources(controlplane_conn_id, edge_conn_id, aws_conn_id, bucket, routing_records)

    def run_step(self, context: Context) -> dict:
        chosen = newest_verified_export(self.store)
        for why in chosen.skipped:
            self.log.warning("skipped: %s", why)
        exported = chosen.config
        zone_id = self.zone_id()
        current, _ = read_record_sets(self.route53, zone_id, {r["Name"] for r in exported.record_sets}
                                      | set(self.edge_settings[1]))
        changes = dns_changes(exported.record_sets, current)
        change_id = None
        if changes:
            answer = self.route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
                "Comment": f"edge configuration restored from export {chosen.export_id}", "Changes": changes})
            change_id = answer["ChangeInfo"]["Id"]
            self.log.info("DNS routing: %s record set(s) upserted (change %s)", len(changes), change_id)
        with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn, conn.transaction():
            to_apply = allocation_changes(exported.allocations, read_allocations(conn))
            applied, gone = apply_allocations(conn, to_apply)
        _, verified = self.verify_live(f"edge configuration restored from export {chosen.export_id}")
        record = {"export_id": chosen.export_id, "exported_at": chosen.manifest.exported_at, "skipped": chosen.skipped,
                  "dns_upserted": [describe_record(c["ResourceRecordSet"]) for c in changes], "dns_change_id": change_id,
                  "allocations_applied": applied, "allocations_skipped_apps_gone": gone,
                  "checks": verified["checks"], "verified_at": now_iso()}
        record["detail"] = (f"restored from export {chosen.export_id} ({chosen.manifest.exported_at})"
                            + (f", skipping {len(chosen.skipped)} newer: " + "; ".join(chosen.skipped) if chosen.skipped else "")
                            + f"; {len(changes)} DNS record set(s) upserted"
                            + (f" ({', '.join(record['dns_upserted'])})" if changes else "")
                            + f", {applied} IPv4 allocation(s) re-applied"
                            + (f", apps no longer present: {gone}" if gone else ""))
        if not verified["ok"]:
            self.log.error("%s", record["detail"])
        verified["checkset"].raise_if_failed()
        return record


class VerifyEdgeConfigurationOperator(EdgeConfigMixin, DrillStepOperator):
    """Verify the live edge configuration: no IPv4 address allocated twice, every endpoint on a live host (the
    agents' reports), every app with an endpoint holding an address, the routing records present."""

    def __init__(self, *, controlplane_conn_id: str = "controlplane_db", edge_conn_id: str = "edge",
                 aws_conn_id: str = "aws_default", routing_records: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self._init_sources(controlplane_conn_id, edge_conn_id, aws_conn_id, None, routing_records)

    def run_step(self, context: Context) -> dict:
        config, verified = self.verify_live("live edge configuration")
        verified["checkset"].raise_if_failed()
        summary = config.summary()
        return {"checks": verified["checks"], "summary": summary, "verified_at": now_iso(),
                "detail": (f"{summary['endpoints']} endpoint(s) on {summary['hosts']} live host(s), "
                           f"{summary['allocations']} IPv4 address(es) each allocated once, "
                           f"{summary['record_sets']} routing record set(s)")}
