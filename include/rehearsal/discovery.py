"""Service discovery for the control-plane database: a Route 53 SRV record that clients re-read.

Clients resolve the record at run time (on every reconnect and every second); switching the
database is an UPSERT of the record, never a restart of clients with new code.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiscoveryRecord:
    zone_id: str
    name: str  # e.g. _postgresql._tcp.controlplane-db.rehearsal.internal.

    @property
    def fqdn(self) -> str:
        return self.name if self.name.endswith(".") else self.name + "."


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


def point_at(route53, record: DiscoveryRecord, host: str, port: int, ttl: int = 1) -> bool:
    """Point the record at host:port; idempotent. Returns False when it already pointed there."""
    try:
        if resolve(route53, record) == (host, port):
            return False
    except LookupError:
        pass
    route53.change_resource_record_sets(HostedZoneId=record.zone_id, ChangeBatch={"Changes": [{
        "Action": "UPSERT",
        "ResourceRecordSet": {"Name": record.fqdn, "Type": "SRV", "TTL": ttl,
                              "ResourceRecords": [{"Value": f"0 0 {port} {host}."}]},
    }]})
    return True
