"""The edge configuration, a critical asset of the plan: which endpoint runs where (endpoint mappings), which IPv4
address is allocated to what (allocation state) and how names route customers (the DNS routing configuration).
Exported on a schedule to the backup store beside a manifest of sha256 checksums; restored from the newest export
whose checksums verify; verified against what is live. Plain Python: the operators read the platform.

Layout: ``<prefix>/<export_id>/edge-config.json`` and ``<prefix>/<export_id>/manifest.json``
(``{"format", "export_id", "files": {"edge-config.json": {"sha256", "bytes"}}}``).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from rehearsal.errors import PreconditionFailed, VerificationFailed

FORMAT = "rehearsal-edge-config/1"
PREFIX = "edge-config"
DOCUMENT = "edge-config.json"
ROUTED_TYPES = ("A", "AAAA", "CNAME", "SRV", "TXT")  # what a restore puts back (never the zone's SOA and NS)


def build_document(endpoint_mappings: list[dict], record_sets: list[dict], exported_at: datetime | None = None) -> dict:
    """The export: endpoint mappings (``{"app_id", "slot", "host"}``), the IPv4 allocation state (every address a
    record hands out, and what it is allocated to), and the DNS routing configuration (the zone's record sets)."""
    routing = [s for s in record_sets if s["Type"] in ROUTED_TYPES]
    return {"format": FORMAT, "exported_at": (exported_at or datetime.now(UTC)).isoformat(),
            "endpoint_mappings": sorted(endpoint_mappings, key=lambda m: (m["app_id"], m["slot"])),
            "ipv4_allocations": ipv4_allocations(routing), "dns_routing": routing}


def ipv4_allocations(record_sets: list[dict]) -> list[dict]:
    """Every IPv4 address an A record hands out, with what it is allocated to (``<name>/<set identifier>``)."""
    out = []
    for s in record_sets:
        if s["Type"] != "A":
            continue
        owner = s["Name"] + (f"/{s['SetIdentifier']}" if s.get("SetIdentifier") else "")
        out += [{"address": v["Value"], "owner": owner} for v in s.get("ResourceRecords", [])]
    return sorted(out, key=lambda a: (a["address"], a["owner"]))


def export_id(at: datetime) -> str:
    return at.strftime("edge-%Y%m%dT%H%M%S%fZ")


def serialize(document: dict) -> tuple[bytes, bytes]:
    """(the document, its manifest) as bytes."""
    body = json.dumps(document, indent=1, sort_keys=True).encode()
    ident = export_id(datetime.fromisoformat(document["exported_at"]))
    manifest = {"format": FORMAT, "export_id": ident, "exported_at": document["exported_at"],
                "files": {DOCUMENT: {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}}}
    return body, json.dumps(manifest, indent=1).encode()


def check_export(export: str, manifest_raw: bytes | None, body: bytes | None) -> dict:
    """The export's document when its manifest names it with the checksum its bytes have.

    :raises VerificationFailed: manifest or document missing, unreadable, or a checksum that does not match (named)"""
    if manifest_raw is None:
        raise VerificationFailed(f"edge configuration export {export}: no manifest.json (incomplete export)")
    try:
        manifest = json.loads(manifest_raw)
        expected = manifest["files"][DOCUMENT]
    except (ValueError, KeyError, TypeError):
        raise VerificationFailed(f"edge configuration export {export}: manifest.json unreadable") from None
    if body is None:
        raise VerificationFailed(f"edge configuration export {export}: {DOCUMENT} missing")
    digest = hashlib.sha256(body).hexdigest()
    if digest != expected.get("sha256") or len(body) != expected.get("bytes"):
        raise VerificationFailed(f"edge configuration export {export}: {DOCUMENT} sha256 {digest} ({len(body)} bytes) "
                                 f"does not match its manifest ({expected.get('sha256')}, {expected.get('bytes')} bytes)")
    document = json.loads(body)
    if document.get("format") != FORMAT:
        raise VerificationFailed(f"edge configuration export {export}: format {document.get('format')!r}, not {FORMAT}")
    return document


@dataclass
class EdgeCheck:
    duplicates: list[str] = field(default_factory=list)  # "<address> allocated to <a> and <b>"
    unmapped: list[str] = field(default_factory=list)  # "app <id> slot <n> on <host>, which is not live"

    @property
    def ok(self) -> bool:
        return not self.duplicates and not self.unmapped

    def describe(self) -> str:
        if self.ok:
            return "every IPv4 address allocated once; every endpoint on a live host"
        return "; ".join([*(f"IPv4 {d}" for d in self.duplicates[:5]), *(f"endpoint {u}" for u in self.unmapped[:5])])


def verify(document: dict, live_hosts: set[str]) -> EdgeCheck:
    """No IPv4 address allocated twice (to two owners), and every endpoint mapped to a live host."""
    owners: dict[str, set[str]] = {}
    for a in document.get("ipv4_allocations", []):
        owners.setdefault(a["address"], set()).add(a["owner"])
    check = EdgeCheck()
    check.duplicates = [f"{addr} allocated to {' and '.join(sorted(o))}" for addr, o in sorted(owners.items()) if len(o) > 1]
    check.unmapped = [f"app {m['app_id']} slot {m['slot']} on {m['host']}, which is not live"
                      for m in document.get("endpoint_mappings", []) if m["host"] not in live_hosts]
    return check


def newest_verified(exports: list[str], read) -> tuple[str, dict, list[str]]:
    """The newest export that verifies, its document, and the newer ones skipped with why.

    :param read: ``read(export, name) -> bytes | None``
    :raises PreconditionFailed: no export at all, or none verifies (each named)"""
    skipped: list[str] = []
    for export in sorted(exports, reverse=True):
        try:
            return export, check_export(export, read(export, "manifest.json"), read(export, DOCUMENT)), skipped
        except VerificationFailed as exc:
            skipped.append(str(exc))
    if not exports:
        raise PreconditionFailed(f"no edge configuration export under {PREFIX}/: nothing to restore from")
    raise PreconditionFailed("no edge configuration export verifies: " + "; ".join(skipped))
