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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ack:
    seq: int
    acked_at: float  # unix seconds, on the writer's clock after COMMIT returned
    endpoint: str  # host:port the write went to


def write_ack(fh, seq: int, acked_at: float, endpoint: str) -> None:
    fh.write(f"ack\t{seq}\t{acked_at:.6f}\t{endpoint}\n")
    fh.flush()


def write_error(fh, at: float, endpoint: str, message: str) -> None:
    fh.write(f"err\t{at:.6f}\t{endpoint}\t{message.replace(chr(9), ' ').replace(chr(10), ' ')[:200]}\n")
    fh.flush()


def read_acks(path: Path, since: float | None = None) -> list[Ack]:
    acks = []
    with path.open() as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if parts[0] != "ack" or len(parts) != 4:
                continue
            ack = Ack(int(parts[1]), float(parts[2]), parts[3])
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

    def evidence(self) -> dict:
        def ack(a: Ack | None) -> dict | None:
            return None if a is None else {"seq": a.seq, "acked_at": a.acked_at, "endpoint": a.endpoint}
        return {"fault_at": self.fault_at, "last_ack_before_fault": ack(self.last_ack_before_fault),
                "first_ack_after_recovery": ack(self.first_ack_after_recovery),
                "newest_surviving_ack_before_fault": ack(self.newest_surviving_ack),
                "acked_before_fault": self.acked_before_fault, "missing_acked_writes": self.missing_acked}


def measure_recovery(acks: Iterable[Ack], fault_at: float, recovered_endpoint: str,
                     surviving: Callable[[list[int]], set[int]], window_seconds: float = 600,
                     first_ack: Ack | None = None) -> RecoveryMeasurement:
    """RTO and RPO from acknowledged heartbeats and the rows present on the recovered primary.

    :param acks: acknowledged writes from the writer's log
    :param fault_at: when the fault was injected (unix seconds)
    :param recovered_endpoint: host:port of the recovered primary
    :param surviving: given candidate seqs, returns those present on the recovered primary
    :param window_seconds: how far before the fault acknowledged writes are checked
    :param first_ack: the first acknowledged write on the recovered primary, when it is not in ``acks``
        (a non-disruptive drill's own probe write into its scratch copy)
    """
    acks = sorted(acks, key=lambda a: a.acked_at)
    before = [a for a in acks if fault_at - window_seconds <= a.acked_at <= fault_at]
    after = [a for a in acks if a.acked_at > fault_at and a.endpoint == recovered_endpoint]
    first_after = first_ack or (after[0] if after else None)
    present = surviving([a.seq for a in before]) if before else set()
    missing = [a for a in before if a.seq not in present]
    kept = [a for a in before if a.seq in present]
    last_before = before[-1] if before else None
    newest_kept = kept[-1] if kept else None
    if not before:
        rpo = None
    elif not missing:
        rpo = 0.0
    else:
        # The loss window: from the newest write that survived to the newest acknowledged one lost.
        since = newest_kept.acked_at if newest_kept else missing[0].acked_at
        rpo = max(0.0, missing[-1].acked_at - since)
    return RecoveryMeasurement(
        fault_at=fault_at, last_ack_before_fault=last_before, first_ack_after_recovery=first_after,
        rto_seconds=(first_after.acked_at - fault_at) if first_after else None, rpo_seconds=rpo,
        acked_before_fault=len(before), missing_acked=len(missing), newest_surviving_ack=newest_kept)


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
                seq += 1
                conn.execute("INSERT INTO heartbeat (seq, writer) VALUES (%s, %s)", (seq, writer))
                write_ack(fh, seq, time.time(), where)
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

