"""ControlPlaneServicesHook: the control plane's services and the data plane's agents, from the
``controlplane_services`` connection (``docs/control-plane-services.md``)."""
from __future__ import annotations

from functools import cached_property

from airflow.sdk import BaseHook

from rehearsal.discovery import DiscoveryRecord, resolve_all
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
    def addresses(self) -> ServiceAddresses:
        return ServiceAddresses.from_extra(self.get_connection(self.services_conn_id).extra_dejson)

    def api(self, actor: str = "rehearsal") -> Api:
        return Api(self.addresses.api, actor=actor)

    def reconciler(self) -> Reconciler:
        return Reconciler(self.addresses.reconciler)

    def agents(self) -> list[tuple[str, int]]:
        """The host agents, from the data plane's discovery record (readable while the control plane is down)."""
        a = self.addresses
        if not (a.agents_record and a.discovery_zone_id):
            raise PreconditionFailed(f"connection {self.services_conn_id!r} names no agents_record/discovery_zone_id: "
                                     "the data plane's hosts cannot be found")
        from rehearsal_airflow.hooks.route53 import Route53DiscoveryHook

        route53 = Route53DiscoveryHook(self.aws_conn_id).get_conn()
        try:
            return resolve_all(route53, DiscoveryRecord(a.discovery_zone_id, a.agents_record))
        except LookupError as exc:
            raise PreconditionFailed(f"the data plane's inventory is missing: {exc}") from None
