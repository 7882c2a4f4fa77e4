"""When a client that knows the database only by name committed again after a fault: ``pgbench`` runs in a reconnect
loop through the database's A record (the sandbox's ``pgbench`` client), reported by drills beside the heartbeat
writer's figure.

Log lines (JSON, one per pgbench run): ``{"at": end (epoch s), "started": start (epoch s), "address", "ok",
"transactions", "error"}``.

Definition: pgbench committed again at the end (``at``) of its first run that **started after the fault** and
committed every one of its transactions (``ok``); a run that began before the fault proves nothing about the
recovery. ``None``, with the reason (how many runs failed since, and the last error), when no such run exists.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rehearsal.drills.region import read_jsonl
from rehearsal.errors import EvidenceError


@dataclass(frozen=True)
class PgbenchRecovery:
    fault_at: float
    committed_at: float | None  # the end of the first good run that started after the fault
    started_at: float | None  # when that run started
    address: str | None  # the address it resolved the name to
    seconds_after_fault: float | None
    runs_after_fault: int
    failed_runs_after_fault: int
    reason: str | None  # why there is no figure (None when there is one)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def detail(self) -> str:
        if self.committed_at is None:
            return f"pgbench did not commit again after the fault: {self.reason}"
        return (f"pgbench committed again through the database's name {self.seconds_after_fault:.1f}s after the fault, "
                f"on {self.address} ({self.failed_runs_after_fault} failed run(s) before)")


def pgbench_committed_again(lines: list[dict], fault_at: float) -> PgbenchRecovery:
    """The first good pgbench run that started after ``fault_at`` (see the module's definition)."""
    after = sorted((x for x in lines if float(x.get("started") or 0) >= fault_at), key=lambda x: float(x["started"]))
    failed = 0
    for line in after:
        if line.get("ok"):
            at = float(line["at"])
            return PgbenchRecovery(fault_at, at, float(line["started"]), line.get("address"), round(at - fault_at, 3),
                                   len(after), failed, None)
        failed += 1
    if not after:
        reason = "no pgbench run started since the fault (is the client running?)"
    else:
        last = after[-1]
        reason = (f"{failed} run(s) since the fault, none committed; the last, through "
                  f"{last.get('address') or 'no address'}: {last.get('error') or 'no error recorded'}")
    return PgbenchRecovery(fault_at, None, None, None, None, len(after), failed, reason)


def wait_for_pgbench(log_path: Path, fault_at: float, timeout: float, poll: float = 0.2) -> PgbenchRecovery:
    """``pgbench_committed_again`` from the log, waiting up to ``timeout`` seconds for a good run (the measurement may
    run moments after the switch: the client needs its DNS answer to expire and one run). A missing log is evidence
    missing (``EvidenceError``)."""
    deadline = time.monotonic() + timeout
    while True:
        found = pgbench_committed_again(read_jsonl(log_path, "pgbench", since=fault_at, key="started",
                                                   missing="pgbench's recovery cannot be measured"), fault_at)
        if found.committed_at is not None or time.monotonic() >= deadline:
            return found
        time.sleep(poll)


def pgbench_evidence(log: str | None, fault_at: float, timeout: float) -> tuple[dict, dict | None]:
    """(the report's evidence, its check or None): what drills put beside the heartbeat's figure. Without a pgbench
    client in the environment there is no check, and the evidence says so."""
    if not log:
        return {"committed_at": None, "reason": "no pgbench client in this environment (no pgbench_log)"}, None
    try:
        found = wait_for_pgbench(Path(log), fault_at, timeout)
    except EvidenceError as exc:
        return {"committed_at": None, "reason": str(exc)}, {"name": "pgbench_committed_again", "ok": False,
                                                             "critical": True, "detail": str(exc)}
    return found.to_dict(), {"name": "pgbench_committed_again", "ok": found.committed_at is not None, "critical": True,
                             "detail": found.detail}
