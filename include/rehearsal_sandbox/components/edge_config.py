"""The edge configuration's first export, taken when the sandbox comes up (as the control-plane database's first
backups are): ``dr_backup_freshness`` finds one, and ``dr_backup_edge_config`` takes the next ones.

Reads what the ``ExportEdgeConfigurationOperator`` reads (``rehearsal.edge_config``): the fleet's endpoint mappings and
IPv4 allocations from the control-plane primary, the edge's routing record sets from the zone. Slice:
``{"first_export": "<export id>"}``.
"""
from __future__ import annotations

from datetime import UTC, datetime

from rehearsal.edge_config import EdgeConfig, read_allocations, read_endpoints, read_record_sets, write_export
from rehearsal.postgres.connection import connect
from rehearsal_sandbox.components.base import Component, ok, progress

# The edge's routing records (the edge connection's ``record`` and ``failover_record``).
ROUTING_RECORDS = ("apps.rehearsal.internal.", "apps-failover.rehearsal.internal.")


class EdgeConfigExport(Component):
    name = "edge_config"

    def up(self) -> None:
        if self.state.get("first_export"):
            return
        self.state["first_export"] = self.export()
        self.sandbox.save()
        progress(f"exported the edge configuration ({self.state['first_export']})")

    def export(self) -> str:
        cp, discovery = self.peer("controlplane_db"), self.peer("discovery")
        aws = self.peer("aws_endpoint")
        with connect(cp.endpoint(cp.primary)) as conn:
            endpoints, allocations = read_endpoints(conn), read_allocations(conn)
        record_sets, _ = read_record_sets(aws.client("route53"), discovery.zone_id, ROUTING_RECORDS)
        config = EdgeConfig(endpoints, allocations, "rehearsal.internal.", discovery.zone_id, record_sets,
                            datetime.now(UTC).isoformat())
        return write_export(cp.store(), config).export_id

    def status(self) -> dict[str, dict]:
        first = self.state.get("first_export")
        return {self.name: ok(bool(first), f"first export {first}" if first else "no export taken")}

    def down(self) -> None:
        """The exports go with the AWS endpoint."""
        self.state.pop("first_export", None)
