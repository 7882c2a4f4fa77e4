"""Scenario C, a full region outage: is it happening, which path, what the person approving is told, and what a
single-region rebuild brought back.

The runbook works from what it sees of each region itself: the region's edge answering customers' requests (probed
over HTTP by us, never a health check's canned status), its control-plane services, its database hosts (a committed
write on the primary, the standby's replay lag). A region is *out* only when its edge fails and nothing of the
control plane it holds answers; an edge down alone, or a control plane down alone, is another scenario (the edge's
own runbook, Scenario A) and this one changes nothing.

Paths (the plan's two): ``multi_region`` when another region's edge serves and holds a standby control plane
(shift edge traffic there, promote that standby, reconcile desired state into the hosts available there, verify
endpoints, keys and secrets); ``single_region`` otherwise (declare disaster, rebuild the control plane on new hosts
from backups, a minimal fleet, critical volumes by priority, and a realistic list of what is and is not back).
"""
from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field

from rehearsal.errors import PreconditionFailed

REGION_PATHS = ("auto", "multi_region", "single_region")


@dataclass(frozen=True)
class Check:
    """One thing probed: ``ok`` None when there is nothing of that kind in the region."""

    ok: bool | None
    detail: str

    def to_dict(self) -> dict:
        return {"ok": self.ok, "detail": self.detail}


@dataclass
class RegionProbe:
    """What was seen of one region, probed by the runbook itself."""

    region: str
    edge: Check
    services: dict[str, Check] = field(default_factory=dict)  # control-plane services running there
    primary: Check = field(default_factory=lambda: Check(None, "no primary in this region"))
    standby: Check = field(default_factory=lambda: Check(None, "no standby in this region"))
    standby_address: str | None = None
    standby_lag_seconds: float | None = None  # replay lag of its standby, as the standby reports it
    traffic_weight: int | None = None  # its share of customer traffic (the weighted record), when known

    def to_dict(self) -> dict:
        out = asdict(self)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RegionProbe:
        data = dict(data)
        for key in ("edge", "primary", "standby"):
            data[key] = Check(**data[key])
        data["services"] = {k: Check(**v) for k, v in (data.get("services") or {}).items()}
        return cls(**data)

    @property
    def holds_control_plane(self) -> bool:
        return self.primary.ok is not None or any(c.ok is not None for c in self.services.values())

    def answering(self) -> list[str]:
        """What of the region still answers, in words (empty: nothing does)."""
        out = [f"edge ({self.edge.detail})"] if self.edge.ok else []
        out += [f"{name} ({c.detail})" for name, c in self.services.items() if c.ok]
        out += [f"primary database ({self.primary.detail})"] if self.primary.ok else []
        out += [f"standby database ({self.standby.detail})"] if self.standby.ok else []
        return out

    def serves(self) -> bool:
        return bool(self.edge.ok)


def region_of(address: str, networks: dict[str, list[str]]) -> str | None:
    """The region whose networks hold ``address`` (``{"us-east-1": ["10.0.0.0/16"]}``), else None."""
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    for region, cidrs in networks.items():
        if any(ip in ipaddress.ip_network(c, strict=False) for c in cidrs):
            return region
    return None


@dataclass(frozen=True)
class Confirmation:
    happening: bool
    evidence: list[str]
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


def confirm_region_outage(failed_region: str, probes: dict[str, RegionProbe]) -> Confirmation:
    """Is ``failed_region`` out? Only when its edge fails and nothing of the control plane it holds answers."""
    if failed_region not in probes:
        raise PreconditionFailed(f"region {failed_region!r} is not a region of this platform "
                                 f"(known: {', '.join(sorted(probes)) or 'none'})")
    probe = probes[failed_region]
    evidence = [f"{failed_region} edge fails: {probe.edge.detail}"] if probe.edge.ok is False else []
    evidence += [f"{failed_region} {name} down: {c.detail}" for name, c in probe.services.items() if c.ok is False]
    if probe.primary.ok is False:
        evidence.append(f"{failed_region} primary database cannot commit: {probe.primary.detail}")
    if probe.standby.ok is False:
        evidence.append(f"{failed_region} standby database unreachable: {probe.standby.detail}")
    still = probe.answering()
    if probe.edge.ok is None:
        return Confirmation(False, evidence, f"{failed_region} has no edge this runbook can probe: name its URL in the "
                                             "edge connection's regions")
    if not probe.edge.ok and not still:
        return Confirmation(True, evidence, f"{failed_region} is out: its edge fails and nothing of it answers")
    if probe.edge.ok:
        return Confirmation(False, evidence, f"{failed_region} is not out: its edge serves customers "
                                             f"({probe.edge.detail})" + (f"; still answering: {'; '.join(still[1:])}"
                                                                          if len(still) > 1 else "")
                            + ("; for a control plane down in a serving region see Scenario A" if evidence else ""))
    return Confirmation(False, evidence, f"{failed_region} is not out: its edge fails but {'; '.join(still)} still "
                                         "answer(s): a partial outage is not a region outage (fix the edge, or Scenario A)")


@dataclass(frozen=True)
class RegionDecision:
    path: str  # multi_region | single_region
    failed_region: str
    target_region: str | None
    why: str
    standby: str | None = None
    risk: str | None = None  # what the person approving accepts (a standby lagging beyond the RPO)
    healthy_regions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def choose_region_path(requested: str, failed_region: str, probes: dict[str, RegionProbe],
                       rpo_seconds: float) -> RegionDecision:
    """``auto``: multi-region when another region serves and holds a reachable standby control plane, else
    single-region. A requested path is checked against what was found: ``multi_region`` with no such region is
    refused naming why; ``single_region`` is taken as asked (the record says when a second region could have served).

    A standby lagging beyond the RPO is still the multi-region choice (rebuilding from backups loses more), with its
    risk named for the approval."""
    if requested not in REGION_PATHS:
        raise PreconditionFailed(f"unknown path {requested!r}: use one of {', '.join(REGION_PATHS)}")
    others = {r: p for r, p in probes.items() if r != failed_region}
    serving = sorted(r for r, p in others.items() if p.serves())
    candidates = [r for r in serving if others[r].standby.ok]
    why_not = "; ".join(
        f"{r}: " + ("edge fails: " + p.edge.detail if not p.serves() else
                    "no standby control plane reachable: " + p.standby.detail)
        for r, p in sorted(others.items()) if r not in candidates) or "no other region is known"
    if requested == "single_region":
        note = (f"; a second region could have served ({', '.join(candidates)}), rebuilding as asked" if candidates
                else f"; no second region can serve ({why_not})")
        return RegionDecision("single_region", failed_region, None, "requested" + note, healthy_regions=serving)
    if not candidates:
        if requested == "multi_region":
            raise PreconditionFailed(f"refusing the multi-region path: no region but {failed_region} can take over "
                                     f"({why_not}); run path single_region to rebuild from backups")
        return RegionDecision("single_region", failed_region, None, f"no second region can take over: {why_not}",
                              healthy_regions=serving)
    # The best candidate: the least lag.
    target = min(candidates, key=lambda r: (others[r].standby_lag_seconds is None, others[r].standby_lag_seconds or 0, r))
    probe = others[target]
    lag = probe.standby_lag_seconds
    risk = None
    if lag is None:
        risk = f"the standby control plane in {target} ({probe.standby_address}) reports no replay lag: RPO unknown"
    elif lag > rpo_seconds:
        risk = (f"the standby control plane in {target} ({probe.standby_address}) lags {lag:.1f}s, beyond the RPO "
                f"of {rpo_seconds:g}s: writes acknowledged in the last {lag:.1f}s before the outage may be lost")
    lag_text = f"replay lag {lag:.1f}s" if lag is not None else "replay lag unknown"
    return RegionDecision("multi_region", failed_region, target,
                          ("requested; " if requested == "multi_region" else "")
                          + f"{target} serves ({probe.edge.detail}) and holds a standby control plane at "
                            f"{probe.standby_address} ({lag_text})",
                          standby=probe.standby_address, risk=risk, healthy_regions=serving)


def severity(failed: RegionProbe) -> tuple[str, str]:
    """Sev0 when the failed region carried customer traffic or held the control plane, else Sev1."""
    if failed.traffic_weight:
        return "Sev0", f"{failed.region} carried customer traffic (weight {failed.traffic_weight}) and is out"
    if failed.holds_control_plane:
        return "Sev0", f"{failed.region} held the control plane and is out"
    return "Sev1", f"{failed.region} is out; it carried no customer traffic and held no control-plane primary"


def approval_request(decision: RegionDecision, failed: RegionProbe) -> tuple[str, str]:
    """(subject, body) of the approval before the region failover changes anything."""
    if decision.path == "multi_region":
        lines = [f"**Region out:** {decision.failed_region} ({failed.edge.detail})",
                 f"**Take over in:** {decision.target_region}: {decision.why}", ""]
        if decision.risk:
            lines += [f"**Risk you accept:** {decision.risk}", ""]
        lines += ["**Approving will:** shift edge traffic to "
                  f"{decision.target_region} (probing its edge before and after each step, rolled back if it fails), "
                  f"promote the standby control-plane database at {decision.standby} (the old primary in "
                  f"{decision.failed_region} stays fenced: it never comes back as a primary), start the API, scheduler "
                  f"and reconciler in {decision.target_region}, reconcile desired state into the hosts available there, "
                  "and verify every endpoint, the keys and the secrets.", "",
                  "Reject to end the run with nothing changed."]
        return f"Scenario C: fail over from {decision.failed_region} to {decision.target_region}", "\n".join(lines)
    lines = [f"**Region out:** {decision.failed_region} ({failed.edge.detail})", f"**Path:** rebuild ({decision.why})", "",
             "**Approving will:** declare a disaster, restore the control-plane database from backups onto new hosts "
             "(point in time, the newest the archive allows), start the control-plane services there, bring up a "
             "minimal host fleet, restore critical volumes from snapshots by priority and publish what is and is "
             "not back.", "", "Reject to end the run with nothing changed."]
    return f"Scenario C: rebuild {decision.failed_region} from backups", "\n".join(lines)


@dataclass(frozen=True)
class RebuildItem:
    """One thing a single-region rebuild was to bring back."""

    name: str
    kind: str  # control_plane | fleet | volume | edge
    back: bool
    detail: str
    at: str | None = None  # when it was back
    priority: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def rebuild_summary(items: list[RebuildItem]) -> dict:
    """What is and is not back, for the report and customers: back items by the time they came back, missing ones
    with why. A rebuild that left anything out is ``degraded``, never ``passed``."""
    back = sorted((i for i in items if i.back), key=lambda i: (i.at or "", i.priority or 0))
    missing = [i for i in items if not i.back]
    lines = [f"back at {i.at}: {i.kind} {i.name} ({i.detail})" for i in back]
    lines += [f"NOT back: {i.kind} {i.name} ({i.detail})" for i in missing]
    return {"back": [i.to_dict() for i in back], "not_back": [i.to_dict() for i in missing],
            "complete": not missing, "timeline": lines,
            "detail": (f"{len(back)} of {len(items)} back" + (f"; not back: {', '.join(i.name for i in missing)}"
                                                            if missing else ""))}
