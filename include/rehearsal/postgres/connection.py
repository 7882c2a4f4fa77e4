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


HEALTH_TABLE = "rehearsal_health_probe"


def write_health(endpoint: Endpoint, timeout: float = 5.0, prober: str = "rehearsal") -> tuple[bool, str]:
    """Postgres health as clients need it: a write to a dedicated probe table (``rehearsal_health_probe``, one row
    per prober; made on first use) committed, then read back, within ``timeout`` seconds overall. A primary that
    answers but cannot commit (read-only by default, a full disk, a synchronous standby that is gone and holds every
    commit) is unhealthy, and the reason names what happened. The commit's wait is bounded on this side: a hung
    commit is cancelled, not waited for.

    :returns: (healthy, why)"""
    import threading
    import uuid

    import psycopg

    token = uuid.uuid4().hex
    outcome: dict = {}
    try:
        conn = connect(endpoint, connect_timeout=max(1, int(timeout)), statement_timeout_ms=int(timeout * 1000),
                       application_name="rehearsal-health")
    except psycopg.Error as exc:
        return False, f"unreachable: {_first_line(exc)}"

    def probe() -> None:
        try:
            if not conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{HEALTH_TABLE}",)).fetchone()[0]:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {HEALTH_TABLE} (prober text PRIMARY KEY, token text NOT NULL, "
                             "probed_at timestamptz NOT NULL)")
            conn.execute(f"INSERT INTO {HEALTH_TABLE} (prober, token, probed_at) VALUES (%s, %s, clock_timestamp()) "
                         "ON CONFLICT (prober) DO UPDATE SET token = EXCLUDED.token, probed_at = EXCLUDED.probed_at",
                         (prober, token))  # autocommit: this statement's commit is the probe
            row = conn.execute(f"SELECT token FROM {HEALTH_TABLE} WHERE prober = %s", (prober,)).fetchone()
            outcome["read_back"] = row[0] if row else None
        except psycopg.Error as exc:
            outcome["error"] = _first_line(exc)

    worker = threading.Thread(target=probe, name="write-health", daemon=True)
    worker.start()
    worker.join(timeout)
    try:
        if worker.is_alive():
            conn.cancel()
            worker.join(2)
            return False, (f"a write did not commit within {timeout:g}s (a commit waiting on a synchronous standby, or "
                           "storage that does not answer)")
        if "error" in outcome:
            return False, f"cannot commit a write: {outcome['error']}"
        if outcome.get("read_back") != token:
            return False, f"a committed write read back as {outcome.get('read_back')!r}, not {token!r}"
        return True, f"committed a write to {HEALTH_TABLE} and read it back"
    finally:
        try:
            conn.close()
        except psycopg.Error:
            pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
