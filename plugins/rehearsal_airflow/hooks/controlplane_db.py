"""ControlPlaneDbHook: the control-plane database's credentials, and where service discovery points.

The connection's host is the service name; when its extra names a Route 53 discovery record
(``discovery_zone_id``, ``discovery_record``) the current host:port is read from that record.
"""
from __future__ import annotations

from functools import cached_property

from airflow.sdk import BaseHook

from rehearsal.discovery import DiscoveryRecord, point_at, resolve
from rehearsal.postgres.connection import Endpoint


class ControlPlaneDbHook(BaseHook):
    conn_name_attr = "postgres_conn_id"

    def __init__(self, postgres_conn_id: str = "controlplane_db", aws_conn_id: str = "aws_default") -> None:
        super().__init__()
        self.postgres_conn_id = postgres_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def connection(self):
        return self.get_connection(self.postgres_conn_id)

    @cached_property
    def record(self) -> DiscoveryRecord | None:
        extra = self.connection.extra_dejson
        if extra.get("discovery_zone_id") and extra.get("discovery_record"):
            return DiscoveryRecord(zone_id=extra["discovery_zone_id"], name=extra["discovery_record"])
        return None

    @cached_property
    def route53(self):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook  # not at parse time

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="route53").get_conn()

    def current_address(self) -> tuple[str, int]:
        if self.record is None:
            return self.connection.host, int(self.connection.port or 5432)
        return resolve(self.route53, self.record)

    def endpoint(self, host: str | None = None, port: int | None = None) -> Endpoint:
        """Credentials of the connection at the current (or the given) address."""
        if host is None or port is None:
            host, port = self.current_address()
        c = self.connection
        return Endpoint(host=host, port=int(port), dbname=c.schema or "postgres", user=c.login or "postgres",
                        password=c.password or "")

    def switch(self, host: str, port: int) -> bool:
        if self.record is None:
            raise ValueError(f"connection {self.postgres_conn_id} has no discovery record to switch")
        return point_at(self.route53, self.record, host, port)


def results_endpoint(conn_id: str = "rehearsal_results") -> Endpoint:
    c = BaseHook.get_connection(conn_id)
    return Endpoint(host=c.host, port=int(c.port or 5432), dbname=c.schema or "rehearsal", user=c.login or "postgres",
                    password=c.password or "")
