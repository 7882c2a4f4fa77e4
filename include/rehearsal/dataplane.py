"""The data plane as runbooks see it: host agents listed in a discovery record, every app endpoint they run,
probed by us; and the blackbox prober's log, the evidence of availability over a span of time."""
from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rehearsal.errors import EvidenceError
from rehearsal.services import ServiceUnreachable, call


@dataclass
class DataPlaneProbe:
    """One probe of every endpoint the hosts run, by us."""

    hosts: int
    hosts_unreachable: list[str]
    endpoints: int
    endpoints_ok: int
    failed: list[str] = field(default_factory=list)  # "<host>/apps/<app>/<slot>: why", the first 20

    @property
    def availability(self) -> float | None:
        return self.endpoints_ok / self.endpoints if self.endpoints else None

    def describe(self) -> str:
        ratio = "n/a" if self.availability is None else f"{self.availability:.2%}"
        text = (f"{self.endpoints_ok}/{self.endpoints} endpoints answered ({ratio}) on "
                f"{self.hosts - len(self.hosts_unreachable)}/{self.hosts} hosts")
        if self.hosts_unreachable:
            text += "; unreachable hosts: " + ", ".join(self.hosts_unreachable[:10])
        if self.failed:
            text += "; failed: " + "; ".join(self.failed[:5])
        return text

    def to_dict(self) -> dict:
        return {**asdict(self), "availability": self.availability}


def probe_data_plane(agents: Iterable[tuple[str, int]], timeout: float = 2.0, workers: int = 8) -> DataPlaneProbe:
    """Ask every agent what it runs, then GET every endpoint it lists, hosts interleaved (a few requests at a time
    per host: the probe must not be the load that makes an endpoint miss). An agent that does not answer counts as
    an unreachable host (its endpoints are unknown here: the blackbox prober keeps their last list)."""
    agents = list(agents)
    unreachable: list[str] = []
    per_host: list[list[tuple[str, str]]] = []
    for host, port in agents:
        base = f"http://{host}:{port}"
        try:
            answer = call("GET", f"{base}/v1/state", timeout=timeout, service="host agent")
        except ServiceUnreachable:
            unreachable.append(f"{host}:{port}")
            continue
        if not answer.ok:
            unreachable.append(f"{host}:{port} (HTTP {answer.status})")
            continue
        name = answer.body.get("hostname", f"{host}:{port}")
        per_host.append([(f"{name}/apps/{app_id}/{slot}", f"{base}/apps/{app_id}/{slot}")
                         for app_id, app in sorted(answer.body.get("running", {}).items()) for slot in app.get("slots", [])])
    targets = [t for row in itertools.zip_longest(*per_host) for t in row if t is not None]  # round-robin over hosts

    def probe(target: tuple[str, str]) -> str | None:
        label, url = target
        try:
            answer = call("GET", url, timeout=timeout, service="endpoint")
        except ServiceUnreachable as exc:
            return f"{label}: {exc}"
        return None if answer.status == 200 else f"{label}: HTTP {answer.status}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        failures = [f for f in pool.map(probe, targets) if f]
    return DataPlaneProbe(hosts=len(agents), hosts_unreachable=unreachable, endpoints=len(targets),
                          endpoints_ok=len(targets) - len(failures), failed=failures[:20])


@dataclass
class Availability:
    """The blackbox prober's rounds over a span: how much of the data plane answered."""

    start: float
    end: float
    rounds: int
    probes: int
    probes_ok: int
    worst_round: dict | None
    api_read_only_first_at: float | None  # the first round whose API answered in read-only mode

    @property
    def ratio(self) -> float | None:
        return self.probes_ok / self.probes if self.probes else None

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def read_probe_log(path: Path, start: float, end: float) -> list[dict]:
    if not path.exists():
        raise EvidenceError(f"probe log {path} does not exist: no blackbox prober ran")
    rounds = []
    with path.open() as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line being written
            if start <= entry.get("t", 0) <= end:
                rounds.append(entry)
    return rounds


def availability(path: Path, start: float, end: float, min_rounds: int = 1, max_gap: float = 5.0) -> Availability:
    """Data-plane availability between ``start`` and ``end`` (unix seconds) from the prober's log.

    :raises EvidenceError: fewer than ``min_rounds`` rounds, or a gap of more than ``max_gap`` seconds between
        rounds (the prober itself stopped: silence is not availability)
    """
    rounds = read_probe_log(path, start, end)
    if len(rounds) < min_rounds:
        raise EvidenceError(f"probe log {path} has {len(rounds)} round(s) between {start:.1f} and {end:.1f} "
                            f"(need {min_rounds}): the prober was not running")
    times = [start, *(r["t"] for r in rounds), end]
    gap = max(b - a for a, b in zip(times, times[1:], strict=False))
    if gap > max_gap:
        raise EvidenceError(f"probe log {path} is silent for {gap:.1f}s between {start:.1f} and {end:.1f} "
                            f"(more than {max_gap:.0f}s): availability cannot be measured across the gap")
    probes = sum(r["endpoints"] for r in rounds)
    ok = sum(r["ok"] for r in rounds)
    worst = min(rounds, key=lambda r: (r["ok"] / r["endpoints"]) if r["endpoints"] else 1.0)
    read_only = next((r["t"] for r in rounds if r.get("api") == "ok" and r.get("api_mode") == "read-only"), None)
    return Availability(start, end, len(rounds), probes, ok, worst, read_only)


def production_health(path: Path, now: float, window: float) -> tuple[float | None, float | None, int]:
    """(data-plane probe success, API error share, rounds) over the last ``window`` seconds of the prober's log."""
    rounds = read_probe_log(path, now - window, now + 1)
    if not rounds:
        return None, None, 0
    probes = sum(r["endpoints"] for r in rounds)
    ok = sum(r["ok"] for r in rounds)
    api_errors = sum(1 for r in rounds if r.get("api") != "ok")
    return (ok / probes if probes else None), api_errors / len(rounds), len(rounds)
