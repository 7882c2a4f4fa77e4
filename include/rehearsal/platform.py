"""The platform boundary: what a runbook needs from the infrastructure it recovers.

Two halves, as in the plan's split between "from connections alone" and "needs hands on hosts":

- ``ConnectionPlatform`` works against any self-managed PostgreSQL described by connections: the members and
  their roles (service discovery for the primary, a replica record or a static list for standbys, and
  ``pg_stat_replication`` when the primary answers), fencing and promotion by SQL, the discovery switch through
  Route 53, the archive on S3. The sandbox is driven through it exactly like production.
- A provisioner does what needs hands on hosts: record a new primary in the platform's inventory, build a new
  standby, and (for drills only) inject faults. What it can do is declared as protocols in
  ``rehearsal.capabilities`` (re-exported here; ``Provisioner`` is ``DatabaseHosts``) and checked with
  ``isinstance``. The environment names one by import path; without one the runbook reports "redundancy not
  rebuilt: no provisioner" instead of failing the recovery.

Nothing here imports Airflow or the sandbox: the Airflow layer builds a ``ConnectionPlatform`` from connections,
and loads the provisioner by name.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from rehearsal.capabilities import (  # noqa: F401 - re-exported: what a provisioner can do
    DatabaseHosts,
    EnvironmentRestorer,
    PrimaryLossFaults,
    RestoreHosts,
    ServiceControl,
    ServiceFaults,
    SnapshotStoreAdmin,
    SnapshotStoreFaults,
    VolumeHosts,
    capability_limitation,
)
from rehearsal.discovery import DiscoveryRecord, point_at, resolve, resolve_all
from rehearsal.errors import PreconditionFailed
from rehearsal.heartbeat import LINEAGE_SQL
from rehearsal.postgres.connection import Endpoint, accepts_writes, commits_writes, connect
from rehearsal.postgres.failover import StandbyState, probe_standby

log = logging.getLogger(__name__)

# The name runbooks have always used for a provisioner's database hosts.
Provisioner = DatabaseHosts


def split_address(address: str) -> tuple[str, int]:
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port)


@dataclass(frozen=True)
class MemberState:
    """One member of the cluster as the runbook sees it now."""

    address: str
    reachable: bool
    role: str  # primary | standby | unreachable
    detail: str
    lineage: str | None = None
    standby: dict | None = None  # StandbyState as a dict, for standbys
    lsn: str | None = None  # a primary's current WAL position when it was read (what a caught-up standby reaches)

    def standby_state(self) -> StandbyState | None:
        return StandbyState(**self.standby) if self.standby else None


@dataclass(frozen=True)
class FenceResult:
    address: str
    fenced: bool
    reachable: bool
    detail: str
    sessions_ended: int = 0


class Platform(Protocol):
    """What runbook steps may do to the platform (a ConnectionPlatform; a test double in unit tests)."""

    def primary_address(self) -> str: ...
    def member_addresses(self) -> list[str]: ...
    def admin_endpoint(self, address: str) -> Endpoint: ...
    def app_endpoint(self, address: str) -> Endpoint: ...
    def member_state(self, address: str) -> MemberState: ...
    def fence(self, address: str) -> FenceResult: ...
    def switch_discovery(self, address: str) -> bool: ...


@dataclass
class ConnectionPlatform:
    """A self-managed PostgreSQL platform described by connections alone.

    :param admin: credentials of a superuser (host and port are replaced per member)
    :param app: credentials of the application role
    :param route53: a Route 53 client, when discovery records are used
    :param primary_record: the SRV record clients resolve to find the primary; without it, ``static_primary``
    :param replica_record: an SRV record listing the standbys (optional)
    :param static_members: addresses of members listed in the connection (optional)
    """

    admin: Endpoint
    app: Endpoint
    route53: Any = None
    primary_record: DiscoveryRecord | None = None
    replica_record: DiscoveryRecord | None = None
    static_primary: str | None = None
    static_members: list[str] = field(default_factory=list)
    probe_timeout: int = 2

    # ------------------------------------------------------------------ members
    def primary_address(self) -> str:
        if self.primary_record is not None:
            host, port = resolve(self.route53, self.primary_record)
            return f"{host}:{port}"
        if not self.static_primary:
            raise PreconditionFailed("the control-plane connection names neither a discovery record nor a host")
        return self.static_primary

    def member_addresses(self) -> list[str]:
        """The primary first, then every standby known from the replica record, the connection's list, or the
        primary's ``pg_stat_replication`` (standbys that set ``cluster_name`` to their address)."""
        primary = self.primary_address()
        found = [primary]
        candidates = list(self.static_members)
        if self.replica_record is not None:
            try:
                candidates += [f"{h}:{p}" for h, p in resolve_all(self.route53, self.replica_record)]
            except LookupError:
                pass
        candidates += self._replicating_from(primary)
        for address in candidates:
            if address not in found:
                found.append(address)
        return found

    def _replicating_from(self, primary: str) -> list[str]:
        import psycopg

        try:
            with connect(self.admin_endpoint(primary), connect_timeout=self.probe_timeout,
                         statement_timeout_ms=self.probe_timeout * 1000) as conn:
                names = [r[0] for r in conn.execute("SELECT application_name FROM pg_stat_replication").fetchall()]
        except psycopg.Error:
            return []
        out = []
        for name in names:
            try:
                split_address(name)
                out.append(name)
            except ValueError:
                continue
        return out

    def admin_endpoint(self, address: str) -> Endpoint:
        host, port = split_address(address)
        return self.admin.with_(host=host, port=port, dbname="postgres")

    def app_endpoint(self, address: str) -> Endpoint:
        host, port = split_address(address)
        return self.app.with_(host=host, port=port)

    def member_state(self, address: str) -> MemberState:
        endpoint = self.admin_endpoint(address)
        writable, why = accepts_writes(endpoint, timeout=self.probe_timeout)
        if writable:
            lineage = _lineage(endpoint)
            return MemberState(address, True, "primary", why, lineage=lineage, lsn=_current_lsn(endpoint))
        if why.startswith("unreachable"):
            return MemberState(address, False, "unreachable", why)
        try:
            state = probe_standby(endpoint)
        except Exception as exc:  # noqa: BLE001 - a member that stops answering mid-probe is unreachable
            return MemberState(address, False, "unreachable", f"unreachable: {exc}")
        return MemberState(address, True, "standby", state.describe(), standby=asdict(state))

    # ------------------------------------------------------------------ actions
    def fence(self, address: str) -> FenceResult:
        """Stop a primary from accepting writes before anything else is promoted: read-only by default for every
        new transaction, reloaded, client sessions ended, then checked. Unreachable is recorded, not an error."""
        import psycopg

        endpoint = self.admin_endpoint(address)
        try:
            with connect(endpoint, connect_timeout=self.probe_timeout, statement_timeout_ms=10_000) as conn:
                if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                    return FenceResult(address, True, True, f"{address} is a standby: it accepts no writes")
                conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
                conn.execute("SELECT pg_reload_conf()")
                ended = conn.execute(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchone()[0]
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return FenceResult(address, False, False, f"{address} unreachable, so it accepts no writes from here: {first}")
        if commits_writes(endpoint)[0]:
            raise PreconditionFailed(f"fencing {address} failed: it still commits writes after "
                                     "default_transaction_read_only was set and its sessions were ended")
        return FenceResult(address, True, True, f"{address} fenced: read-only for new transactions, "
                                                f"{ended} client session(s) ended", sessions_ended=ended)

    def switch_discovery(self, address: str) -> bool:
        if self.primary_record is None:
            raise PreconditionFailed("the control-plane connection names no discovery record to switch")
        host, port = split_address(address)
        if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
            raise PreconditionFailed(f"refusing to point service discovery at {address}: a loopback address sends every "
                                     "client to its own machine")
        return point_at(self.route53, self.primary_record, host, port)


def _lineage(endpoint: Endpoint) -> str | None:
    try:
        with connect(endpoint, connect_timeout=2, statement_timeout_ms=2000) as conn:
            return conn.execute(LINEAGE_SQL).fetchone()[0]
    except Exception:  # noqa: BLE001 - the lineage is evidence, not a precondition
        return None


def _current_lsn(endpoint: Endpoint) -> str | None:
    try:
        with connect(endpoint, connect_timeout=2, statement_timeout_ms=2000) as conn:
            return conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    except Exception:  # noqa: BLE001 - evidence, not a precondition
        return None


def load_provisioner(spec: str | None, **kwargs: Any) -> Any | None:
    """The provisioner named ``module:Class`` in the environment, built with ``kwargs``; None for ``none``. What it
    can do is checked where it is used (``rehearsal.capabilities``)."""
    if not spec or spec == "none":
        return None
    module_name, _, class_name = spec.partition(":")
    if not class_name:
        raise PreconditionFailed(f"provisioner {spec!r} is not 'module:Class' (or 'none')")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**kwargs)
