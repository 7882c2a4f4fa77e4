"""The edge and the customers: one edge proxy per region (what customers' requests reach), the DNS server that
serves the Route 53 zone, and synthetic customers who resolve names through it and send requests to the edge they
resolved (``rehearsal_sandbox.services.edge_proxy``, ``dns_server``, ``customer_traffic``).

Records (the zone of ``discovery``): ``apps.rehearsal.internal.`` weighted A records, one per region naming its edge
(us-east-1 weight 100, us-west-2 weight 0; TTL ``EDGE_TTL``), and the failover pair ``apps-failover.rehearsal.internal.``
(PRIMARY us-east-1, SECONDARY us-west-2). Every edge listens on the same port (``network.edge_port``): an edge is
told apart by its address, as on a real network.

Slices: edge ``{"host", "port", "pid"}``; dns ``{"host", "port", "pid"}``; customers ``{"host", "port", "pid", "log",
"apps"}``.
"""
from __future__ import annotations

from rehearsal.postgres.cluster import free_port
from rehearsal_sandbox.components.base import progress
from rehearsal_sandbox.components.control_plane import LoggingClient, ServiceComponent

APPS_RECORD = "apps.rehearsal.internal."
FAILOVER_RECORD = "apps-failover.rehearsal.internal."
EDGE_TTL = 5
HOME_REGION = "us-east-1"


class Edge(ServiceComponent):
    """A region's edge proxy, on a host of its own in that region."""

    name = "edge"
    daemon = "edge"
    title = "edge proxy"
    host_role = "edge"

    def install(self) -> None:
        if not self.state.get("port"):
            network = self.sandbox.hosts.network
            host = self.sandbox.hosts.allocate(f"edge-{self.region}", self.region, self.host_role).address
            if not network.get("edge_port"):
                network["edge_port"] = free_port(host=host)
            self.state.update({"host": host, "port": int(network["edge_port"])})
            self.sandbox.save()

    def up(self) -> None:
        self.install()
        progress(f"starting the edge proxy of {self.region}")
        self.start()
        self.publish_records()
        if self.region != HOME_REGION:
            self.wait_serving()

    def wait_serving(self, timeout: float = 90) -> None:
        """Until this edge serves the apps that run in every region (the scheduler spreads them over the regions' hosts
        and the reconciler rolls them out there): a sandbox is up once either region can take the traffic."""
        import time

        from rehearsal_sandbox.services.common import call

        apps = self.sandbox.components()["customers"].state.get("probe_apps", [])
        deadline = time.monotonic() + timeout
        missing = list(apps)
        while missing and time.monotonic() < deadline:
            missing = [a for a in apps if call("GET", f"{self.url}/apps/{a}", timeout=2)[0] != 200]
            if missing:
                time.sleep(0.5)
        if missing:
            raise RuntimeError(f"the edge of {self.region} does not serve apps {missing} {timeout:.0f}s after start")

    def publish_records(self) -> None:
        """Its weighted record and its half of the failover pair (made once: a shift's weights are the runbook's)."""
        route53 = self.sandbox.aws("route53")
        zone_id = self.sandbox.service_discovery.zone_id
        primary = self.region == HOME_REGION
        changes = [
            {"Action": "CREATE", "ResourceRecordSet": {
                "Name": APPS_RECORD, "Type": "A", "SetIdentifier": self.region, "Weight": 100 if primary else 0,
                "TTL": EDGE_TTL, "ResourceRecords": [{"Value": self.host}]}},
            {"Action": "CREATE", "ResourceRecordSet": {
                "Name": FAILOVER_RECORD, "Type": "A", "SetIdentifier": f"{self.region}-failover",
                "Failover": "PRIMARY" if primary else "SECONDARY", "TTL": EDGE_TTL,
                "ResourceRecords": [{"Value": self.host}]}}]
        existing = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        have = {(s["Name"], s.get("SetIdentifier")) for s in existing}
        changes = [c for c in changes if (c["ResourceRecordSet"]["Name"], c["ResourceRecordSet"]["SetIdentifier"]) not in have]
        if changes:
            route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})

    def run(self) -> None:
        from rehearsal_sandbox.services import edge_proxy
        from rehearsal_sandbox.services.common import stop_event

        stopping = stop_event()
        agents = self.sandbox.components(self.region)["agents"].listen_addresses()
        edge_proxy.run(self.region, self.address, agents, stopping)


class DnsServer(ServiceComponent):
    """The DNS server, on a global host (DNS outlives any region)."""

    name = "dns"
    daemon = "dns"
    title = "DNS server"
    host_role = "dns"

    @property
    def host_region(self) -> str:
        from rehearsal_sandbox.hosts import GLOBAL

        return GLOBAL

    def answers(self) -> tuple[bool, str]:
        import dns.exception

        from rehearsal_sandbox.services.customer_traffic import resolver

        if not self.state.get("port"):
            return False, "no port"
        try:
            answer = resolver(self.host, self.port).resolve(self.sandbox.service_discovery.record().fqdn, "SRV")
            return True, f"dns {self.host}:{self.port} answers ({answer[0]})"
        except dns.exception.DNSException as exc:
            return False, f"dns {self.host}:{self.port}: {type(exc).__name__}"

    def run(self) -> None:
        from rehearsal_sandbox.components.discovery import ZONE
        from rehearsal_sandbox.services import dns_server
        from rehearsal_sandbox.services.common import stop_event

        stopping = stop_event()
        dns_server.run(self.address, self.sandbox.aws("route53"), self.sandbox.service_discovery.zone_id, ZONE, stopping)


class Customers(LoggingClient):
    """Synthetic customers, on a global host: they outlive any region, and measure what customers see."""

    name = "customers"
    daemon = "customers"
    title = "customer traffic"
    log_name = "customers-log.jsonl"

    def up(self) -> None:
        from rehearsal.postgres.connection import connect

        self.record_log()
        if not self.state.get("apps"):
            cp = self.sandbox.controlplane_db
            with connect(cp.endpoint(cp.primary)) as conn:
                self.state["apps"] = [r[0] for r in conn.execute("SELECT app_id FROM deployments ORDER BY app_id")]
                # Apps that run in every region (two replicas or more, spread by the scheduler): what a runbook reads
                # through an edge to prove that region serves.
                self.state["probe_apps"] = [r[0] for r in conn.execute(
                    "SELECT app_id FROM deployments WHERE replicas >= 2 ORDER BY app_id LIMIT 3")]
        super().up()

    def run(self) -> None:
        from rehearsal_sandbox.services import customer_traffic
        from rehearsal_sandbox.services.common import stop_event

        stopping = stop_event()
        dns = self.sandbox.components()["dns"]
        customer_traffic.run(dns.address, APPS_RECORD, int(self.sandbox.hosts.network["edge_port"]),
                             list(self.state["apps"]), self.log, stopping, self.interval)
