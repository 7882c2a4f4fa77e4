"""Edge configuration, the plan's critical asset: endpoint mappings, IPv4 allocation state and the DNS routing
configuration; exported to the backup store with a manifest, restored from the newest export that verifies.

An export is four objects under ``edge-config/<export id>/`` in the backup bucket::

    endpoints.json           {"format": "rehearsal-edge-config/1", "endpoints": [{"app_id", "slot", "host", "region"}]}
    ipv4_allocations.json    {"format": ..., "allocations": [{"app_id", "address"}]}
    dns_routing.json         {"format": ..., "zone": "rehearsal.internal.", "zone_id", "record_sets": [<Route 53 record set>]}
    manifest.json            {"format": "rehearsal-edge-config-manifest/1", "export_id", "exported_at",
                              "objects": [{"name", "key", "size", "sha256"}], "summary": {...}}

The manifest is written last: an export without one is incomplete (its writer died), and one whose objects do not
match their size and sha256 is corrupt. Both are skipped, by name, when the newest verified export is chosen.

Where the data comes from: endpoint mappings (the live fleet's placements, each app instance on its host) and IPv4
allocations from the control-plane database; the DNS routing configuration from Route 53 (the record sets the edge
routes customers by); liveness from the agents' own reports (``host_reports``), never from a health check.

Verification collects named checks (``rehearsal.checks``): no IPv4 address allocated twice, every endpoint on a live
host, every endpoint's app holding an address, the routing records present; each failure names the export, the
address, the endpoint or the host.
"""
from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets as _random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rehearsal.checks import CheckSet
from rehearsal.errors import ManifestError, PreconditionFailed

if TYPE_CHECKING:
    from rehearsal.backups.store import BackupStore

FORMAT = "rehearsal-edge-config/1"
MANIFEST_FORMAT = "rehearsal-edge-config-manifest/1"
EXPORT_PREFIX = "edge-config/"
MANIFEST_NAME = "manifest.json"
PARTS = ("endpoints.json", "ipv4_allocations.json", "dns_routing.json")
# A host is live when its agent reported no more than this behind the freshest report (the platform scheduler's own
# rule, STALE_SECONDS: a control plane back from an outage does not find every host dead).
LIVE_WITHIN_SECONDS = 15.0
# ...and the freshest report itself is recent: with nobody reporting, no host is known to be live.
REPORTS_MAX_AGE_SECONDS = 60.0
# The documentation ranges (RFC 5737) the sandbox allocates its dedicated IPv4 addresses from.
DOCUMENTATION_NETWORKS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
# Route 53 record-set fields a restore gives back (everything that defines routing).
RECORD_FIELDS = ("Name", "Type", "SetIdentifier", "Weight", "Region", "GeoLocation", "Failover", "MultiValueAnswer",
                 "TTL", "ResourceRecords", "AliasTarget", "HealthCheckId")


class EdgeExportMissing(PreconditionFailed):
    """No edge-configuration export (that verifies) exists; the message names the prefix and every skipped one."""


class EdgeExportCorrupt(ManifestError):
    """An export is incomplete or its objects do not match its manifest; the message names the export and the key."""


# ---------------------------------------------------------------------------------------------------- the document
@dataclass(frozen=True)
class EndpointMapping:
    """One app instance (an endpoint of the app) and the host it runs on."""

    app_id: int
    slot: int
    host: str
    region: str = ""

    @property
    def label(self) -> str:
        return f"app {self.app_id} slot {self.slot}"


@dataclass(frozen=True)
class Allocation:
    app_id: int
    address: str


@dataclass
class EdgeConfig:
    endpoints: list[EndpointMapping]
    allocations: list[Allocation]
    zone: str
    zone_id: str
    record_sets: list[dict]
    exported_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def parts(self) -> dict[str, bytes]:
        """The export's objects, canonical JSON (sorted keys): the same configuration gives the same bytes."""
        return {
            "endpoints.json": _canonical({"format": FORMAT, "endpoints": [asdict(e) for e in self.endpoints]}),
            "ipv4_allocations.json": _canonical({"format": FORMAT, "allocations": [asdict(a) for a in self.allocations]}),
            "dns_routing.json": _canonical({"format": FORMAT, "zone": self.zone, "zone_id": self.zone_id,
                                            "record_sets": [routing_fields(r) for r in self.record_sets]}),
        }

    def summary(self) -> dict:
        return {"endpoints": len(self.endpoints), "hosts": len({e.host for e in self.endpoints}),
                "allocations": len(self.allocations), "record_sets": len(self.record_sets), "zone": self.zone}

    @classmethod
    def from_parts(cls, parts: dict[str, bytes], where: str, exported_at: str = "") -> EdgeConfig:
        """Parse an export's objects; a malformed one is ``EdgeExportCorrupt`` naming ``where`` and the object."""
        docs = {}
        for name in PARTS:
            try:
                doc = json.loads(parts[name])
            except (KeyError, ValueError) as exc:
                raise EdgeExportCorrupt(f"{where}: {name} is not JSON ({exc})") from None
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise EdgeExportCorrupt(f"{where}: {name} has format {doc.get('format') if isinstance(doc, dict) else None!r}, "
                                        f"expected {FORMAT!r}")
            docs[name] = doc
        try:
            endpoints = [EndpointMapping(int(e["app_id"]), int(e["slot"]), str(e["host"]), str(e.get("region", "")))
                         for e in docs["endpoints.json"]["endpoints"]]
            allocations = [Allocation(int(a["app_id"]), str(a["address"])) for a in docs["ipv4_allocations.json"]["allocations"]]
            dns = docs["dns_routing.json"]
            record_sets = [dict(r) for r in dns["record_sets"]]
            if not all(isinstance(r.get("Name"), str) and isinstance(r.get("Type"), str) for r in record_sets):
                raise ValueError("a record set without Name or Type")
            return cls(endpoints, allocations, str(dns["zone"]), str(dns.get("zone_id", "")), record_sets, exported_at)
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgeExportCorrupt(f"{where}: malformed content ({type(exc).__name__}: {exc})") from None


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def routing_fields(record_set: dict) -> dict:
    """What defines routing in a Route 53 record set (what list_resource_record_sets returns, minus the rest)."""
    return {k: record_set[k] for k in RECORD_FIELDS if k in record_set}


def record_key(record_set: dict) -> tuple[str, str, str]:
    return (normalize_name(record_set["Name"]), record_set["Type"], record_set.get("SetIdentifier", ""))


def normalize_name(name: str) -> str:
    name = name.lower()
    return name if name.endswith(".") else name + "."


def describe_record(record_set: dict) -> str:
    name, rtype, ident = record_key(record_set)
    return f"{name} {rtype}" + (f" ({ident})" if ident else "")


# ---------------------------------------------------------------------------------------------------- reading
def read_endpoints(conn) -> list[EndpointMapping]:
    """The live fleet's endpoint mappings: every placed app instance and its host (one query)."""
    rows = conn.execute("SELECT p.app_id, p.slot, h.hostname, h.region FROM placements p JOIN hosts h ON h.id = p.host_id "
                        "ORDER BY p.app_id, p.slot").fetchall()
    return [EndpointMapping(int(a), int(s), h, r) for a, s, h, r in rows]


def read_allocations(conn) -> list[Allocation]:
    rows = conn.execute("SELECT app_id, host(address) FROM ipv4_allocations ORDER BY app_id").fetchall()
    return [Allocation(int(a), str(addr)) for a, addr in rows]


def read_host_reports(conn) -> tuple[dict[str, float], float]:
    """``({hostname: seconds since its agent's last report}, the database's now as unix time)``, by the database's
    clock (the reports are stamped by it)."""
    rows = conn.execute("SELECT h.hostname, extract(epoch FROM now() - r.reported_at)::float8, "
                        "extract(epoch FROM now())::float8 FROM host_reports r JOIN hosts h ON h.id = r.host_id").fetchall()
    now = rows[0][2] if rows else datetime.now(UTC).timestamp()
    return {h: float(age) for h, age, _ in rows}, float(now)


def read_record_sets(route53, zone_id: str, names: Iterable[str]) -> tuple[list[dict], int]:
    """The zone's record sets named ``names`` (all their set identifiers) and the API calls it took.

    One call without ``MaxItems`` (moto returns no ``NextRecordIdentifier`` and boto3's paginator fails on weighted
    sets); a truncated answer (real Route 53 pages at 300) is followed by its ``NextRecord*`` fields."""
    wanted = {normalize_name(n) for n in names}
    kwargs: dict[str, Any] = {"HostedZoneId": zone_id}
    found, calls = [], 0
    while True:
        calls += 1
        page = route53.list_resource_record_sets(**kwargs)
        found += [routing_fields(r) for r in page.get("ResourceRecordSets", []) if normalize_name(r["Name"]) in wanted]
        if not page.get("IsTruncated") or not page.get("NextRecordName"):
            return sorted(found, key=record_key), calls
        kwargs = {"HostedZoneId": zone_id, "StartRecordName": page["NextRecordName"]}
        if page.get("NextRecordType"):
            kwargs["StartRecordType"] = page["NextRecordType"]
        if page.get("NextRecordIdentifier"):
            kwargs["StartRecordIdentifier"] = page["NextRecordIdentifier"]


def zone_id_by_name(route53, zone: str) -> str:
    """The hosted zone's id from its name (one call); ``PreconditionFailed`` naming it when there is none."""
    answer = route53.list_hosted_zones_by_name(DNSName=zone, MaxItems="1")
    for hosted in answer.get("HostedZones", []):
        if normalize_name(hosted["Name"]) == normalize_name(zone):
            return hosted["Id"].split("/")[-1]
    raise PreconditionFailed(f"no Route 53 hosted zone named {zone}")


# ---------------------------------------------------------------------------------------------------- verification
@dataclass(frozen=True)
class Liveness:
    """Which hosts are live, from their agents' reports."""

    live: frozenset[str]
    report_age: dict[str, float]  # seconds since each reporting host's last report
    freshest_age: float | None

    @classmethod
    def from_reports(cls, report_age: dict[str, float], live_within: float = LIVE_WITHIN_SECONDS,
                     reports_max_age: float = REPORTS_MAX_AGE_SECONDS) -> Liveness:
        if not report_age:
            return cls(frozenset(), {}, None)
        freshest = min(report_age.values())
        if freshest > reports_max_age:
            return cls(frozenset(), dict(report_age), freshest)
        return cls(frozenset(h for h, age in report_age.items() if age - freshest <= live_within), dict(report_age),
                   freshest)

    def why_dead(self, host: str) -> str:
        if host not in self.report_age:
            return f"{host} has never reported"
        return f"{host} last reported {self.report_age[host]:.0f}s ago"


def verify_edge_config(config: EdgeConfig, liveness: Liveness, subject: str,
                       routing_names: Iterable[str] = ()) -> CheckSet:
    """Named checks of one edge configuration (an export, or what is live after a restore):

    - ``ipv4_unique``: no IPv4 address allocated to two apps (each named with its apps);
    - ``ipv4_valid``: every allocation is one IPv4 address;
    - ``host_reports_current``: some agent reported in the last ``REPORTS_MAX_AGE_SECONDS``;
    - ``endpoints_on_live_hosts``: every endpoint maps to a host whose agent reports (each dead host named, with the
      endpoints on it);
    - ``endpoints_have_ipv4``: every app with an endpoint holds an address;
    - ``dns_routing``: every routing record name has at least one record set.
    """
    checks = CheckSet(subject)
    by_address: dict[str, list[int]] = defaultdict(list)
    invalid = []
    for alloc in config.allocations:
        try:
            address = ipaddress.ip_address(alloc.address)
            if address.version != 4:
                raise ValueError("not IPv4")
            by_address[str(address)].append(alloc.app_id)
        except ValueError:
            invalid.append(f"app {alloc.app_id}: {alloc.address!r}")
    twice = {a: sorted(apps) for a, apps in by_address.items() if len(apps) > 1}
    checks.add("ipv4_unique", not twice,
               "; ".join(f"{a} allocated {len(apps)} times (apps {', '.join(map(str, apps))})"
                         for a, apps in sorted(twice.items(), key=lambda item: ipaddress.ip_address(item[0])))
               if twice else f"{len(by_address)} address(es), each allocated once")
    checks.add("ipv4_valid", not invalid, ("not an IPv4 address: " + "; ".join(invalid[:10])) if invalid
               else f"{len(config.allocations)} allocation(s), each one IPv4 address")
    fresh = liveness.freshest_age is not None and liveness.freshest_age <= REPORTS_MAX_AGE_SECONDS
    checks.add("host_reports_current", fresh,
               f"freshest agent report {liveness.freshest_age:.0f}s old, {len(liveness.live)} live host(s)" if fresh else
               ("no agent has ever reported: no host is known to be live" if liveness.freshest_age is None else
                f"the freshest agent report is {liveness.freshest_age:.0f}s old (more than "
                f"{REPORTS_MAX_AGE_SECONDS:.0f}s): no host is known to be live"))
    dead: dict[str, list[EndpointMapping]] = defaultdict(list)
    for endpoint in config.endpoints:
        if endpoint.host not in liveness.live:
            dead[endpoint.host].append(endpoint)
    checks.add("endpoints_on_live_hosts", not dead,
               "; ".join(f"{liveness.why_dead(host)}: {len(eps)} endpoint(s) on it ("
                         + ", ".join(e.label for e in eps[:5]) + (", ..." if len(eps) > 5 else "") + ")"
                         for host, eps in sorted(dead.items()))
               if dead else f"{len(config.endpoints)} endpoint(s) on {len({e.host for e in config.endpoints})} live host(s)")
    allocated = {a.app_id for a in config.allocations}
    without = sorted({e.app_id for e in config.endpoints} - allocated)
    checks.add("endpoints_have_ipv4", not without,
               f"{len(without)} app(s) with endpoints hold no IPv4 address: apps {', '.join(map(str, without[:10]))}"
               + (", ..." if len(without) > 10 else "") if without else
               f"every app with an endpoint ({len({e.app_id for e in config.endpoints})}) holds an address")
    names = sorted({normalize_name(n) for n in routing_names})
    present = {normalize_name(r["Name"]) for r in config.record_sets}
    missing = [n for n in names if n not in present]
    checks.add("dns_routing", not missing,
               f"no record set for {', '.join(missing)} in zone {config.zone}" if missing else
               f"{len(config.record_sets)} routing record set(s) in zone {config.zone}")
    return checks


# ---------------------------------------------------------------------------------------------------- restore plan
def dns_changes(exported: list[dict], current: list[dict]) -> list[dict]:
    """Route 53 ``UPSERT`` changes that give back every exported routing record set that is missing or differs now
    (record sets the export does not have are left alone)."""
    now = {record_key(r): routing_fields(r) for r in current}
    changes = []
    for record in sorted(exported, key=record_key):
        wanted = routing_fields(record)
        if _canonical(now.get(record_key(record))) != _canonical(wanted):
            changes.append({"Action": "UPSERT", "ResourceRecordSet": wanted})
    return changes


def allocation_changes(exported: list[Allocation], current: list[Allocation]) -> list[Allocation]:
    """Allocations to (re)apply: the exported ones that are missing or hold another address now. Apps allocated
    since the export keep theirs (the verification after the restore names any address that ends up held twice)."""
    now = {a.app_id: a.address for a in current}
    return [a for a in exported if now.get(a.app_id) != a.address]


def apply_allocations(conn, allocations: list[Allocation]) -> tuple[int, list[int]]:
    """Upsert allocations (one statement); returns (rows changed, apps skipped because they no longer exist)."""
    if not allocations:
        return 0, []
    ids = [a.app_id for a in allocations]
    existing = {r[0] for r in conn.execute("SELECT id FROM apps WHERE id = ANY(%s)", (ids,)).fetchall()}
    keep = [a for a in allocations if a.app_id in existing]
    if keep:
        conn.execute("INSERT INTO ipv4_allocations (app_id, address) SELECT * FROM unnest(%s::bigint[], %s::inet[]) "
                     "ON CONFLICT (app_id) DO UPDATE SET address = EXCLUDED.address, allocated_at = now()",
                     ([a.app_id for a in keep], [a.address for a in keep]))
    return len(keep), sorted(set(ids) - existing)


# ---------------------------------------------------------------------------------------------------- the store
@dataclass(frozen=True)
class ExportManifest:
    export_id: str
    exported_at: str
    objects: list[dict]  # {"name", "key", "size", "sha256"}
    summary: dict

    def to_dict(self) -> dict:
        return {"format": MANIFEST_FORMAT, **asdict(self)}


def new_export_id(now: datetime | None = None) -> str:
    """Sortable by time (``20261201T030000.123456Z-<4 hex>``)."""
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S.%fZ") + "-" + _random.token_hex(2)


def export_key(export_id: str, name: str) -> str:
    return f"{EXPORT_PREFIX}{export_id}/{name}"


def write_export(store: BackupStore, config: EdgeConfig, export_id: str | None = None) -> ExportManifest:
    """Every object, then the manifest naming their sizes and sha256 (last: no manifest, no export)."""
    export_id = export_id or new_export_id()
    objects = []
    for name, data in config.parts().items():
        key = export_key(export_id, name)
        store.put_bytes(key, data)
        objects.append({"name": name, "key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    manifest = ExportManifest(export_id, config.exported_at, objects, config.summary())
    store.put_bytes(export_key(export_id, MANIFEST_NAME), _canonical(manifest.to_dict()))
    return manifest


def export_ids(store: BackupStore) -> list[str]:
    """Every export id that has any object, oldest first (complete or not: an incomplete one is named, not hidden)."""
    return sorted({o.key[len(EXPORT_PREFIX):].split("/", 1)[0] for o in store.iter_objects(EXPORT_PREFIX)
                   if "/" in o.key[len(EXPORT_PREFIX):]})


def read_manifest(store: BackupStore, export_id: str) -> ExportManifest:
    key = export_key(export_id, MANIFEST_NAME)
    where = f"edge-config export {export_id} (s3://{store.bucket}/{key})"
    if store.head(key) is None:
        raise EdgeExportCorrupt(f"{where}: incomplete, it has no manifest")
    try:
        data = json.loads(store.read_text(key))
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {MANIFEST_FORMAT!r}")
        objects = [dict(o) for o in data["objects"]]
        if sorted(o["name"] for o in objects) != sorted(PARTS):
            raise ValueError(f"lists {sorted(o['name'] for o in objects)}, expected {sorted(PARTS)}")
        return ExportManifest(str(data["export_id"]), str(data["exported_at"]), objects, dict(data.get("summary") or {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise EdgeExportCorrupt(f"{where}: unreadable manifest ({exc})") from None


def load_verified_export(store: BackupStore, export_id: str) -> tuple[ExportManifest, EdgeConfig]:
    """An export whose every object matches its manifest's size and sha256; ``EdgeExportCorrupt`` names the key."""
    manifest = read_manifest(store, export_id)
    parts = {}
    for obj in manifest.objects:
        where = f"edge-config export {export_id}: s3://{store.bucket}/{obj['key']}"
        if store.head(obj["key"]) is None:
            raise EdgeExportCorrupt(f"{where} is missing (incomplete export)")
        chunks: list[bytes] = []
        size, digest = store.stream(obj["key"], chunks.append)
        if digest != obj["sha256"] or size != obj["size"]:
            raise EdgeExportCorrupt(f"{where} does not match its manifest: sha256 {digest[:12]}... ({size} bytes), "
                                    f"manifest {obj['sha256'][:12]}... ({obj['size']} bytes)")
        parts[obj["name"]] = b"".join(chunks)
    return manifest, EdgeConfig.from_parts(parts, f"edge-config export {export_id}", manifest.exported_at)


@dataclass
class ChosenExport:
    export_id: str
    manifest: ExportManifest
    config: EdgeConfig
    skipped: list[str]  # newer exports that did not verify, each with why


def newest_verified_export(store: BackupStore) -> ChosenExport:
    """The newest export whose manifest and checksums verify; newer ones that do not are skipped and named.

    :raises EdgeExportMissing: no export at all (naming the prefix), or none that verifies (naming each)"""
    ids = export_ids(store)
    where = f"s3://{store.bucket}/{EXPORT_PREFIX}"
    if not ids:
        raise EdgeExportMissing(f"no edge-configuration export under {where}")
    skipped = []
    for export_id in reversed(ids):
        try:
            manifest, config = load_verified_export(store, export_id)
        except EdgeExportCorrupt as exc:
            skipped.append(str(exc))
            continue
        return ChosenExport(export_id, manifest, config, skipped)
    raise EdgeExportMissing(f"no edge-configuration export under {where} verifies: " + "; ".join(skipped))


def export_time(export_id: str) -> datetime:
    return datetime.strptime(export_id.split("-", 1)[0], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
