"""Endpoints and bounded connections: every probe has a connect timeout and a statement timeout.

psycopg is imported where it is used: DAG files import operators that import this module, and
parsing must stay fast.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    dbname: str
    user: str
    password: str = field(default="", repr=False)

    def conninfo(self, **overrides: object) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.host, port=self.port, dbname=self.dbname, user=self.user,
                             password=self.password or None, **overrides)

    @classmethod
    def from_conninfo(cls, dsn: str) -> Endpoint:
        """An endpoint from a libpq DSN (``host=... port=...`` or ``postgresql://...``)."""
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn)
        return cls(str(parts.get("host", "127.0.0.1")), int(parts.get("port", 5432)), str(parts.get("dbname", "postgres")),
                   str(parts.get("user", "postgres")), str(parts.get("password", "")))

    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def describe(self) -> str:
        """Safe to log: never includes the password."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"

    def with_(self, **changes: object) -> Endpoint:
        return replace(self, **changes)

    def public(self) -> dict:
        return {"host": self.host, "port": self.port, "dbname": self.dbname, "user": self.user}


def connect(endpoint: Endpoint, *, connect_timeout: int = 3, statement_timeout_ms: int = 30_000,
            autocommit: bool = True, application_name: str = "rehearsal") -> psycopg.Connection:
    import psycopg

    options = f"-c statement_timeout={int(statement_timeout_ms)}"
    return psycopg.connect(endpoint.conninfo(connect_timeout=connect_timeout, options=options,
                                             application_name=application_name), autocommit=autocommit)


def query_one(endpoint: Endpoint, sql: str, params: tuple = (), **kwargs) -> tuple | None:
    with connect(endpoint, **kwargs) as conn:
        return conn.execute(sql, params).fetchone()


def accepts_writes(endpoint: Endpoint, timeout: int = 2) -> tuple[bool, str]:
    """Whether the server answers and is not in recovery; with the reason when it is not."""
    import psycopg

    try:
        row = query_one(endpoint, "SELECT pg_is_in_recovery()", connect_timeout=timeout, statement_timeout_ms=timeout * 1000)
    except psycopg.Error as exc:
        return False, f"unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
    if row and row[0]:
        return False, "in recovery (read-only standby)"
    return True, "accepts writes"


def commits_writes(endpoint: Endpoint, timeout: int = 2) -> tuple[bool, str]:
    """Whether a new session can still commit a write there (a temporary table costs nothing durable): false for
    a standby, a fenced primary (read-only by default), or a server that does not answer."""
    import psycopg

    try:
        with connect(endpoint, connect_timeout=timeout, statement_timeout_ms=timeout * 1000) as conn:
            conn.execute("CREATE TEMPORARY TABLE rehearsal_write_probe (x int)")
        return True, "commits writes"
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return False, first
