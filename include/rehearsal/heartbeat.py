"""The heartbeat: numbered writes through service discovery, and what they prove about RTO and RPO.

The writer commits one row every 100-200 ms to whatever the discovery record points at and logs
every acknowledged commit locally. A drill measures from that log and from the rows that survive:
RTO = fault -> first acknowledged write on the recovered primary;
RPO = span of acknowledged writes that are missing after recovery.
"""
from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rehearsal.errors import EvidenceError
from rehearsal.postgres.connection import Endpoint, connect

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ack:
    seq: int
    acked_at: float  # unix seconds, on the writer's clock after COMMIT returned
    endpoint: str  # host:port the write went to
    lineage: str | None = None  # "<system identifier>/<timeline>" of the database that acknowledged it


# The identity of the history a write belongs to: the cluster's system identifier (shared by its physical
# copies: standbys, PITR restores) and the timeline it was written on (every promotion starts a new one).
# Writes lost in an earlier failover stay on their old timeline and are never evidence for a later one.
LINEAGE_SQL = ("SELECT system_identifier::text || '/' || "
               "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int FROM pg_control_system()")


def write_ack(fh, seq: int, acked_at: float, endpoint: str, lineage: str | None = None) -> None:
    fh.write(f"ack\t{seq}\t{acked_at:.6f}\t{endpoint}" + (f"\t{lineage}" if lineage else "") + "\n")
    fh.flush()


def write_error(fh, at: float, endpoint: str, message: str) -> None:
    fh.write(f"err\t{at:.6f}\t{endpoint}\t{message.replace(chr(9), ' ').replace(chr(10), ' ')[:200]}\n")
    fh.flush()


def read_acks(path: Path, since: float | None = None) -> list[Ack]:
    acks = []
    with path.open() as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if parts[0] != "ack" or len(parts) not in (4, 5):
                continue
            ack = Ack(int(parts[1]), float(parts[2]), parts[3], parts[4] if len(parts) == 5 else None)
            if since is None or ack.acked_at >= since:
                acks.append(ack)
    return acks


@dataclass(frozen=True)
class RecoveryMeasurement:
    fault_at: float
    last_ack_before_fault: Ack | None
    first_ack_after_recovery: Ack | None
    rto_seconds: float | None
    rpo_seconds: float | None
    acked_before_fault: int
    missing_acked: int
    newest_surviving_ack: Ack | None
    window_seconds: float = 0.0
    window_start: float = 0.0
    fault_effective_at: float | None = None
    lineage: str | None = None
    other_lineage_acks: int = 0
    rpo_is_lower_bound: bool = False
    oldest_missing_ack: Ack | None = None
    newest_missing_ack: Ack | None = None

    def evidence(self) -> dict:
        def ack(a: Ack | None) -> dict | None:
            return None if a is None else {"seq": a.seq, "acked_at": a.acked_at, "endpoint": a.endpoint, "lineage": a.lineage}
        return {"fault_at": self.fault_at, "fault_effective_at": self.fault_effective_at,
                "last_ack_before_fault": ack(self.last_ack_before_fault),
                "first_ack_after_recovery": ack(self.first_ack_after_recovery),
                "newest_surviving_ack_before_fault": ack(self.newest_surviving_ack),
                "oldest_missing_ack": ack(self.oldest_missing_ack), "newest_missing_ack": ack(self.newest_missing_ack),
                "acked_before_fault": self.acked_before_fault, "missing_acked_writes": self.missing_acked,
                "window_seconds": self.window_seconds, "window_start": self.window_start, "lineage": self.lineage,
                "acks_of_other_lineages_ignored": self.other_lineage_acks, "rpo_is_lower_bound": self.rpo_is_lower_bound}


def measure_recovery(acks: Iterable[Ack], fault_at: float, recovered_endpoint: str,
                     surviving: Callable[[list[int]], set[int]], window_seconds: float,
                     first_ack: Ack | None = None, fault_effective_at: float | None = None,
                     lineage: str | None = None, max_silence: float = 5.0) -> RecoveryMeasurement:
    """RTO and RPO from acknowledged heartbeats and the rows present on the recovered primary.

    RTO = first acknowledged write on the recovered primary - ``fault_at``.
    RPO = the longest span of acknowledged writes lost: for every lost write, the time since the newest write
    before it that survived. A lost write with no survivor before it in the window makes the RPO a lower bound
    (at least the window), and so does a window in which nothing survived. Lost writes always give RPO > 0.

    :param acks: acknowledged writes from the writer's log
    :param fault_at: when the fault was injected (unix seconds)
    :param recovered_endpoint: host:port of the recovered primary
    :param surviving: given candidate seqs, returns those present on the recovered primary
    :param window_seconds: how far before the fault acknowledged writes are checked (at least twice the target RPO)
    :param first_ack: the first acknowledged write on the recovered primary, when it is not in ``acks``
        (a non-disruptive drill's own probe write into its scratch copy)
    :param fault_effective_at: when the fault had taken effect (the kill returned); writes acknowledged until
        then were acknowledged by the lost primary and count as before the fault
    :param lineage: the lost primary's lineage (``LINEAGE_SQL``); only its writes are evidence. Writes of other
        lineages (another database, or a timeline abandoned in an earlier failover) are ignored and counted. A write
        of this lineage never marks the recovery (the recovered primary writes a new timeline).
    :param max_silence: a writer silent for longer than this before the fault saw too little to bound the loss:
        the RPO is then a lower bound (at least the silence), never a clean 0
    :raises EvidenceError: the first acknowledged write on the recovered primary predates the fault
    """
    acks = sorted(acks, key=lambda a: a.acked_at)
    cut = max(fault_at, fault_effective_at or fault_at)
    window_start = fault_at - window_seconds
    in_window = [a for a in acks if window_start <= a.acked_at <= cut]
    before = [a for a in in_window if lineage is None or a.lineage == lineage]
    after = [a for a in acks if a.acked_at > cut and a.endpoint == recovered_endpoint
             and (lineage is None or a.lineage != lineage)]
    first_after = first_ack or (after[0] if after else None)
    if first_after is not None and first_after.acked_at < fault_at:
        raise EvidenceError(f"the first acknowledged write on the recovered primary {first_after.endpoint} "
                            f"(seq {first_after.seq} at {first_after.acked_at:.3f}) predates the fault at {fault_at:.3f} "
                            f"by {fault_at - first_after.acked_at:.3f}s: it cannot mark the end of the outage")
    present = surviving([a.seq for a in before]) if before else set()
    missing = [a for a in before if a.seq not in present]
    kept = [a for a in before if a.seq in present]
    rpo, lower_bound = lost_span(before, present, window_start)
    if before and cut - before[-1].acked_at > max_silence:
        rpo, lower_bound = max(rpo or 0.0, cut - before[-1].acked_at), True
    return RecoveryMeasurement(
        fault_at=fault_at, last_ack_before_fault=before[-1] if before else None, first_ack_after_recovery=first_after,
        rto_seconds=(first_after.acked_at - fault_at) if first_after else None, rpo_seconds=rpo,
        acked_before_fault=len(before), missing_acked=len(missing), newest_surviving_ack=kept[-1] if kept else None,
        window_seconds=window_seconds, window_start=window_start, fault_effective_at=fault_effective_at,
        lineage=lineage, other_lineage_acks=len(in_window) - len(before), rpo_is_lower_bound=lower_bound,
        oldest_missing_ack=missing[0] if missing else None, newest_missing_ack=missing[-1] if missing else None)


def lost_span(before: list[Ack], present: set[int], window_start: float) -> tuple[float | None, bool]:
    """(RPO, is a lower bound) over acknowledged writes in time order, given the seqs that survived."""
    if not before:
        return None, False
    if not any(a.seq in present for a in before):
        return max(before[-1].acked_at - window_start, before[-1].acked_at - before[0].acked_at), True
    worst, lower_bound, last_kept = 0.0, False, None
    for ack in before:
        if ack.seq in present:
            last_kept = ack.acked_at
            continue
        if last_kept is None:  # lost with nothing older surviving in the window: at least back to its start
            worst, lower_bound = max(worst, ack.acked_at - window_start), True
        else:
            worst = max(worst, ack.acked_at - last_kept)
    return worst, lower_bound


def run_writer(resolve: Callable[[], tuple[str, int]], connect: Callable[[str, int], object], log_path: Path,
               interval: float = 0.15, writer: str = "heartbeat", stop_after: float | None = None) -> None:
    """Write heartbeats forever (or ``stop_after`` seconds): resolve, connect, insert, log the ack."""
    running = True

    def _stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, _stop)
    seq = _next_seq(log_path)
    conn = None
    lineage: str | None = None
    target: tuple[str, int] | None = None
    resolved_at = 0.0
    started = time.monotonic()
    with log_path.open("a") as fh:
        while running and (stop_after is None or time.monotonic() - started < stop_after):
            loop_start = time.monotonic()
            where = f"{target[0]}:{target[1]}" if target else "?"
            try:
                if target is None or loop_start - resolved_at > 1.0:
                    new_target = resolve()
                    resolved_at = loop_start
                    if new_target != target and conn is not None:
                        _close(conn)
                        conn = None
                    target = new_target
                    where = f"{target[0]}:{target[1]}"
                if conn is None:
                    conn = connect(*target)
                    lineage = conn.execute(LINEAGE_SQL).fetchone()[0]
                seq += 1
                conn.execute("INSERT INTO heartbeat (seq, writer) VALUES (%s, %s)", (seq, writer))
                write_ack(fh, seq, time.time(), where, lineage)
            except Exception as exc:  # noqa: BLE001 - every failure is logged and retried
                write_error(fh, time.time(), where, f"{type(exc).__name__}: {exc}")
                if conn is not None:
                    _close(conn)
                conn = None
                target = None
            time.sleep(max(0.0, interval - (time.monotonic() - loop_start)))
    if conn is not None:
        _close(conn)


def _close(conn) -> None:
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


def _next_seq(log_path: Path) -> int:
    """Continue numbering after the newest logged write, so seqs stay unique across restarts."""
    if not log_path.exists():
        return int(time.time() * 1000)
    last = 0
    with log_path.open() as fh:
        for line in fh:
            if line.startswith("ack\t"):
                last = max(last, int(line.split("\t")[1]))
    return max(last, int(time.time() * 1000))



def probe_write(endpoint: Endpoint, writer: str = "drill-probe") -> Ack:
    """One write into a recovered copy that no client reaches (a scratch restore): the end of its outage."""
    seq = -int(time.time() * 1000)
    with connect(endpoint, connect_timeout=5) as conn:
        conn.execute("INSERT INTO heartbeat (seq, writer) VALUES (%s, %s)", (seq, writer))
    return Ack(seq, time.time(), endpoint.address())


def surviving_seqs(endpoint: Endpoint) -> Callable[[list[int]], set[int]]:
    """For ``measure_recovery``: which of the given heartbeat seqs are present on the recovered primary."""
    def surviving(seqs: list[int]) -> set[int]:
        with connect(endpoint) as conn:
            rows = conn.execute("SELECT seq FROM heartbeat WHERE seq = ANY(%s)", (seqs,)).fetchall()
        return {r[0] for r in rows}
    return surviving
