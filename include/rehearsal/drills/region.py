"""What a region-outage drill measures, from customers' own traffic (names resolved through DNS, requests sent to
the edge they resolved to), never from the runbook's claims.

``customers`` lines: ``{"at": epoch seconds, "resolved": address, "region": the edge's region that answered (or
None), "app", "ok": bool, "status", "error"}``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from rehearsal.errors import EvidenceError


def read_jsonl(path: Path, what: str, since: float = 0.0, key: str = "at",
               missing: str = "nothing to measure from") -> list[dict]:
    """The log's lines whose ``key`` is at or after ``since``; a missing log is evidence missing (never 100%)."""
    if not path.exists():
        raise EvidenceError(f"{what} log {path} does not exist: {missing}")
    out = []
    with path.open() as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if float(entry.get(key) or 0) >= since:
                out.append(entry)
    return out


def share_ok(lines: list[dict]) -> float | None:
    return sum(1 for x in lines if x.get("ok")) / len(lines) if lines else None


@dataclass
class RegionOutageMeasurement:
    fault_at: float
    recovered_at: float | None  # the first customer request answered after the fault, through the surviving region
    restored_at: float | None  # when every endpoint was verified again (the runbook's verification), if it was
    rto_seconds: float | None
    availability_before: float | None
    availability_during: float | None
    availability_after: float | None
    requests: dict  # {"before", "during", "after"}: counts
    served_by_after: dict  # region -> requests answered after recovery

    def to_dict(self) -> dict:
        return asdict(self)


def measure_customers(lines: list[dict], fault_at: float, now: float, surviving_region: str | None,
                      before_window: float = 60.0, restored_at: float | None = None) -> RegionOutageMeasurement:
    """RTO from the fault to the first request customers sent after it that was answered through
    ``surviving_region`` (any region when None), and availability before (``before_window`` seconds), during (the
    fault to ``restored_at``, when the runbook verified every endpoint; to the first answer when it did not; to
    ``now`` when there was none) and after.

    :raises EvidenceError: no customer request in the window before the fault (customers' traffic was not running:
        nothing says the platform served them before, so nothing is measured)"""
    before = [x for x in lines if fault_at - before_window <= float(x["at"]) < fault_at]
    if not before:
        raise EvidenceError(f"no customer request in the {before_window:.0f}s before the fault: customer traffic was "
                            "not running, availability cannot be measured")
    after_fault = sorted((x for x in lines if fault_at <= float(x["at"]) <= now), key=lambda x: float(x["at"]))
    first = next((x for x in after_fault if x.get("ok") and (surviving_region is None
                                                              or x.get("region") == surviving_region)), None)
    recovered_at = float(first["at"]) if first else None
    whole = max(restored_at, recovered_at) if restored_at is not None and recovered_at is not None else recovered_at
    during = [x for x in after_fault if whole is None or float(x["at"]) < whole]
    after = [x for x in after_fault if whole is not None and float(x["at"]) >= whole]
    served: dict[str, int] = {}
    for x in after:
        if x.get("ok"):
            served[str(x.get("region"))] = served.get(str(x.get("region")), 0) + 1
    return RegionOutageMeasurement(
        fault_at=fault_at, recovered_at=recovered_at, restored_at=restored_at,
        rto_seconds=None if recovered_at is None else round(recovered_at - fault_at, 3),
        availability_before=share_ok(before), availability_during=share_ok(during), availability_after=share_ok(after),
        requests={"before": len(before), "during": len(during), "after": len(after)}, served_by_after=served)


def outage_start(lines: list[dict], declared_at: float, grace: float = 30.0) -> float | None:
    """When customers started failing, for an incident with no injected fault: the first failed request of the run
    of failures still going on when the outage was declared, or, when they were still served then (an outage is
    often declared from its first alarms, before customers' caches run out), of the first run of failures within
    ``grace`` seconds after it. None: customers never failed around the declaration."""
    ordered = sorted((x for x in lines if float(x["at"]) <= declared_at + grace), key=lambda x: float(x["at"]))
    start = None
    for x in ordered:
        if x.get("ok"):
            if float(x["at"]) > declared_at and start is not None:
                return start  # a run of failures after the declaration, then served again: that run
            start = None
        elif start is None:
            start = float(x["at"])
        if start is not None and float(x["at"]) > declared_at:
            return start
    return start
