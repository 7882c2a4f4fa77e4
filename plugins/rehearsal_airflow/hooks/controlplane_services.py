"""ControlPlaneServicesHook: the control plane's services and the data plane's agents, from the
``controlplane_services`` connection (``docs/control-plane-services.md``)."""
from __future__ import annotations

from functools import cached_property

from airflow.sdk import BaseHook

from rehearsal.discovery import DiscoveryRecord, resolve, resolve_all
from rehearsal.errors import PreconditionFailed
from rehearsal.services import Api, Reconciler, ServiceAddresses


class ControlPlaneServicesHook(BaseHook):
    conn_name_attr = "services_conn_id"
    default_conn_name = "controlplane_services"
    conn_type = "http"
    hook_name = "Rehearsal control-plane services"

    def __init__(self, services_conn_id: str = default_conn_name, aws_conn_id: str = "aws_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.services_conn_id = services_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def configured(self) -> ServiceAddresses:
        return ServiceAddresses.from_extra(self.get_connection(self.services_conn_id).extra_dejson)

    @property
    def addresses(self) -> ServiceAddresses:
        """The services' addresses now: each service's SRV record (``service_records``) when the connection names
        one, read on every call (a control plane that moved to another region is found there), else the URLs."""
        a = self.configured
        if not (a.service_records and a.discovery_zone_id):
            return a
        from rehearsal_airflow.hooks.route53 import Route53DiscoveryHook

        route53 = Route53DiscoveryHook(self.aws_conn_id).get_conn()
        urls = {}
        for service, name in a.service_records.items():
            try:
                host, port = resolve(route53, DiscoveryRecord(a.discovery_zone_id, name))
            except LookupError:
                continue  # not published: the connection's URL stands
            urls[service] = f"http://{host}:{port}"
        return a.with_urls(urls)

    def point_service(self, service: str, url: str) -> bool:
        """Point ``service``'s SRV record at ``url`` (idempotent: False when it already did).

        :raises PreconditionFailed: the connection names no record for it"""
        a = self.configured
        name = (a.service_records or {}).get(service)
        if not (name and a.discovery_zone_id):
            raise PreconditionFailed(f"connection {self.services_conn_id!r} names no service_records.{service} (and "
                                     "discovery_zone_id): clients cannot be moved to another region's " + service)
        from urllib.parse import urlsplit

        from rehearsal.discovery import point_at
        from rehearsal_airflow.hooks.route53 import Route53DiscoveryHook

        parts = urlsplit(url)
        route53 = Route53DiscoveryHook(self.aws_conn_id).get_conn()
        return point_at(route53, DiscoveryRecord(a.discovery_zone_id, name), parts.hostname, parts.port or 80)

    def api(self, actor: str = "rehearsal") -> Api:
        return Api(self.addresses.api, actor=actor)

    def reconciler(self) -> Reconciler:
        return Reconciler(self.addresses.reconciler)

    def agents(self) -> list[tuple[str, int]]:
        """The host agents, from the data plane's discovery record (readable while the control plane is down)."""
        a = self.configured
        if not (a.agents_record and a.discovery_zone_id):
            raise PreconditionFailed(f"connection {self.services_conn_id!r} names no agents_record/discovery_zone_id: "
                                     "the data plane's hosts cannot be found")
        from rehearsal_airflow.hooks.route53 import Route53DiscoveryHook

        route53 = Route53DiscoveryHook(self.aws_conn_id).get_conn()
        try:
            return resolve_all(route53, DiscoveryRecord(a.discovery_zone_id, a.agents_record))
        except LookupError as exc:
            raise PreconditionFailed(f"the data plane's inventory is missing: {exc}") from None
