"""Validate a (restored or promoted) control-plane database: named checks, as the plan lists them."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg

from rehearsal.checks import CheckSet
from rehearsal.controlplane import CRITICAL_TABLES
from rehearsal.postgres.connection import Endpoint, connect


def validate_controlplane(endpoint: Endpoint, expected_schema_version: str, expected_counts: dict[str, int] | None = None,
                          count_tolerance: float = 0.01, tables: tuple[str, ...] = CRITICAL_TABLES,
                          run_amcheck: bool = True, workers: int = 2, schema_rule: str = "exact") -> CheckSet:
    """Schema version, basic reads, row counts against the backup manifest, amcheck of btree indexes.

    :param endpoint: a superuser endpoint of the database to validate
    :param count_tolerance: how far below the manifest's row count a table may be (more rows is growth, not loss)
    :param schema_rule: ``exact`` (a restore test: the backup's version) or ``at_least`` (a failover: the database
        may be newer than its last backup)
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
            ok = version == expected_schema_version if schema_rule == "exact" else (version or "") >= expected_schema_version
            checks.add("schema_version", ok, f"schema_migrations at {version}, expected "
                                             f"{'' if schema_rule == 'exact' else 'at least '}{expected_schema_version}")
        except psycopg.Error as exc:
            checks.add("schema_version", False, f"cannot read schema_migrations: {exc}".strip())
        amcheck_ready = run_amcheck and _amcheck_available(conn, checks)
    # Each table is read, counted and (with amcheck) checked on its own connection, two tables at a time:
    # full scans of a large database are most of a drill's validation time, and they are independent.
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="validate") as pool:
        per_table = list(pool.map(lambda t: _check_table(endpoint, t, expected_counts, count_tolerance, amcheck_ready), tables))
    for reads, _ in per_table:
        for check in reads:
            checks.add(*check)
    for _, integrity in per_table:
        for check in integrity:
            checks.add(*check)
    return checks


def _amcheck_available(conn: psycopg.Connection, checks: CheckSet) -> bool:
    import psycopg

    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        return True
    except psycopg.Error as exc:
        checks.add("amcheck", False, f"amcheck unavailable: {exc}".strip())
        return False


Check = tuple[str, bool, str]


def _check_table(endpoint: Endpoint, table: str, expected_counts: dict[str, int] | None, count_tolerance: float,
                 amcheck: bool) -> tuple[list[Check], list[Check]]:
    """(read and row-count checks, amcheck check) of one table, on a connection of its own."""
    import psycopg

    reads: list[Check] = []
    try:
        conn = connect(endpoint, connect_timeout=5, statement_timeout_ms=300_000)
    except psycopg.Error as exc:
        return [(f"read:{table}", False, str(exc).strip().splitlines()[0])], []
    with conn:
        try:
            row = conn.execute(f'SELECT * FROM "{table}" ORDER BY 1 LIMIT 1').fetchone()
            count = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        except psycopg.Error as exc:
            return [(f"read:{table}", False, str(exc).strip().splitlines()[0])], []
        reads.append((f"read:{table}", row is not None, f"{count} rows" if row else "table is empty"))
        if expected_counts and table in expected_counts:
            expected = expected_counts[table]
            drift = abs(count - expected) / max(expected, 1)
            reads.append((f"row_count:{table}", count >= expected * (1 - count_tolerance),
                          f"{count} rows, backup manifest says {expected} (drift {drift:.2%}, tolerance {count_tolerance:.0%})"))
        if not amcheck:
            return reads, []
        try:
            indexes = conn.execute(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
                "WHERE i.indrelid = %s::regclass AND a.amname = 'btree'", (table,)).fetchall()
            for (index,) in indexes:
                conn.execute("SELECT bt_index_check(%s::regclass, true)", (index,))
        except psycopg.Error as exc:
            return reads, [(f"amcheck:{table}", False, str(exc).strip().splitlines()[0])]
        return reads, [(f"amcheck:{table}", True, f"{len(indexes)} btree index(es) consistent")]
