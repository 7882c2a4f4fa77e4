"""Edge traffic between regions: the weighted record set (or the failover pair) that sends customers to each
region's edge, the plan that moves traffic away from a failed region, and the probes that decide whether a step may
go on. Plain Python: the operator (``TrafficShiftOperator``) reads and writes Route 53 and probes the edges.

Nothing here trusts a health check's status (the local endpoint's is canned): a region is fit to take traffic only
when its edge answers *our* probes: ``GET /healthz`` and a sample of app paths, every one of them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rehearsal.errors import PreconditionFailed
from rehearsal.services import ServiceUnreachable, call


@dataclass(frozen=True)
class RoutingRecord:
    """One region's record of the set: its weight (weighted) or its role (failover), and the edge it names."""

    region: str
    value: str
    weight: int | None = None
    failover: str | None = None  # PRIMARY | SECONDARY
    ttl: int = 60


def read_routing(record_sets: list[dict], name: str, kind: str) -> dict[str, RoutingRecord]:
    """The regions' records of ``name`` (``kind``: weighted or failover), by region (the SetIdentifier; a failover
    pair's ``<region>-failover``).

    :raises PreconditionFailed: the record set is missing or not of that kind (named)"""
    fqdn = name if name.endswith(".") else name + "."
    out: dict[str, RoutingRecord] = {}
    for s in record_sets:
        if s["Name"] != fqdn or s["Type"] != "A" or "SetIdentifier" not in s:
            continue
        region = s["SetIdentifier"].removesuffix("-failover")
        value = s["ResourceRecords"][0]["Value"]
        if kind == "weighted" and "Weight" in s:
            out[region] = RoutingRecord(region, value, weight=int(s["Weight"]), ttl=int(s.get("TTL", 60)))
        elif kind == "failover" and "Failover" in s:
            out[region] = RoutingRecord(region, value, failover=s["Failover"], ttl=int(s.get("TTL", 60)))
    if not out:
        raise PreconditionFailed(f"no {kind} record set {fqdn} in the zone: nothing routes customers between regions")
    return out


def parse_steps(steps: str | list | None) -> list[int]:
    """``at_once`` (or empty) -> [100]; ``"50,100"`` or [50, 100] -> the share of the failed region's traffic moved
    by the end of each step, rising, ending at 100.

    :raises PreconditionFailed: anything else, named"""
    if steps in (None, "", "at_once"):
        return [100]
    raw = steps.split(",") if isinstance(steps, str) else list(steps)
    try:
        shares = [int(str(x).strip()) for x in raw]
    except ValueError:
        raise PreconditionFailed(f"traffic shift steps {steps!r}: use at_once or rising percentages ending at 100, "
                                 "e.g. 50,100") from None
    if not shares or shares[-1] != 100 or any(b <= a for a, b in zip(shares, shares[1:], strict=False)) or shares[0] <= 0:
        raise PreconditionFailed(f"traffic shift steps {steps!r}: percentages must rise and end at 100 (e.g. 50,100)")
    return shares


def weighted_plan(current: dict[str, RoutingRecord], failed: str, target: str, shares: list[int]) -> list[dict[str, int]]:
    """The weights after each step: ``share`` percent of the failed region's weight moved to the target.

    :raises PreconditionFailed: either region has no record (named)"""
    for region in (failed, target):
        if region not in current:
            raise PreconditionFailed(f"region {region!r} has no record in the weighted set (regions: "
                                     f"{', '.join(sorted(current))})")
    total = sum(r.weight or 0 for r in current.values())
    moved_from = current[failed].weight or 0
    plan = []
    for share in shares:
        weights = {r: rec.weight or 0 for r, rec in current.items()}
        moved = round(moved_from * share / 100)
        weights[failed] = moved_from - moved
        weights[target] = (current[target].weight or 0) + moved
        if total == 0:  # nothing was routed anywhere: the target takes it all
            weights[target] = 100
        plan.append(weights)
    return plan


def already_shifted(current: dict[str, RoutingRecord], failed: str, target: str, kind: str) -> bool:
    """Idempotence: nothing left to move."""
    if kind == "failover":
        return current.get(target, RoutingRecord(target, "")).failover == "PRIMARY"
    return (current[failed].weight or 0) == 0 and (current[target].weight or 0) > 0


@dataclass
class EdgeProbe:
    url: str
    ok: bool
    checks: list[str] = field(default_factory=list)  # what failed, each naming the path and why

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        return f"{self.url}: " + ("every probe answered" if self.ok else "; ".join(self.checks[:5]))


def probe_edge(url: str, app_paths: list[str], timeout: float = 2.0) -> EdgeProbe:
    """``GET /healthz`` and each of ``app_paths`` through the edge at ``url``, by us; all must answer 200."""
    failed = []
    for path in ["/healthz", *app_paths]:
        try:
            answer = call("GET", url.rstrip("/") + path, timeout=timeout, service="edge")
        except ServiceUnreachable as exc:
            failed.append(f"{path}: {exc}")
            continue
        if not answer.ok:
            failed.append(f"{path}: HTTP {answer.status} {answer.body.get('error') or ''}".rstrip())
    return EdgeProbe(url, not failed, failed)
