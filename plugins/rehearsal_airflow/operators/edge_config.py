"""The edge configuration (``rehearsal.edge_config``): exported to the backup store, verified against what is
live, restored from the newest export that verifies. Endpoint mappings come from the control-plane database, the
DNS routing configuration from Route 53, and which hosts are live from the agents' own reports."""
from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime

from airflow.sdk import BaseHook, Context

from rehearsal.edge_config import (
    DOCUMENT,
    PREFIX,
    ROUTED_TYPES,
    build_document,
    check_export,
    newest_verified,
    serialize,
    verify,
)
from rehearsal.errors import PreconditionFailed, VerificationFailed
from rehearsal.postgres.connection import connect
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator, now_iso

LIVE_SECONDS = 15  # an agent that reported within this of the freshest report is live (the scheduler's rule)


class EdgeConfigMixin(ControlPlaneMixin):
    edge_conn_id = "edge"

    def zone_id(self) -> str:
        zone = BaseHook.get_connection(self.edge_conn_id).extra_dejson.get("zone_id")
        if not zone:
            raise PreconditionFailed(f"connection {self.edge_conn_id!r} names no zone_id: no DNS routing to read")
        return zone

    def route53(self):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="route53").get_conn()

    def s3(self):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="s3").get_conn()

    def bucket(self) -> str:
        bucket = current_environment().backup_bucket
        if not bucket:
            raise PreconditionFailed("the rehearsal_environment Variable names no backup_bucket: no edge export store")
        return bucket

    def record_sets(self) -> list[dict]:
        return self.route53().list_resource_record_sets(HostedZoneId=self.zone_id())["ResourceRecordSets"]

    def live(self) -> tuple[list[dict], set[str]]:
        """Endpoint mappings now, and the hosts whose agents report (fresh within ``LIVE_SECONDS`` of the newest)."""
        with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
            mappings = [{"app_id": r[0], "slot": r[1], "host": r[2]} for r in conn.execute(
                "SELECT p.app_id, p.slot, h.hostname FROM placements p JOIN hosts h ON h.id = p.host_id")]
            live = {r[0] for r in conn.execute(
                f"""SELECT h.hostname FROM host_reports r JOIN hosts h ON h.id = r.host_id
                     WHERE r.reported_at >= (SELECT max(reported_at) FROM host_reports) - interval '{LIVE_SECONDS} seconds'""")}
        return mappings, live

    def exports(self) -> list[str]:
        s3, bucket = self.s3(), self.bucket()
        answer = s3.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}/", Delimiter="/")
        return [p["Prefix"].removeprefix(f"{PREFIX}/").rstrip("/") for p in answer.get("CommonPrefixes", [])]

    def read(self, export: str, name: str) -> bytes | None:
        try:
            return self.s3().get_object(Bucket=self.bucket(), Key=f"{PREFIX}/{export}/{name}")["Body"].read()
        except Exception as exc:  # noqa: BLE001 - a missing object is what check_export names
            if "NoSuchKey" in str(exc) or "Not Found" in str(exc) or "404" in str(exc):
                return None
            raise


class ExportEdgeConfigurationOperator(EdgeConfigMixin, DrillStepOperator):
    """The edge configuration exported beside its manifest, then read back and checked against it."""

    def run_step(self, context: Context) -> dict:
        mappings, _live = self.live()
        document = build_document(mappings, self.record_sets(), datetime.now(UTC))
        body, manifest = serialize(document)
        ident = json.loads(manifest)["export_id"]
        s3, bucket = self.s3(), self.bucket()
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{ident}/{DOCUMENT}", Body=body)
        s3.put_object(Bucket=bucket, Key=f"{PREFIX}/{ident}/manifest.json", Body=manifest)
        check_export(ident, self.read(ident, "manifest.json"), self.read(ident, DOCUMENT))  # as stored
        return {"export_id": ident, "key": f"s3://{bucket}/{PREFIX}/{ident}/", "bytes": len(body),
                "endpoint_mappings": len(document["endpoint_mappings"]), "records": len(document["dns_routing"]),
                "detail": f"exported {len(document['endpoint_mappings'])} endpoint mappings, "
                          f"{len(document['ipv4_allocations'])} IPv4 allocations and {len(document['dns_routing'])} "
                          f"record sets to s3://{bucket}/{PREFIX}/{ident}/ (checksums verified as stored)"}


class VerifyEdgeConfigurationOperator(EdgeConfigMixin, DrillStepOperator):
    """What is live now: no IPv4 address allocated twice, every endpoint on a live host; and a verified export to
    restore from exists."""

    def run_step(self, context: Context) -> dict:
        mappings, live = self.live()
        document = build_document(mappings, self.record_sets())
        check = verify(document, live)
        export, _doc, skipped = newest_verified(self.exports(), self.read)
        if not check.ok:
            raise VerificationFailed(f"the edge configuration live now is wrong: {check.describe()}")
        return {"live_hosts": len(live), "endpoints": len(mappings), "newest_verified_export": export,
                "skipped_exports": skipped, "verified_at": now_iso(),
                "detail": f"{check.describe()} ({len(mappings)} endpoints, {len(live)} live hosts); newest verified "
                          f"export {export}" + (f" (newer ones skipped: {'; '.join(skipped)})" if skipped else "")}


class RestoreEdgeConfigurationOperator(EdgeConfigMixin, DrillStepOperator):
    """The DNS routing configuration put back from the newest export that verifies (a corrupt or incomplete newer one
    skipped, named), then the result verified: no IPv4 address allocated twice, every endpoint on a live host (an
    endpoint on a host that is not back makes the step fail naming it)."""

    template_fields: Sequence[str] = ()

    def run_step(self, context: Context) -> dict:
        export, document, skipped = newest_verified(self.exports(), self.read)
        changes = [{"Action": "UPSERT", "ResourceRecordSet": {k: v for k, v in s.items() if k != "HealthCheckId"}}
                   for s in document["dns_routing"] if s["Type"] in ROUTED_TYPES]
        if changes:
            self.route53().change_resource_record_sets(HostedZoneId=self.zone_id(), ChangeBatch={"Changes": changes})
        mappings, live = self.live()
        check = verify(build_document(mappings, self.record_sets()), live)
        if not check.ok:
            raise VerificationFailed(f"restored the DNS routing of export {export} ({len(changes)} record sets), but: "
                                     f"{check.describe()}")
        return {"export": export, "records_restored": len(changes), "skipped_exports": skipped, "confirmed_at": now_iso(),
                "detail": f"DNS routing restored from {export} ({len(changes)} record sets)"
                          + (f", newer exports skipped: {'; '.join(skipped)}" if skipped else "") + f"; {check.describe()}"}
