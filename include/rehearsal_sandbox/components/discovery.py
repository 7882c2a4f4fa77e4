"""Service discovery: a Route 53 hosted zone on the local AWS endpoint with two SRV records, one pointing at the
control-plane primary (clients re-read it), one listing the streaming standbys (runbooks find them there), and the
A record ``controlplane-db.rehearsal.internal.`` naming the primary's address, switched with the SRV record (clients
that take a host name, such as ``pgbench``, resolve it through the sandbox's DNS server; every database host listens
on the same port).

Slice: ``{"zone_id": "<hosted zone id>"}``.
"""
from __future__ import annotations

import secrets

from rehearsal.discovery import DiscoveryRecord, point_all_at, point_at, resolve, resolve_a
from rehearsal_sandbox.components.base import Component, ok

ZONE = "rehearsal.internal."
RECORD = "_postgresql._tcp.controlplane-db.rehearsal.internal."
REPLICA_RECORD = "_postgresql-replica._tcp.controlplane-db.rehearsal.internal."  # the standbys, for runbooks
A_RECORD = "controlplane-db.rehearsal.internal."  # the primary's address, switched with RECORD


class ServiceDiscovery(Component):
    name = "discovery"

    @property
    def zone_id(self) -> str:
        return self.state["zone_id"]

    def record(self) -> DiscoveryRecord:
        return DiscoveryRecord(zone_id=self.zone_id, name=RECORD, a_record=A_RECORD)

    def replica_record(self) -> DiscoveryRecord:
        return DiscoveryRecord(zone_id=self.zone_id, name=REPLICA_RECORD)

    def up(self) -> None:
        """The hosted zone, the record pointing at the control-plane primary, the replica record its standby."""
        zone = self.peer("aws_endpoint").client("route53").create_hosted_zone(Name=ZONE, CallerReference=secrets.token_hex(8))
        self.state["zone_id"] = zone["HostedZone"]["Id"].split("/")[-1]
        self.sandbox.save()
        self.point_at_primary()
        self.publish_standbys()

    def point_at_primary(self) -> bool:
        """The record (and its A record) points at the control-plane primary; False when it already did."""
        primary = self.peer("controlplane_db").primary
        return point_at(self.peer("aws_endpoint").client("route53"), self.record(), primary.host, primary.port)

    def publish_standbys(self) -> bool:
        """The replica record lists the running standbys (deleted when there is none)."""
        standby = self.peer("controlplane_db").standby
        targets = [(standby.host, standby.port)] if standby is not None else []
        return point_all_at(self.peer("aws_endpoint").client("route53"), self.replica_record(), targets)

    def status(self) -> dict[str, dict]:
        try:
            route53 = self.peer("aws_endpoint").client("route53")
            host, port = resolve(route53, self.record())
            addresses = resolve_a(route53, self.zone_id, A_RECORD)
            primary = self.peer("controlplane_db").primary
            return {self.name: ok((host, port) == (primary.host, primary.port) and addresses == [primary.host],
                                  f"{RECORD} -> {host}:{port}, {A_RECORD} -> {', '.join(addresses)}")}
        except Exception as exc:  # noqa: BLE001
            return {self.name: ok(False, str(exc))}

    def down(self) -> None:
        """Nothing of its own runs: the zone goes with the AWS endpoint."""
