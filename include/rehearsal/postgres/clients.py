"""Whether clients followed a switch: sessions of the application role on the new primary, committing."""
from __future__ import annotations

import time

from rehearsal.errors import RecoveryTimedOut
from rehearsal.postgres.connection import Endpoint, connect

OUR_APPLICATION_NAMES = ("rehearsal",)


def client_activity(admin: Endpoint, role: str) -> tuple[int, int, float | None]:
    """(client sessions of ``role`` that are not ours, commits of their databases, seconds since the newest
    client transaction began) on the server at ``admin``."""
    with connect(admin, connect_timeout=3, statement_timeout_ms=5000) as conn:
        sessions, newest = conn.execute(
            "SELECT count(*), extract(epoch FROM now() - max(xact_start)) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND usename = %s AND NOT application_name = ANY(%s)",
            (role, list(OUR_APPLICATION_NAMES))).fetchone()
        commits = conn.execute("SELECT coalesce(sum(xact_commit), 0) FROM pg_stat_database d WHERE d.datname IN "
                               "(SELECT datname FROM pg_stat_activity WHERE usename = %s)", (role,)).fetchone()[0]
    return int(sessions), int(commits), None if newest is None else float(newest)


def clients_followed(admin: Endpoint, role: str, timeout: float = 60, interval: float = 0.5) -> dict:
    """Wait until clients of ``role`` hold sessions on the new primary and its commit count grows.

    :raises RecoveryTimedOut: no client committed there within ``timeout`` (the switch is done; clients are not
        back: the message says what was seen)
    """
    started = time.monotonic()
    first: int | None = None
    seen = (0, 0, None)
    while time.monotonic() - started < timeout:
        seen = client_activity(admin, role)
        sessions, commits, _ = seen
        if sessions and first is not None and commits > first:
            return {"sessions": sessions, "commits_seen": commits - first,
                    "seconds": round(time.monotonic() - started, 3), "at": time.time()}
        if sessions and first is None:
            first = commits
        time.sleep(interval)
    raise RecoveryTimedOut(f"no client of role {role!r} committed on {admin.address()} within {timeout:.0f}s of the "
                           f"switch (last seen: {seen[0]} session(s)); the record points there, clients did not follow")
