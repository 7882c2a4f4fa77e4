"""Promote a streaming standby, but only when it is safe (Patroni's failover_limitation reasoning)."""
from __future__ import annotations

import time

from rehearsal.errors import PreconditionFailed
from rehearsal.postgres.connection import Endpoint, accepts_writes, connect


def replay_lag_seconds(standby: Endpoint) -> tuple[float | None, str]:
    """Seconds of replay lag on a standby (0 when everything received is replayed)."""
    with connect(standby, connect_timeout=3, statement_timeout_ms=5000) as conn:
        received, replayed, lag = conn.execute(
            "SELECT pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn(), "
            "extract(epoch FROM now() - pg_last_xact_replay_timestamp())").fetchone()
    if received is not None and received == replayed:
        return 0.0, f"replayed everything received (LSN {replayed})"
    return (float(lag) if lag is not None else None), f"received {received}, replayed {replayed}"


def promotion_limitation(old_primary: Endpoint | None, standby: Endpoint, max_lag_seconds: float) -> str | None:
    """The reason the standby must not be promoted now, or None when it may."""
    import psycopg

    if old_primary is not None:
        writable, _ = accepts_writes(old_primary)
        if writable:
            return (f"old primary {old_primary.address()} still accepts writes and has not been fenced; "
                    "promoting now would split the brain")
    try:
        with connect(standby, connect_timeout=3, statement_timeout_ms=5000) as conn:
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    except psycopg.Error as exc:
        return f"standby {standby.address()} is unreachable: {str(exc).strip().splitlines()[0]}"
    if not in_recovery:
        return None  # already promoted: nothing to limit, promote() is a no-op
    lag, detail = replay_lag_seconds(standby)
    if lag is None:
        return f"standby {standby.address()} has no replay position ({detail})"
    if lag > max_lag_seconds:
        return f"standby {standby.address()} replay lag {lag:.1f}s exceeds the RPO of {max_lag_seconds:.0f}s ({detail})"
    return None


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
