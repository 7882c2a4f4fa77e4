"""Validate a (restored or promoted) control-plane database: named checks, as the plan lists them."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

from rehearsal.checks import CheckSet
from rehearsal.controlplane import CRITICAL_TABLES
from rehearsal.postgres.connection import Endpoint, connect


def validate_controlplane(endpoint: Endpoint, expected_schema_version: str, expected_counts: dict[str, int] | None = None,
                          count_tolerance: float = 0.01, tables: tuple[str, ...] = CRITICAL_TABLES,
                          run_amcheck: bool = True) -> CheckSet:
    """Schema version, basic reads, row counts against the backup manifest, amcheck of btree indexes.

    :param endpoint: a superuser endpoint of the database to validate
    :param count_tolerance: relative difference allowed between restored and manifest row counts
    """
    import psycopg

    checks = CheckSet(f"control-plane database at {endpoint.address()}")
    try:
        conn = connect(endpoint, connect_timeout=5, statement_timeout_ms=300_000)
    except psycopg.Error as exc:
        checks.add("connect", False, str(exc).strip().splitlines()[0])
        return checks
    with conn:
        checks.add("connect", True, endpoint.describe())
        try:
            version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
            checks.add("schema_version", version == expected_schema_version,
                       f"schema_migrations at {version}, expected {expected_schema_version}")
        except psycopg.Error as exc:
            checks.add("schema_version", False, f"cannot read schema_migrations: {exc}".strip())
        for table in tables:
            try:
                row = conn.execute(f'SELECT * FROM "{table}" ORDER BY 1 LIMIT 1').fetchone()
                count = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            except psycopg.Error as exc:
                checks.add(f"read:{table}", False, str(exc).strip().splitlines()[0])
                continue
            checks.add(f"read:{table}", row is not None, f"{count} rows" if row else "table is empty")
            if expected_counts and table in expected_counts:
                expected = expected_counts[table]
                drift = abs(count - expected) / max(expected, 1)
                checks.add(f"row_count:{table}", drift <= count_tolerance,
                           f"{count} rows, backup manifest says {expected} (drift {drift:.2%}, tolerance {count_tolerance:.0%})")
        if run_amcheck:
            _amcheck(conn, tables, checks)
    return checks


def _amcheck(conn: psycopg.Connection, tables: tuple[str, ...], checks: CheckSet) -> None:
    import psycopg

    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
    except psycopg.Error as exc:
        checks.add("amcheck", False, f"amcheck unavailable: {exc}".strip())
        return
    for table in tables:
        indexes = conn.execute(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
            "WHERE i.indrelid = %s::regclass AND a.amname = 'btree'", (table,)).fetchall()
        try:
            for (index,) in indexes:
                conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
            checks.add(f"amcheck:{table}", True, f"{len(indexes)} btree index(es) consistent")
        except psycopg.Error as exc:
            checks.add(f"amcheck:{table}", False, str(exc).strip().splitlines()[0])
