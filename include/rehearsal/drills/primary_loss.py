"""The Postgres primary-loss drill, step by step, without Airflow."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from rehearsal.errors import EvidenceError, PreconditionFailed
from rehearsal.heartbeat import Ack, read_acks

MODES = ("disruptive", "non_disruptive")
PATHS = ("auto", "promote_standby", "pitr")


def run_key(dag_id: str, run_id: str) -> str:
    """Short, unique, filesystem- and SQL-safe name for what one run creates."""
    return "drill-" + hashlib.sha256(f"{dag_id}/{run_id}".encode()).hexdigest()[:10]


def check_params(mode: str, path: str) -> None:
    if mode not in MODES:
        raise PreconditionFailed(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if path not in PATHS:
        raise PreconditionFailed(f"unknown path {path!r}: use one of {', '.join(PATHS)}")
    if mode == "non_disruptive" and path == "promote_standby":
        raise PreconditionFailed("path promote_standby changes production; a non_disruptive drill restores into a "
                                 "scratch target (use path pitr or auto)")


def evidence_window(target_rpo_seconds: float) -> float:
    """How far before a fault acknowledged writes are examined: twice the target RPO (a minute at least), so a
    loss that misses the target is seen whole instead of being capped at the window."""
    return max(2.0 * target_rpo_seconds, 60.0)


def heartbeat_limitation(log_path: Path | None, max_silence: float = 5.0) -> str | None:
    """Why the heartbeat cannot serve as evidence now, or None."""
    if log_path is None or not log_path.exists():
        return f"no heartbeat log at {log_path}: RTO and RPO could not be measured"
    acks = read_acks(log_path, since=time.time() - max_silence)
    if not acks:
        return f"no acknowledged heartbeat in the last {max_silence:.0f}s in {log_path}"
    return None


def wait_for_loss(probe: Callable[[], tuple[bool, str]], timeout: float, interval: float = 0.2) -> tuple[float, str, int]:
    """Probe until the primary stops accepting writes; (detected_at, reason, attempts)."""
    deadline = time.monotonic() + timeout
    attempts = 0
    while time.monotonic() < deadline:
        attempts += 1
        ok, reason = probe()
        if not ok:
            return time.time(), reason, attempts
        time.sleep(interval)
    raise PreconditionFailed(f"primary still accepts writes {timeout:.0f}s after the fault: loss not detected")


def wait_for_first_ack(log_path: Path, since: float, endpoint: str, timeout: float, not_lineage: str | None = None) -> Ack:
    """The first acknowledged heartbeat on ``endpoint`` after ``since`` (and not of the lost primary's lineage
    ``not_lineage``, whatever its address): clients followed the switch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ack in read_acks(log_path, since=since):
            if ack.endpoint == endpoint and (not_lineage is None or ack.lineage != not_lineage):
                return ack
        time.sleep(0.1)
    raise EvidenceError(f"no acknowledged heartbeat on {endpoint} within {timeout:.0f}s after the fault: "
                             "clients did not follow service discovery")
