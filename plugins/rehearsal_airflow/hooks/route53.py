"""Route53DiscoveryHook: service-discovery SRV records in Route 53, through the Amazon provider's base hook."""
from __future__ import annotations

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from rehearsal.discovery import DiscoveryRecord, point_at, resolve


class Route53DiscoveryHook(AwsBaseHook):
    """Resolve and switch SRV records (moto's paginator breaks on SRV record sets: one call, no paginator)."""

    def __init__(self, aws_conn_id: str = "aws_default", **kwargs) -> None:
        kwargs["client_type"] = "route53"
        super().__init__(aws_conn_id=aws_conn_id, **kwargs)

    def resolve(self, record: DiscoveryRecord) -> tuple[str, int]:
        return resolve(self.get_conn(), record)

    def point_at(self, record: DiscoveryRecord, host: str, port: int) -> bool:
        return point_at(self.get_conn(), record, host, port)


def route53_client(aws_conn_id: str = "aws_default"):
    """A Route 53 client from the AWS connection (its ``endpoint_url`` for the local endpoint): the one place the
    traffic shift and its trigger get theirs, so a test can hand in a slow stand-in."""
    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type="route53").get_conn()
