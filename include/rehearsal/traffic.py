"""Edge traffic between regions: the record set that sends customers to each region's edge (weighted records, or a
failover pair), the plan that moves traffic from a failed region to a target region (in steps or at once), our own
probes of the target's edge, and the decisions around them: refuse, roll back, nothing to do.

Plain Python (no Airflow): ``TrafficShiftOperator`` reads and writes Route 53 through a client it hands in, and
probes the edges over HTTP.

Nothing here trusts a health check's status (the local AWS endpoint's is canned) nor a change's ``INSYNC`` as proof
that customers arrive (the local endpoint says ``INSYNC`` at once): a region may take traffic only when its edge
answers *our* probes, ``GET /healthz`` and a sample of ``GET /apps/<id>``, every one of them, each saying it is that
region (``X-Region``).

The weighted set's shares. A step ``p`` (percent) means: of the weight the failed region and the target hold
together, the failed region keeps ``100 - p`` percent and the target holds the rest; other regions' records are never
touched. ``[50, 100]`` from ``{failed: 100, target: 0}`` gives ``{50, 50}`` then ``{0, 100}``. Steps are absolute,
so a shift run again after a half-done one goes on from where the records are (steps already reached are skipped),
and a shift whose last step is already in place changes nothing. When every weight of the set is 0 (Route 53 then
answers each record alike), the target is given 100.
"""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, RehearsalError

KINDS = ("weighted", "failover")
AT_ONCE = "at_once"
PRIMARY, SECONDARY = "PRIMARY", "SECONDARY"


class ShiftRefused(PreconditionFailed):
    """The shift may not start (or go on): nothing was changed by this step. The message names region, record,
    address or URL."""


class ShiftRolledBack(RehearsalError):
    """The target's edge failed our probes after a step: the records were put back as they were found, and the
    step failed. The message says why and names the rollback's change id."""

    kind = "recovery_failed"


# ---------------------------------------------------------------------------------------------------- the records
@dataclass(frozen=True)
class RegionRecord:
    """One region's record of the set: the edge address it names, its weight (weighted) or role (failover), and the
    record set as Route 53 holds it (an UPSERT changes only the weight or role and keeps the rest)."""

    region: str
    address: str
    ttl: int
    weight: int | None = None
    role: str | None = None  # PRIMARY | SECONDARY
    rrset: dict = field(default_factory=dict, compare=False)

    def setting(self) -> int | str | None:
        return self.weight if self.role is None else self.role


@dataclass(frozen=True)
class RoutingSet:
    """The regions' records of one name: ``kind`` weighted or failover."""

    zone_id: str
    name: str
    kind: str
    records: dict[str, RegionRecord]

    def state(self) -> dict[str, int | str]:
        """Each region's weight (weighted) or role (failover): what a shift changes and a rollback restores."""
        return {region: rec.setting() for region, rec in sorted(self.records.items())}

    @property
    def ttl(self) -> int:
        return max((rec.ttl for rec in self.records.values()), default=0)

    def changes_to(self, state: dict[str, int | str]) -> list[dict]:
        """UPSERTs that make the records say ``state`` (only the records whose weight or role differs), each the
        record set as found with only its ``Weight`` or ``Failover`` replaced."""
        changes = []
        for region, value in sorted(state.items()):
            rec = self.records[region]
            if rec.setting() == value:
                continue
            rrset = {k: v for k, v in rec.rrset.items() if k not in ("Weight", "Failover")}
            rrset["Weight" if self.kind == "weighted" else "Failover"] = value
            changes.append({"Action": "UPSERT", "ResourceRecordSet": rrset})
        return changes


def fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def region_of(set_identifier: str) -> str:
    """The region a record belongs to: its ``SetIdentifier`` (a failover pair's may read ``<region>-failover``)."""
    return set_identifier.removesuffix("-failover")


def parse_routing(record_sets: list[dict], zone_id: str, name: str, kind: str) -> RoutingSet:
    """The ``kind`` records of ``name`` among a zone's record sets, by region.

    :raises ShiftRefused: no such record set, a record naming no single address, or a pair that is not one PRIMARY
        and one SECONDARY (each named)"""
    if kind not in KINDS:
        raise ShiftRefused(f"unknown kind {kind!r} of traffic shift: use one of {', '.join(KINDS)}")
    name = fqdn(name)
    records: dict[str, RegionRecord] = {}
    for rrset in record_sets:
        if rrset.get("Name") != name or rrset.get("Type") != "A" or "SetIdentifier" not in rrset:
            continue
        if ("Weight" in rrset) != (kind == "weighted") or ("Failover" in rrset) != (kind == "failover"):
            continue
        region = region_of(rrset["SetIdentifier"])
        values = [v["Value"] for v in rrset.get("ResourceRecords", [])]
        if len(values) != 1:
            raise ShiftRefused(f"record {name} ({rrset['SetIdentifier']}) in zone {zone_id} names {len(values)} addresses "
                               f"({', '.join(values) or 'none'}): one edge address per region is expected")
        records[region] = RegionRecord(region, values[0], int(rrset.get("TTL", 0)),
                                       weight=int(rrset["Weight"]) if kind == "weighted" else None,
                                       role=rrset["Failover"] if kind == "failover" else None, rrset=dict(rrset))
    if not records:
        raise ShiftRefused(f"no {kind} record set {name} in zone {zone_id}: nothing routes customers between regions there")
    if kind == "failover":
        roles = sorted(rec.role or "" for rec in records.values())
        if roles != [PRIMARY, SECONDARY]:
            raise ShiftRefused(f"failover record {name} in zone {zone_id} is not one PRIMARY and one SECONDARY: "
                               f"{json.dumps({r: rec.role for r, rec in sorted(records.items())})}")
    return RoutingSet(zone_id, name, kind, records)


def read_routing(route53: Any, zone_id: str, name: str, kind: str) -> RoutingSet:
    """The record set as Route 53 holds it now. One ``list_resource_record_sets`` call without ``MaxItems``, starting
    at the name (the local endpoint's paginator fails on weighted sets; a page holds up to 300 record sets)."""
    answer = route53.list_resource_record_sets(HostedZoneId=zone_id, StartRecordName=fqdn(name), StartRecordType="A")
    return parse_routing(answer.get("ResourceRecordSets", []), zone_id, name, kind)


def zone_id_by_name(route53: Any, zone: str) -> str:
    """The hosted zone's id from its name.

    :raises ShiftRefused: no such zone (named)"""
    answer = route53.list_hosted_zones_by_name(DNSName=fqdn(zone), MaxItems="1")
    for hosted in answer.get("HostedZones", []):
        if hosted["Name"] == fqdn(zone):
            return hosted["Id"].split("/")[-1]
    raise ShiftRefused(f"no hosted zone {fqdn(zone)} in Route 53: nothing routes customers between regions")


# ---------------------------------------------------------------------------------------------------- the plan
def parse_steps(steps: Any, kind: str = "weighted") -> list[int]:
    """``at_once`` (or nothing) -> ``[100]``; ``[50, 100]`` or ``"50,100"`` -> percentages that rise and end at 100.
    A failover pair flips at once.

    :raises ShiftRefused: anything else, named"""
    if steps in (None, "", AT_ONCE, [AT_ONCE]):
        return [100]
    if isinstance(steps, str):  # "50,100", or a list rendered by a template: "[50, 100]"
        raw = [s for s in steps.strip().strip("[]").split(",") if s.strip()]
    else:
        raw = list(steps) if isinstance(steps, list | tuple) else [steps]
    try:
        shares = [int(str(s).strip()) for s in raw]
    except ValueError:
        raise ShiftRefused(f"traffic shift steps {steps!r}: use {AT_ONCE!r} or percentages that rise and end at 100, "
                           "e.g. [50, 100]") from None
    if not shares or shares[0] <= 0 or shares[-1] != 100 or any(b <= a for a, b in zip(shares, shares[1:], strict=False)):
        raise ShiftRefused(f"traffic shift steps {steps!r}: percentages must rise, each above 0, and end at 100 "
                           "(e.g. [50, 100])")
    if kind == "failover" and shares != [100]:
        raise ShiftRefused(f"traffic shift steps {steps!r}: a failover pair flips at once (PRIMARY and SECONDARY "
                           f"swapped); use {AT_ONCE!r}, or kind 'weighted' to move traffic in steps")
    return shares


@dataclass(frozen=True)
class PlannedStep:
    share: int  # percent of the pair's weight on the target after the step (100 for a failover flip)
    state: dict  # every region's weight or role after the step


def shift_plan(routing: RoutingSet, failed: str, target: str, shares: list[int]) -> list[PlannedStep]:
    """The steps still to take from the records as they are now to the target: empty when they already are the
    target (then nothing is to be changed). Steps already reached are left out."""
    now = routing.state()
    if routing.kind == "failover":
        goal = {**now, target: PRIMARY, failed: SECONDARY}
        return [] if goal == now else [PlannedStep(100, goal)]
    weight_failed, weight_target = int(now[failed]), int(now[target])
    pair = weight_failed + weight_target
    if pair == 0:
        if any(int(w) > 0 for w in now.values()):  # the failed region gets nothing already, nor does the target
            return []
        pair = 100  # every weight 0: Route 53 answers each record alike; the target takes it all
        weight_failed = 100  # as if the failed region held it all: every step is still to take
    plan = []
    for share in shares:
        keep = round(pair * (100 - share) / 100)
        if keep >= weight_failed:
            continue  # the failed region already holds no more than this
        plan.append(PlannedStep(share, {**now, failed: keep, target: pair - keep}))
    return plan


def shift_limitation(routing: RoutingSet, failed: str, target: str, edges: dict[str, str]) -> str | None:
    """Why a shift from ``failed`` to ``target`` may not start, or None. ``edges``: region -> edge URL (the edge
    connection's). The target's record must name the edge we probe: otherwise our probes would prove one address and
    customers be sent to another."""
    if not target:
        return f"no target region to shift traffic to (failed region {failed!r})"
    if failed == target:
        return f"the failed region and the target region are both {target!r}: traffic cannot be shifted onto the region it leaves"
    regions = ", ".join(sorted(routing.records))
    for region in (failed, target):
        if region not in routing.records:
            return (f"region {region!r} has no record in the {routing.kind} set {routing.name} of zone {routing.zone_id} "
                    f"(its regions: {regions})")
    url = edges.get(target)
    if not url:
        return f"the edge connection names no edge URL for the target region {target!r} (it names: {', '.join(sorted(edges)) or 'none'})"
    host = urlsplit(url).hostname
    address = routing.records[target].address
    if host != address:
        return (f"record {routing.name} of {target} names address {address}, but {target}'s edge is at {url} (host {host}): "
                "our probes would prove one address and customers be sent to another")
    return None


# ---------------------------------------------------------------------------------------------------- probes
@dataclass
class ProbeVerdict:
    """Our probes of one region's edge: ``rounds`` times ``GET /healthz`` and each sampled ``GET /apps/<id>``; every
    one must answer 200 and say it is that region."""

    region: str
    url: str
    paths: list[str]
    rounds: int
    passed: int = 0
    failed: list[str] = field(default_factory=list)  # each: the URL and what was wrong
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and self.passed > 0

    def describe(self) -> str:
        total = self.passed + len(self.failed)
        if self.ok:
            return f"{self.region}'s edge at {self.url} answered all {total} of our probes ({self.rounds} round(s) of {', '.join(self.paths)})"
        shown = "; ".join(self.failed[:4]) + (f"; and {len(self.failed) - 4} more" if len(self.failed) > 4 else "")
        return f"{self.region}'s edge at {self.url} failed {len(self.failed)} of our {total} probes: {shown}"

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}

    @classmethod
    def from_dict(cls, data: dict) -> ProbeVerdict:
        return cls(**{k: data[k] for k in ("region", "url", "paths", "rounds", "passed", "failed", "seconds")})


def http_get(url: str, timeout: float) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one bounded GET; no answer at all raises ``OSError`` with the reason."""
    request = urllib.request.Request(url, method="GET", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw, headers = resp.status, resp.read(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        status, raw, headers = exc.code, exc.read(), dict(exc.headers.items())
    except urllib.error.URLError as exc:
        raise OSError(str(exc.reason)) from None
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        body = {"raw": raw[:200].decode(errors="replace")}
    return status, body if isinstance(body, dict) else {"value": body}, headers


def _check(region: str, url: str, path: str, timeout: float, get: Callable) -> str | None:
    """What was wrong with one probe, or None."""
    try:
        status, body, headers = get(url + path, timeout)
    except (OSError, TimeoutError) as exc:
        return f"GET {url}{path}: no answer within {timeout:g}s ({exc})"
    if status != 200:
        why = body.get("error") if isinstance(body, dict) else None
        return f"GET {url}{path}: HTTP {status}" + (f" ({why})" if why else "")
    said = headers.get("X-Region") or headers.get("x-region") or (body.get("region") if path == "/healthz" else None)
    if said != region:
        return f"GET {url}{path}: answered as region {said!r}, not {region!r}"
    return None


def probe_edge(region: str, url: str, app_ids: list[str], rounds: int = 3, timeout: float = 2.0, interval: float = 0.2,
               get: Callable = http_get, sleep: Callable[[float], None] = time.sleep) -> ProbeVerdict:
    """Probe ``region``'s edge at ``url`` ourselves: ``rounds`` rounds of ``/healthz`` and ``/apps/<id>`` for each of
    ``app_ids``, each GET bounded by ``timeout``. Every probe runs (the verdict lists each failure)."""
    url = url.rstrip("/")
    paths = ["/healthz", *[f"/apps/{a}" for a in app_ids]]
    verdict = ProbeVerdict(region, url, paths, rounds)
    started = time.monotonic()
    for number in range(rounds):
        if number:
            sleep(interval)
        for path in paths:
            why = _check(region, url, path, timeout, get)
            if why is None:
                verdict.passed += 1
            else:
                verdict.failed.append(f"round {number + 1}: {why}")
    verdict.seconds = round(time.monotonic() - started, 3)
    return verdict


def sample_apps(routes: dict, size: int) -> list[str]:
    """Up to ``size`` app ids spread over an edge's routing table (``GET /v1/routes``: ``{"apps": {id: [...]}}``),
    first, last and evenly between, so a probe covers more than the first few apps."""
    apps = sorted((str(a) for a in (routes.get("apps") or {})), key=lambda a: (len(a), a))
    if len(apps) <= size:
        return apps
    if size <= 1:
        return apps[:size]
    return [apps[round(i * (len(apps) - 1) / (size - 1))] for i in range(size)]


# ---------------------------------------------------------------------------------------------------- changes
def apply_state(route53: Any, routing: RoutingSet, state: dict, comment: str) -> str | None:
    """UPSERT the records that differ from ``state`` in one change batch; its change id (None: nothing differed)."""
    changes = routing.changes_to(state)
    if not changes:
        return None
    answer = route53.change_resource_record_sets(HostedZoneId=routing.zone_id,
                                                 ChangeBatch={"Comment": comment[:256], "Changes": changes})
    return answer["ChangeInfo"]["Id"]


def change_status(route53: Any, change_id: str) -> str:
    return route53.get_change(Id=change_id)["ChangeInfo"]["Status"]


def insync_timeout_message(change_id: str, timeout: float, last: str, what: str = "") -> str:
    return (f"Route 53 change {change_id}{f' ({what})' if what else ''} not INSYNC after {timeout:g}s "
            f"(last status {last})")


def wait_insync(route53: Any, change_id: str, timeout: float, interval: float = 1.0, what: str = "",
                check: Callable[[], None] | None = None, sleep: Callable[[float], None] = time.sleep,
                clock: Callable[[], float] = time.monotonic) -> float:
    """Poll ``get_change`` until the change is ``INSYNC``; the seconds it took. ``check`` runs on every poll (a
    drill's stop conditions).

    :raises RecoveryTimedOut: not INSYNC within ``timeout``, naming the change id and its last status"""
    started = clock()
    while True:
        if check is not None:
            check()
        try:
            last = change_status(route53, change_id)
        except Exception as exc:  # noqa: BLE001 - said in the timeout when it lasts
            last = f"unreadable ({type(exc).__name__}: {exc})"
        if last == "INSYNC":
            return clock() - started
        if clock() - started >= timeout:
            raise RecoveryTimedOut(insync_timeout_message(change_id, timeout, last, what))
        sleep(interval)


# ---------------------------------------------------------------------------------------------------- the record
@dataclass
class StepRecord:
    """One step: the state sent, its change, our probes before and after, and how long each part took."""

    number: int
    share: int
    state: dict
    change_id: str | None = None
    probe_before: dict | None = None
    probe_after: dict | None = None
    timings: dict = field(default_factory=dict)  # probe_before, insync_wait, ttl_wait, probe_after (seconds)
    status: str = "planned"  # planned | sent | done | failed

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> StepRecord:
        return cls(**data)


@dataclass
class ShiftRecord:
    """What a traffic shift did, for the report, and the state a deferred shift resumes from."""

    kind: str
    failed_region: str
    target_region: str
    zone_id: str
    record: str
    before: dict  # each region's weight or role as found
    after: dict | None = None  # as left
    changed: bool = False
    steps: list[StepRecord] = field(default_factory=list)
    ttl_seconds: int = 0
    app_ids: list[str] = field(default_factory=list)
    rolled_back: dict | None = None  # {"why", "change_id", "insync_wait"}
    started_at: str = ""
    finished_at: str = ""
    detail: str = ""

    @property
    def next_step(self) -> StepRecord | None:
        return next((s for s in self.steps if s.status != "done"), None)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["steps"] = [s.to_dict() for s in self.steps]
        out["change_ids"] = [s.change_id for s in self.steps if s.change_id]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> ShiftRecord:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["steps"] = [StepRecord.from_dict(s) for s in data.get("steps", [])]
        return cls(**fields)

    def describe_done(self) -> str:
        timings = "; ".join(
            f"step {s.number} ({_show(s.state)}): change {s.change_id}, probes {s.timings.get('probe_before', 0):.2f}s, "
            f"INSYNC after {s.timings.get('insync_wait', 0):.2f}s, TTL {s.timings.get('ttl_wait', 0):.2f}s waited"
            for s in self.steps)
        return (f"traffic shifted from {self.failed_region} to {self.target_region} ({self.kind} {self.record}) in "
                f"{len(self.steps)} step(s): {_show(self.before)} -> {_show(self.after or {})}; {timings}; "
                f"{self.target_region}'s edge answered our probes before and after each step")


def _show(state: dict) -> str:
    return "{" + ", ".join(f"{r}: {v}" for r, v in sorted(state.items())) + "}"


def nothing_to_shift(record: ShiftRecord) -> str:
    return (f"nothing to shift: {record.record} already is the target ({_show(record.before)}, "
            f"{record.target_region} takes the traffic, {record.failed_region} none); nothing was changed")


def refused_message(target: str, verdict: ProbeVerdict, step: int, steps: int) -> str:
    where = "" if steps == 1 else f" (step {step} of {steps})"
    return f"refusing to shift traffic onto {target}{where}: {verdict.describe()}"


def rolled_back_message(record: ShiftRecord, step: StepRecord, why: str, change_id: str | None) -> str:
    back = (f"rolled back to the records found before ({_show(record.before)}, change {change_id} INSYNC)"
            if change_id else f"the records already were as found before ({_show(record.before)}): nothing to roll back")
    return (f"traffic shift onto {record.target_region} failed after step {step.number} ({_show(step.state)}, change "
            f"{step.change_id}): {why}; {back}")
