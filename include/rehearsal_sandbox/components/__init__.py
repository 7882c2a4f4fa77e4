"""The sandbox's components, one module each, in the order ``Sandbox.up()`` starts them (``down()`` reverses it).

Each is one part of one region (``Component`` in ``base``): ``up()``, ``down()``, ``status()``, and its own slice of
``state.json`` (``regions.<region>.<name>``). A new part of the platform (a control-plane service, hosts, volumes)
is a new module here and a line in ``COMPONENTS``; a second region is the same components under another region name.
"""
from __future__ import annotations

from rehearsal_sandbox.components.airflow_metadata import AirflowMetadataDb
from rehearsal_sandbox.components.aws_endpoint import AwsEndpoint
from rehearsal_sandbox.components.base import Component, DaemonComponent
from rehearsal_sandbox.components.control_plane import (
    ControlPlaneApi,
    HostAgents,
    Prober,
    Reconciler,
    Scheduler,
    ServiceComponent,
    SyntheticLoad,
)
from rehearsal_sandbox.components.controlplane_db import ControlPlaneDb
from rehearsal_sandbox.components.discovery import ServiceDiscovery
from rehearsal_sandbox.components.edge import Customers, DnsServer, Edge
from rehearsal_sandbox.components.edge_config import EdgeConfigExport
from rehearsal_sandbox.components.heartbeat import Heartbeat
from rehearsal_sandbox.components.pgbench import PgbenchClient
from rehearsal_sandbox.components.results_db import ResultsDb
from rehearsal_sandbox.components.secrets import Secrets
from rehearsal_sandbox.components.snapshot_store import SnapshotStoreComponent
from rehearsal_sandbox.components.volumes import Volumes
from rehearsal_sandbox.components.wal_shipping import WalShipping

COMPONENTS: tuple[type[Component], ...] = (
    AwsEndpoint,        # moto server and the backup bucket: everything below uses it
    ResultsDb,          # the results database
    WalShipping,        # the spool and its shipper, before the primary archives into it
    ControlPlaneDb,     # primary, seed, streaming standby, first backups
    ServiceDiscovery,   # the hosted zone; the records point at the primary and list the standbys
    Heartbeat,          # writes through discovery
    ControlPlaneApi,    # the control plane's API, through discovery; the agents report to it
    Scheduler,          # placements, through discovery
    HostAgents,         # the data plane, published in its SRV record
    Reconciler,         # pushes desired state to the agents it finds there
    Prober,             # evidence for drills: probes what the agents run
    SyntheticLoad,      # evidence for drills: mutations through the API
    Edge,               # this region's edge proxy, and its records (weighted, failover pair)
    Volumes,            # customer volumes' directories (their rows were attached by the control-plane database's migration)
    SnapshotStoreComponent,  # their snapshot store, its replica and index backup, the snapshotter and the replicator
    Secrets,            # KMS keys per region, the canary, every fleet host's secrets file
    EdgeConfigExport,   # the edge configuration's first export (endpoint mappings, IPv4 allocations, DNS routing)
    DnsServer,          # global: the zone served over DNS
    Customers,          # global: customers resolving names through it and reaching the edges
    PgbenchClient,      # global: pgbench through the database's A record, resolved through it
    AirflowMetadataDb,  # on demand (make airflow)
)
# The second region: its half of the fleet, the standby control plane's services (installed, stopped) and its edge;
# its standby database is the control-plane database's (a standby goes to the region the primary is not in).
SECOND_REGION_COMPONENTS: tuple[type[Component], ...] = (HostAgents, ControlPlaneApi, Scheduler, Reconciler, Edge)

__all__ = ["COMPONENTS", "SECOND_REGION_COMPONENTS", "AirflowMetadataDb", "Customers", "DnsServer", "Edge", "EdgeConfigExport", "Secrets", "AwsEndpoint", "Component", "ControlPlaneApi", "ControlPlaneDb", "DaemonComponent",
           "Heartbeat", "HostAgents", "PgbenchClient", "Prober", "Reconciler", "ResultsDb", "Scheduler", "ServiceComponent", "ServiceDiscovery",
           "SnapshotStoreComponent", "SyntheticLoad", "Volumes", "WalShipping"]
