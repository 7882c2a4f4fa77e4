"""ControlPlaneDbHook: the control-plane database (a PostgresHook), its members and where discovery points.

The connection's host is the service name. Its extra may name Route 53 records (``discovery_zone_id`` with
``discovery_record`` for the primary, ``discovery_a_record`` for the primary's A record switched with it, and
``replica_record`` for the standbys) and a static ``members`` list;
``platform()`` builds the runbook's view of the cluster from them (``rehearsal.platform.ConnectionPlatform``).
Imported where used, not at DAG parse time (the provider pulls in psycopg and SQLAlchemy).
"""
from __future__ import annotations

from functools import cached_property

from airflow.providers.postgres.hooks.postgres import PostgresHook

from rehearsal.discovery import DiscoveryRecord
from rehearsal.platform import ConnectionPlatform
from rehearsal.postgres.connection import Endpoint


class ControlPlaneDbHook(PostgresHook):
    def __init__(self, postgres_conn_id: str = "controlplane_admin", aws_conn_id: str = "aws_default",
                 app_conn_id: str = "controlplane_db", **kwargs) -> None:
        super().__init__(postgres_conn_id=postgres_conn_id, **kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.aws_conn_id = aws_conn_id
        self.app_conn_id = app_conn_id

    @cached_property
    def conn_extra(self) -> dict:
        return self.get_connection(self.postgres_conn_id).extra_dejson

    def _record(self, key: str) -> DiscoveryRecord | None:
        extra = self.conn_extra
        if extra.get("discovery_zone_id") and extra.get(key):
            a_record = extra.get("discovery_a_record") if key == "discovery_record" else None
            return DiscoveryRecord(zone_id=extra["discovery_zone_id"], name=extra[key], a_record=a_record or None)
        return None

    @cached_property
    def record(self) -> DiscoveryRecord | None:
        return self._record("discovery_record")

    @cached_property
    def discovery(self):
        from rehearsal_airflow.hooks.route53 import Route53DiscoveryHook

        return Route53DiscoveryHook(self.aws_conn_id)

    def current_address(self) -> tuple[str, int]:
        if self.record is None:
            c = self.get_connection(self.postgres_conn_id)
            return c.host, int(c.port or 5432)
        return self.discovery.resolve(self.record)

    def endpoint(self, host: str | None = None, port: int | None = None) -> Endpoint:
        """Credentials of the connection at the current (or the given) address."""
        if host is None or port is None:
            host, port = self.current_address()
        c = self.get_connection(self.postgres_conn_id)
        return Endpoint(host=host, port=int(port), dbname=c.schema or "postgres", user=c.login or "postgres",
                        password=c.password or "")

    def switch(self, host: str, port: int) -> bool:
        if self.record is None:
            raise ValueError(f"connection {self.postgres_conn_id} has no discovery record to switch")
        return self.discovery.point_at(self.record, host, port)

    def platform(self) -> ConnectionPlatform:
        """The cluster as connections describe it: no sandbox, no inventory."""
        admin = self.endpoint("unresolved", 0)
        app_conn = self.get_connection(self.app_conn_id)
        app = Endpoint("unresolved", 0, app_conn.schema or admin.dbname, app_conn.login or "", app_conn.password or "")
        c = self.get_connection(self.postgres_conn_id)
        static_primary = None if self.record else f"{c.host}:{int(c.port or 5432)}"
        return ConnectionPlatform(admin=admin, app=app, route53=self.discovery.get_conn() if self.record else None,
                                  primary_record=self.record, replica_record=self._record("replica_record"),
                                  static_primary=static_primary, static_members=list(self.conn_extra.get("members", [])))

