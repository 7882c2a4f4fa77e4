"""Service discovery for the control-plane database: a Route 53 SRV record that clients re-read.

Clients resolve the record at run time (on every reconnect and every second); switching the
database is an UPSERT of the record, never a restart of clients with new code. A record may name the service's A
record too (``a_record``, e.g. ``controlplane-db.rehearsal.internal.``, for clients that take a host name and a
well-known port, such as ``pgbench``): ``point_at`` switches both in one change batch.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from rehearsal.errors import PreconditionFailed


@dataclass(frozen=True)
class DiscoveryRecord:
    zone_id: str
    name: str  # e.g. _postgresql._tcp.controlplane-db.rehearsal.internal.
    a_record: str | None = None  # e.g. controlplane-db.rehearsal.internal.: switched with the SRV record

    @property
    def fqdn(self) -> str:
        return self.name if self.name.endswith(".") else self.name + "."

    @property
    def a_fqdn(self) -> str | None:
        if not self.a_record:
            return None
        return self.a_record if self.a_record.endswith(".") else self.a_record + "."


def resolve(route53, record: DiscoveryRecord) -> tuple[str, int]:
    """(host, port) the record points at now. One API call, no paginator (moto's breaks on SRV)."""
    resp = route53.list_resource_record_sets(HostedZoneId=record.zone_id, StartRecordName=record.fqdn,
                                             StartRecordType="SRV")
    for rrset in resp.get("ResourceRecordSets", []):
        if rrset["Name"] == record.fqdn and rrset["Type"] == "SRV":
            _prio, _weight, port, target = rrset["ResourceRecords"][0]["Value"].split()
            return target.rstrip("."), int(port)
    raise LookupError(f"discovery record {record.fqdn} not found in zone {record.zone_id}")


def resolve_all(route53, record: DiscoveryRecord) -> list[tuple[str, int]]:
    """Every (host, port) of an SRV record that lists several targets (a replica record, say)."""
    resp = route53.list_resource_record_sets(HostedZoneId=record.zone_id, StartRecordName=record.fqdn,
                                             StartRecordType="SRV")
    for rrset in resp.get("ResourceRecordSets", []):
        if rrset["Name"] == record.fqdn and rrset["Type"] == "SRV":
            out = []
            for value in rrset["ResourceRecords"]:
                _prio, _weight, port, target = value["Value"].split()
                out.append((target.rstrip("."), int(port)))
            return out
    raise LookupError(f"discovery record {record.fqdn} not found in zone {record.zone_id}")


def point_all_at(route53, record: DiscoveryRecord, targets: list[tuple[str, int]], ttl: int = 1) -> bool:
    """Make an SRV record list exactly ``targets`` (deleted when empty); idempotent."""
    try:
        current = resolve_all(route53, record)
    except LookupError:
        current = []
    if sorted(current) == sorted(targets):
        return False
    values = [{"Value": f"0 0 {port} {host}."} for host, port in targets]
    if targets:
        change = {"Action": "UPSERT", "ResourceRecordSet": {"Name": record.fqdn, "Type": "SRV", "TTL": ttl,
                                                             "ResourceRecords": values}}
    else:
        change = {"Action": "DELETE", "ResourceRecordSet": {
            "Name": record.fqdn, "Type": "SRV", "TTL": ttl,
            "ResourceRecords": [{"Value": f"0 0 {p} {h}."} for h, p in current]}}
    route53.change_resource_record_sets(HostedZoneId=record.zone_id, ChangeBatch={"Changes": [change]})
    return True


def resolve_a(route53, zone_id: str, name: str) -> list[str]:
    """The addresses of a plain A record (one API call); ``LookupError`` naming it when there is none."""
    fqdn = name if name.endswith(".") else name + "."
    resp = route53.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=fqdn, StartRecordType="A")
    for rrset in resp.get("ResourceRecordSets", []):
        if rrset["Name"] == fqdn and rrset["Type"] == "A" and "SetIdentifier" not in rrset:
            return [value["Value"] for value in rrset["ResourceRecords"]]
    raise LookupError(f"A record {fqdn} not found in zone {zone_id}")


def point_at(route53, record: DiscoveryRecord, host: str, port: int, ttl: int = 1) -> bool:
    """Point the record at host:port (and its A record, when it names one, at host) in one change batch;
    idempotent. Returns False when both already pointed there. ``PreconditionFailed`` (nothing changed) when the
    record has an A record and ``host`` is not an IPv4 address."""
    if record.a_fqdn and not _is_ipv4(host):
        raise PreconditionFailed(f"cannot point A record {record.a_fqdn} at {host!r}: not an IPv4 address (nothing changed)")
    try:
        srv_there = resolve(route53, record) == (host, port)
    except LookupError:
        srv_there = False
    a_there = True
    if record.a_fqdn:
        try:
            a_there = resolve_a(route53, record.zone_id, record.a_fqdn) == [host]
        except LookupError:
            a_there = False
    if srv_there and a_there:
        return False
    changes = [{"Action": "UPSERT", "ResourceRecordSet": {"Name": record.fqdn, "Type": "SRV", "TTL": ttl,
                                                          "ResourceRecords": [{"Value": f"0 0 {port} {host}."}]}}]
    if record.a_fqdn:
        changes.append({"Action": "UPSERT", "ResourceRecordSet": {"Name": record.a_fqdn, "Type": "A", "TTL": ttl,
                                                                  "ResourceRecords": [{"Value": host}]}})
    route53.change_resource_record_sets(HostedZoneId=record.zone_id, ChangeBatch={"Changes": changes})
    return True


def _is_ipv4(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return False
