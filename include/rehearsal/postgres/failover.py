"""Promote a streaming standby, but only when it is safe (Patroni's failover_limitation reasoning)."""
from __future__ import annotations

import time
from dataclasses import dataclass

from rehearsal.errors import PreconditionFailed
from rehearsal.postgres.connection import Endpoint, commits_writes, connect

RECEIVER_TIMEOUT_SECONDS = 10.0  # a streaming receiver hears from the primary far more often (keepalives, WAL)


@dataclass(frozen=True)
class StandbyState:
    """What a standby says about its replication, read in one bounded query."""

    address: str
    in_recovery: bool
    receiver_status: str | None  # pg_stat_wal_receiver.status; None when no WAL receiver runs
    last_message_age: float | None  # seconds since the receiver last heard from the primary
    replay_age: float | None  # now() - pg_last_xact_replay_timestamp(): with a steady writer, the true lag
    received_lsn: str | None
    replayed_lsn: str | None

    def describe(self) -> str:
        heard = "never" if self.last_message_age is None else f"{self.last_message_age:.1f}s ago"
        replayed = "nothing replayed" if self.replay_age is None else f"last replayed commit {self.replay_age:.1f}s ago"
        return (f"receiver {self.receiver_status or 'not running'}, last message {heard}, {replayed}, "
                f"received {self.received_lsn}, replayed {self.replayed_lsn}")


def probe_standby(standby: Endpoint) -> StandbyState:
    with connect(standby, connect_timeout=3, statement_timeout_ms=5000) as conn:
        row = conn.execute(
            "SELECT pg_is_in_recovery(), r.status, extract(epoch FROM now() - r.last_msg_receipt_time), "
            "extract(epoch FROM now() - pg_last_xact_replay_timestamp()), "
            "pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text "
            "FROM (SELECT 1) one LEFT JOIN pg_stat_wal_receiver r ON true").fetchone()
    in_recovery, status, heard, replay_age, received, replayed = row
    return StandbyState(standby.address(), bool(in_recovery), status, None if heard is None else float(heard),
                        None if replay_age is None else float(replay_age), received, replayed)


def standby_limitation(state: StandbyState, max_lag_seconds: float, primary_alive: bool,
                       receiver_timeout: float = RECEIVER_TIMEOUT_SECONDS) -> str | None:
    """Why this standby must not be promoted, or None.

    While the primary is alive a usable standby streams: its receiver is ``streaming`` and heard from the primary
    within ``receiver_timeout``. In every case its replay must be recent: the heartbeat commits every 150 ms, so
    the age of the last replayed commit is the data a promotion would lose (plus the time since the loss, which
    errs on the safe side). "Everything received is replayed" says nothing when nothing has been received for an
    hour.
    """
    if not state.in_recovery:
        return None  # already promoted: nothing to limit, promote() is a no-op
    if primary_alive and (state.receiver_status != "streaming" or state.last_message_age is None
                          or state.last_message_age > receiver_timeout):
        return f"standby {state.address} is not streaming from the primary ({state.describe()})"
    if state.replay_age is None:
        return f"standby {state.address} has replayed no transaction ({state.describe()})"
    if state.replay_age > max_lag_seconds:
        return (f"standby {state.address} replay lag {state.replay_age:.1f}s exceeds the RPO of {max_lag_seconds:g}s "
                f"({state.describe()})")
    return None


def promotion_limitation(old_primary: Endpoint | None, standby: Endpoint, max_lag_seconds: float) -> str | None:
    """The reason the standby must not be promoted now, or None when it may."""
    import psycopg

    if old_primary is not None:
        writable, _ = commits_writes(old_primary)  # a fenced primary answers, but commits nothing
        if writable:
            return (f"old primary {old_primary.address()} still accepts writes and has not been fenced; "
                    "promoting now would split the brain")
    try:
        state = probe_standby(standby)
    except psycopg.Error as exc:
        return f"standby {standby.address()} is unreachable: {str(exc).strip().splitlines()[0]}"
    return standby_limitation(state, max_lag_seconds, primary_alive=False)


def promote(standby: Endpoint, old_primary: Endpoint | None, max_lag_seconds: float, timeout: int = 60) -> dict:
    """Promote if allowed; idempotent (an already promoted standby is left as it is)."""
    reason = promotion_limitation(old_primary, standby, max_lag_seconds)
    if reason:
        raise PreconditionFailed(f"refusing to promote: {reason}")
    started = time.monotonic()
    with connect(standby, statement_timeout_ms=(timeout + 5) * 1000) as conn:
        if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            return {"promoted": False, "already_primary": True, "seconds": 0.0}
        lsn_before = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
        ok = conn.execute("SELECT pg_promote(true, %s)", (timeout,)).fetchone()[0]
        if not ok:
            raise PreconditionFailed(f"standby {standby.address()} did not finish promotion within {timeout}s")
        lsn, tli = conn.execute(
            "SELECT pg_current_wal_lsn()::text, ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int").fetchone()
    return {"promoted": True, "already_primary": False, "seconds": time.monotonic() - started,
            "replayed_lsn_at_promotion": lsn_before, "lsn": lsn, "timeline": tli}
