"""What the control-plane database holds, as far as recovery is concerned."""
from __future__ import annotations

from rehearsal.postgres.connection import Endpoint, connect

# The plan's critical control-plane state, in dependency order.
CRITICAL_TABLES = ("orgs", "projects", "apps", "envs", "releases", "hosts", "endpoints", "volumes",
                   "events", "audit_log")
HEARTBEAT_TABLE = "heartbeat"


def schema_version(endpoint: Endpoint) -> str | None:
    with connect(endpoint, statement_timeout_ms=10_000) as conn:
        row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    return row[0] if row else None


def row_counts(endpoint: Endpoint, tables: tuple[str, ...] = CRITICAL_TABLES) -> dict[str, int]:
    counts = {}
    with connect(endpoint, statement_timeout_ms=120_000) as conn:
        for table in tables:
            counts[table] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
    return counts
