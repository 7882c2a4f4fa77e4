"""The control-plane drills' measurements, from evidence only: the blackbox prober's log (data-plane and API
availability) and the synthetic load's log (acknowledged writes)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rehearsal.dataplane import availability
from rehearsal.errors import EvidenceError


def read_load_log(path: Path, since: float = 0.0) -> list[dict]:
    """The load's attempts (acknowledged or not) sent at or after ``since``."""
    from rehearsal.drills.region import read_jsonl

    return read_jsonl(path, "load", since, key="t_sent", missing="no synthetic load ran, writes cannot be measured")


def first_ack_after(acks: list[dict], moment: float) -> dict | None:
    """The first write acknowledged (2xx) that was sent after ``moment``."""
    acked = [a for a in acks if a.get("t_ack") and 200 <= int(a.get("status") or 0) < 300 and a["t_sent"] >= moment]
    return min(acked, key=lambda a: a["t_ack"]) if acked else None


@dataclass
class OutageMeasurement:
    fault_at: float
    read_only_at: float | None  # the prober's first API answer in read-only mode after the fault
    read_write_at: float | None  # the load's first acknowledged write sent after the fault
    rto_read_only_seconds: float | None
    rto_read_write_seconds: float | None
    dataplane_availability: float | None
    dataplane_rounds: int
    dataplane_worst_round: dict | None

    def to_dict(self) -> dict:
        return asdict(self)


def measure_outage(probe_log: Path, load_log: Path, fault_at: float, until: float) -> OutageMeasurement:
    """RTO to read-only (the prober's first API answer in read-only mode after the fault), RTO to read-write (the load's
    first acknowledged write sent after the fault), and data-plane availability over [fault, read-write] from the
    prober's rounds.

    :raises EvidenceError: no write was acknowledged after the fault (the API never came back read-write, or the
        load was not running), or the prober's log cannot cover the span
    """
    acks = read_load_log(load_log, since=fault_at)
    first = first_ack_after(acks, fault_at)
    if first is None:
        raise EvidenceError(f"no write of the synthetic load was acknowledged between the fault ({fault_at:.1f}) and "
                            f"{until:.1f}: read-write RTO cannot be measured ({len(acks)} attempt(s) in {load_log})")
    end = first["t_ack"]
    span = availability(probe_log, fault_at, end)
    read_only = span.api_read_only_first_at
    return OutageMeasurement(fault_at, read_only, end, None if read_only is None else read_only - fault_at,
                             end - fault_at, span.ratio, span.rounds, span.worst_round)
