"""The sandbox platform: a local AWS endpoint, a control-plane Postgres primary with a streaming standby, WAL
archiving to S3, base backups and dumps, a results database, service discovery and a heartbeat writer. Real
processes that really die; state in ``.sandbox/``.

``Sandbox`` is a facade over the components (``rehearsal_sandbox.components``), each one part of one region with
its own slice of ``state.json`` (``rehearsal_sandbox.state``). What spans components (a failover moves the
discovery record, a host loss takes the WAL spool with it) is done here.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from rehearsal.backups.store import BackupStore
from rehearsal.discovery import DiscoveryRecord
from rehearsal.postgres.binaries import REPO_ROOT, runtime_root
from rehearsal.postgres.cluster import LocalCluster
from rehearsal.postgres.connection import Endpoint
from rehearsal_sandbox.components import (
    COMPONENTS,
    SECOND_REGION_COMPONENTS,
    AirflowMetadataDb,
    AwsEndpoint,
    Component,
    ControlPlaneApi,
    ControlPlaneDb,
    DaemonComponent,
    Heartbeat,
    HostAgents,
    Prober,
    Reconciler,
    ResultsDb,
    Scheduler,
    ServiceComponent,
    ServiceDiscovery,
    SnapshotStoreComponent,
    SyntheticLoad,
    Volumes,
    WalShipping,
)
from rehearsal_sandbox.components.aws_endpoint import BUCKET
from rehearsal_sandbox.components.base import cluster_of, progress
from rehearsal_sandbox.components.control_plane import (
    AGENTS_RECORD,
    CONTROL_PLANE_SERVICES,
    SERVICE_RECORDS,
    SERVICES,
    kill_all,
)
from rehearsal_sandbox.components.controlplane_db import DB
from rehearsal_sandbox.components.discovery import A_RECORD, RECORD, REPLICA_RECORD, ZONE
from rehearsal_sandbox.components.edge import APPS_RECORD, FAILOVER_RECORD
from rehearsal_sandbox.hosts import GLOBAL, REGION_OCTETS, REGIONS, HostRegistry, choose_block, choose_postgres_port
from rehearsal_sandbox.state import SandboxState

STATE_DIR = Path(os.environ.get("REHEARSAL_SANDBOX_DIR", REPO_ROOT / ".sandbox"))
PROVISIONER = "rehearsal_sandbox.provisioner:SandboxProvisioner"
REGION = "us-east-1"

__all__ = ["BUCKET", "DB", "PROVISIONER", "RECORD", "REGION", "REPLICA_RECORD", "STATE_DIR", "ZONE", "Sandbox", "progress",
           "read_env_file"]


class Sandbox:
    def __init__(self, state_dir: Path | None = None, region: str = REGION) -> None:
        self.dir = Path(state_dir or STATE_DIR)
        self.state_file = self.dir / "state.json"
        self.region = region  # the region the accessors below mean; one region today
        self.sandbox_state = SandboxState(self.state_file)
        self._components: dict[str, dict[str, Component]] = {}

    def reload(self) -> None:
        """Re-read ``state.json`` (drills and runbooks change the topology from other processes)."""
        self.sandbox_state.load()

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sandbox_state.save()
        self.write_env()

    # ---------------------------------------------------------------- components
    def components(self, region: str | None = None) -> dict[str, Component]:
        """A region's components by name, in start order (us-east-1: the whole platform; us-west-2: its standby
        control plane's services, its half of the fleet, its edge)."""
        region = region or REGION  # the first region's list holds the whole platform's parts (and what is global)
        if region not in self._components:
            classes = COMPONENTS if region == REGION else SECOND_REGION_COMPONENTS
            self._components[region] = {cls.name: cls(self, region) for cls in classes}
        return self._components[region]

    def component(self, name: str, region: str | None = None) -> Component:
        return self.components(region)[name]

    @property
    def hosts(self) -> HostRegistry:
        """Every host of the sandbox, each with its own address (``rehearsal_sandbox.hosts``)."""
        return HostRegistry(self.sandbox_state)

    @property
    def aws_endpoint(self) -> AwsEndpoint:
        return self.components()["aws_endpoint"]  # type: ignore[return-value]

    @property
    def results_db(self) -> ResultsDb:
        return self.components()["results_db"]  # type: ignore[return-value]

    @property
    def wal_shipping(self) -> WalShipping:
        return self.components()["wal_shipping"]  # type: ignore[return-value]

    @property
    def controlplane_db(self) -> ControlPlaneDb:
        return self.components()["controlplane_db"]  # type: ignore[return-value]

    @property
    def service_discovery(self) -> ServiceDiscovery:
        return self.components()["discovery"]  # type: ignore[return-value]

    @property
    def heartbeat(self) -> Heartbeat:
        return self.components()["heartbeat"]  # type: ignore[return-value]

    @property
    def airflow_metadata(self) -> AirflowMetadataDb:
        return self.components()["airflow_metadata"]  # type: ignore[return-value]

    @property
    def control_plane_api(self) -> ControlPlaneApi:
        return self.components(self.control_plane_region)["api"]  # type: ignore[return-value]

    @property
    def scheduler(self) -> Scheduler:
        return self.components(self.control_plane_region)["scheduler"]  # type: ignore[return-value]

    @property
    def reconciler(self) -> Reconciler:
        return self.components(self.control_plane_region)["reconciler"]  # type: ignore[return-value]

    @property
    def host_agents(self) -> HostAgents:
        return self.components()["agents"]  # type: ignore[return-value]

    @property
    def prober(self) -> Prober:
        return self.components()["prober"]  # type: ignore[return-value]

    @property
    def synthetic_load(self) -> SyntheticLoad:
        return self.components()["load"]  # type: ignore[return-value]

    @property
    def volumes(self) -> Volumes:
        return self.components()["volumes"]  # type: ignore[return-value]

    @property
    def snapshot_store(self) -> SnapshotStoreComponent:
        return self.components()["snapshot_store"]  # type: ignore[return-value]

    def service(self, name: str) -> ServiceComponent:
        """A control-plane service or the data plane by its name: ``api``, ``scheduler``, ``reconciler``, ``agents``,
        ``prober``, ``load``."""
        if name not in SERVICES:
            raise ValueError(f"no service {name!r} (services: {', '.join(SERVICES)})")
        region = self.control_plane_region if name in CONTROL_PLANE_SERVICES else self.region
        return self.components(region)[name]  # type: ignore[return-value]

    def _regions(self) -> list[str]:
        return list(dict.fromkeys([self.region, *REGIONS, *self.sandbox_state.regions()]))

    # ---------------------------------------------------------------- regions
    @property
    def control_plane_region(self) -> str:
        """Where the control plane's services run now (us-east-1 until a region failover moves them)."""
        return self.sandbox_state.data.get("control_plane_region", REGION) if self.exists else REGION

    def set_control_plane_region(self, region: str) -> None:
        self.sandbox_state.data["control_plane_region"] = region
        self.save()

    def regions_down(self) -> list[str]:
        return list(self.sandbox_state.data.get("regions_down", [])) if self.exists else []

    def region_of(self, address: str) -> str | None:
        host = self.hosts.at(address)
        return host.region if host is not None else None

    def region_down(self, region: str) -> dict:
        """A whole region lost: every process of its hosts SIGKILLed at once (database clusters, control-plane
        services, agents, its edge); its database hosts' disks are kept (a region that comes back does not bring
        its old primary back: ``region_up`` fences it). Returns what was killed and when."""
        from datetime import UTC, datetime

        if region not in REGION_OCTETS or region == GLOBAL:
            raise ValueError(f"no region {region!r}")
        self.reload()
        killed: list[str] = []
        daemons = [c for c in self.components(region).values()
                   if isinstance(c, ServiceComponent) and c.alive() and c.name != "airflow_metadata"]
        if region == REGION:  # the first region's list also holds what is global: only its own hosts' daemons die
            daemons = [c for c in daemons if getattr(c, "host_region", region) == region]
        names, _ = kill_all(daemons)
        killed += [f"{region}/{n} (pid {pid})" for n, pid in names.items()]
        cp = self.controlplane_db
        for name in list(cp.clusters()):
            cluster = cp.cluster(name)
            if self.region_of(cluster.host) == region and cluster.is_running():
                cluster.kill()
                killed.append(f"{region}/{name} postgres at {cluster.address}")
        at = datetime.now(UTC).isoformat()
        down = self.sandbox_state.data.setdefault("regions_down", [])
        if region not in down:
            down.append(region)
        self.sandbox_state.data.setdefault("regions_down_at", {})[region] = at
        self.save()
        # Last, once the fault is recorded: the region's Airflow edge workers, each with every process under it (a
        # task's process leaves its worker's process group, and would otherwise finish on a "dead" worker). The
        # task that took the region down may be one of them: it dies here, as it would with its region.
        for worker_region, worker in (self.sandbox_state.data.get("airflow", {}).get("edge_workers") or {}).items():
            if worker_region == region and worker.get("pid"):
                from rehearsal_sandbox.airflow_deployment import kill_process_tree

                if kill_process_tree(worker["pid"]):
                    killed.append(f"{region}/airflow edge worker {worker.get('hostname', '')} (pid {worker['pid']})")
        return {"region": region, "killed": killed, "at": at}

    def region_down_since(self, region: str) -> str | None:
        """When the region was taken down (ISO time), while it is down; None when it is up."""
        self.reload()
        if region not in self.regions_down():
            return None
        return (self.sandbox_state.data.get("regions_down_at") or {}).get(region)

    def region_up(self, region: str) -> dict:
        """The region's hosts back: its data plane (agents, edge) starts again; its old database clusters stay down
        and are marked lost (fenced: never back as a primary); its control-plane services stay stopped unless the
        control plane runs there."""
        self.reload()  # runbooks changed the topology from other processes
        done: list[str] = []
        for name in ("agents", "edge"):
            component = self.components(region).get(name)
            if component is not None and component.exists:
                done += component.start()
        cp = self.controlplane_db
        for name, info in list(cp.clusters().items()):
            cluster = cp.cluster(name)
            if self.region_of(cluster.host) != region or cluster.is_running() or info["role"] == "lost":
                continue
            if name == cp.primary_name or name == cp.state.get("standby"):
                # Nothing took over from it (it is still the recorded primary, or the standby of the primary that
                # is): the host came back with its disk, as after a power loss.
                cluster.start()
                done.append(f"{name} ({cluster.address}) started again: still the recorded {info['role']}, nothing "
                            "took over from it")
            else:
                cp.forget_cluster(name)
                done.append(f"{name} ({cluster.address}) removed, fenced: a member of the old timeline (another primary "
                            "took over); a region that comes back does not bring its old primary back")
        if region == self.control_plane_region:
            for name in CONTROL_PLANE_SERVICES:
                done += self.components(region)[name].start()
        else:
            done.append(f"the control-plane services in {region} stay stopped (they run in {self.control_plane_region})")
        down = self.sandbox_state.data.setdefault("regions_down", [])
        if region in down:
            down.remove(region)
        self.save()
        return {"region": region, "done": done}

    def api_resolver(self):
        """Where the control-plane API is now, for the sandbox's clients (agents, prober, load): its SRV record, as
        any client finds it (re-read at most every second), else the active region's API from the state."""
        import threading
        import time as _time

        from rehearsal_sandbox.components.control_plane import SERVICE_RECORDS

        cache: dict = {"at": 0.0, "url": None}
        lock = threading.Lock()

        def resolve() -> str | None:
            with lock:
                if cache["url"] and _time.monotonic() - cache["at"] < 1.0:
                    return cache["url"]
                url = None
                try:
                    from rehearsal.discovery import resolve as resolve_srv

                    host, port = resolve_srv(self.aws("route53"), DiscoveryRecord(self.service_discovery.zone_id,
                                                                                  SERVICE_RECORDS["api"]))
                    url = f"http://{host}:{port}"
                except Exception:  # noqa: BLE001 - no record yet, or the endpoint busy: the state says where it is
                    self.reload()
                    url = self.control_plane_api.known_url()
                cache.update(at=_time.monotonic(), url=url)
                return url

        return resolve

    def _daemons(self) -> dict[str, DaemonComponent]:
        return {c.daemon: c for c in self.components().values() if isinstance(c, DaemonComponent)}

    # ---------------------------------------------------------------- what the sandbox is now
    @property
    def exists(self) -> bool:
        """A sandbox was created in this state dir and not torn down (it may not be running)."""
        return self.sandbox_state.exists

    @property
    def runtime(self) -> Path:
        """This sandbox's folder under the runtime root: cluster data dirs, the spool, scratch space."""
        return self.sandbox_state.runtime

    @property
    def passwords(self) -> dict[str, str]:
        return dict(self.sandbox_state.passwords)

    @property
    def scale(self) -> float:
        return self.controlplane_db.scale

    @property
    def archive_timeout(self) -> int:
        return self.controlplane_db.archive_timeout

    @property
    def spool(self) -> Path:
        return self.wal_shipping.spool

    @property
    def clusters(self) -> dict[str, dict]:
        """Every cluster of every component, ``{name: {data_dir, port, role}}`` (a copy)."""
        out: dict[str, dict] = {}
        for component in (self.results_db, self.controlplane_db, self.airflow_metadata):
            out.update({name: dict(info) for name, info in component.clusters().items()})
        return out

    @property
    def lost_data(self) -> list[str]:
        """Data a fault moved aside, waiting for ``discard_lost_data``."""
        return [*self.controlplane_db.state.get("lost_data", []), *self.wal_shipping.state.get("lost_data", [])]

    @property
    def state(self) -> Mapping:
        """A read-only view in the first, flat layout (``runtime``, ``clusters``, ``pids``, ``primary``, ...), for
        code written against it. Nothing written through it is kept: use the properties and the components."""
        if not self.exists:
            return MappingProxyType({})
        cp, aws, wal, discovery = self.controlplane_db, self.aws_endpoint, self.wal_shipping, self.service_discovery
        flat: dict = {"runtime": str(self.runtime), "runtime_root": str(self.sandbox_state.runtime_root),
                      "passwords": self.passwords, "clusters": self.clusters,
                      "pids": {name: d.pid for name, d in self._daemons().items() if d.pid},
                      **{k: cp.state[k] for k in ("generation", "scale", "archive_timeout", "primary", "standby")
                         if k in cp.state}}
        if "url" in aws.state:
            flat["aws_endpoint"] = aws.url
        if "zone_id" in discovery.state:
            flat["zone_id"] = discovery.zone_id
        if "spool" in wal.state:
            flat["spool"] = str(wal.spool)
        if self.lost_data:
            flat["lost_data"] = self.lost_data
        return _frozen(flat)

    # ---------------------------------------------------------------- clusters, clients, endpoints
    def cluster(self, name: str) -> LocalCluster:
        """Any cluster of the sandbox by name: ``results``, ``cp-<n>``, ``airflow-meta``."""
        return cluster_of(name, self.clusters[name])

    def new_cluster(self, role: str) -> LocalCluster:
        return self.controlplane_db.new_cluster(role)

    @property
    def primary(self) -> LocalCluster:
        return self.controlplane_db.primary

    @property
    def standby(self) -> LocalCluster | None:
        return self.controlplane_db.standby

    def aws(self, service: str):
        return self.aws_endpoint.client(service)

    def store(self) -> BackupStore:
        return self.controlplane_db.store()

    def discovery(self) -> DiscoveryRecord:
        return self.service_discovery.record()

    def replica_discovery(self) -> DiscoveryRecord:
        return self.service_discovery.replica_record()

    def publish_standbys(self) -> None:
        """The replica record lists the running standbys (a runbook finds them there when the primary is gone)."""
        self.service_discovery.publish_standbys()

    def endpoint(self, cluster: LocalCluster, role: str = "app") -> Endpoint:
        return self.controlplane_db.endpoint(cluster, role)

    def results_endpoint(self) -> Endpoint:
        return self.results_db.endpoint()

    def primary_settings(self) -> dict[str, object]:
        return self.controlplane_db.settings()

    # ---------------------------------------------------------------- up / status / down
    def is_up(self) -> bool:
        if not self.exists:
            return False
        return all(v["ok"] for v in self.status().values())

    def up(self, scale: float | None = None, archive_timeout: int | None = None) -> None:
        if self.exists and self.is_up():
            progress("already running")
            return
        if self.exists:
            progress("found a partial sandbox; tearing it down first")
            self.down()
        # Each sandbox has its own folder under the runtime root: two sandboxes must never share cluster dirs.
        root = runtime_root() / f"sandbox-{hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:10]}"
        root.mkdir(mode=0o755, exist_ok=True)
        (root / "scratch").mkdir(mode=0o755, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        block = choose_block(str(self.dir.resolve()))
        self.sandbox_state.create(root, runtime_root(),
                                  {"postgres": secrets.token_urlsafe(18), DB: secrets.token_urlsafe(18)},
                                  {"block": block, "postgres_port": choose_postgres_port(block)})
        progress(f"hosts in {block}.0.0/16; every database host listens on port {self.hosts.postgres_port}")
        self._components.clear()
        self.save()
        options = {"controlplane_db": {"scale": scale, "archive_timeout": archive_timeout}}
        for region in REGIONS:
            for component in self.components(region).values():
                if not component.on_demand:
                    component.up(**options.get(component.name, {}))
        self.components()["secrets"].deliver()  # the second region's hosts exist now: they get their files too
        self.save()
        progress("sandbox is up; environment in " + str(self.dir / "env"))

    def status(self) -> dict[str, dict]:
        """One entry per component, ``"<region>/<component>": {"ok": bool, "detail": str}``."""
        if not self.exists:
            return {"sandbox": {"ok": False, "detail": "not created (run make sandbox-up)"}}
        out: dict[str, dict] = {}
        for region in self._regions():
            for component in self.components(region).values():
                out.update({f"{region}/{name}": item for name, item in component.status().items()})
            hosts = self.hosts.all(region)
            if hosts:
                roles = ", ".join(f"{n} {r}" for r, n in sorted(Counter(h.role for h in hosts).items()))
                out[f"{region}/hosts"] = {"ok": True, "detail": f"{len(hosts)} hosts in {self.hosts.block}."
                                                                f"{REGION_OCTETS[region]}.0/24 ({roles})"}
        shared = self.hosts.all(GLOBAL)
        if shared:
            out[f"{GLOBAL}/hosts"] = {"ok": True, "detail": ", ".join(f"{h.name} {h.address}" for h in shared)}
        return out

    def down(self) -> None:
        """Every component of every region down, in reverse start order; then the runtime folder and state files.
        A component that fails to go down does not stop the others; the state keeps what is left, and the error
        names it."""
        failed = []
        for region in reversed(self._regions()):
            for component in reversed(list(self.components(region).values())):
                try:
                    component.down()
                except Exception as exc:  # noqa: BLE001 - the rest still goes down; raised below
                    failed.append(f"{region}/{component.name}: {exc}")
        if failed:
            self.sandbox_state.save()
            raise RuntimeError("sandbox down left some parts behind (run it again): " + "; ".join(failed))
        runtime = self.sandbox_state.data.get("runtime")
        if runtime:
            for sub in ("clusters", "spool", "scratch", "lost"):
                shutil.rmtree(Path(runtime) / sub, ignore_errors=True)
            if Path(runtime).name.startswith("sandbox-"):
                shutil.rmtree(runtime, ignore_errors=True)
        for path in (self.dir / "env", self.dir / "heartbeat.log", self.dir / "probe-log.jsonl", self.dir / "load-log.jsonl"):
            path.unlink(missing_ok=True)
        self.sandbox_state.delete()
        self._components.clear()

    # ---------------------------------------------------------------- daemons
    def daemon_alive(self, name: str) -> bool:
        """``moto``, ``wal-shipper`` or ``heartbeat``."""
        daemon = self._daemons().get(name)
        return daemon is not None and daemon.alive()

    def stop_daemon(self, name: str) -> None:
        daemon = self._daemons().get(name)
        if daemon is not None:
            daemon.stop()

    # ---------------------------------------------------------------- backups and the archive
    def archive_backlog(self) -> int:
        """WAL segments not yet in the bucket: waiting for the archiver, or in the spool for the shipper."""
        return self.controlplane_db.archive_backlog() + len(self.wal_shipping.waiting())

    def take_backups(self) -> dict:
        """A base backup and a logical dump of the current primary, taken at the same time (each is I/O bound)."""
        return self.controlplane_db.take_backups()

    def rebuild_standby(self) -> LocalCluster:
        """A fresh streaming standby of the current primary (the sandbox made whole again), in the replica record."""
        standby = self.controlplane_db.rebuild_standby()
        self.publish_standbys()
        return standby

    def rebuild_standby_and_back_up(self, dump: bool = True) -> tuple[LocalCluster, dict]:
        """The sandbox made whole after its primary changed: a new standby and fresh backups, side by side.

        :param dump: also take a logical dump. After a failover only the base backup is needed: the new primary
            writes a new timeline, and its WAL is replayable from a base backup of that timeline. Logical
            dumps do not depend on timelines; they keep their own schedule (``dr_backup_postgres``).
        """
        standby, backups = self.controlplane_db.rebuild_standby_and_back_up(dump)
        self.publish_standbys()
        return standby, backups

    # ---------------------------------------------------------------- what drills do to it
    def kill_primary(self, lose_data: bool = True) -> dict:
        """The fault: SIGKILL the primary's processes and, optionally, lose its host's disks: its data directory
        and the WAL spool beside it (segments archived locally but not yet shipped to S3 are lost with the host,
        as they would be in a real host loss)."""
        primary, pid, killed_at = self.controlplane_db.kill_primary()
        lost_spool: list[str] = []
        if lose_data:
            lost_spool = self.wal_shipping.lose_spool(primary.name)
            # Gone for the recovery in one rename: nothing can start from it or read it at its path. The bytes are
            # deleted by discard_lost_data() at teardown; deleting 1 GB here took 4 s of the measured outage.
            self.controlplane_db.lose_data_dir(primary)
            self.save()
        return {"cluster": primary.name, "address": primary.address, "port": primary.port, "pid": pid,
                "killed_at": killed_at, "data_lost": lose_data,
                "spool_lost": lose_data, "unshipped_wal_lost": lost_spool}

    def discard_lost_data(self) -> list[str]:
        """Delete the data directories (and spools) that faults moved aside; returns what was deleted."""
        gone = self.wal_shipping.discard_lost_data() + self.controlplane_db.discard_lost_data()
        self.save()
        return gone

    def heal(self) -> list[str]:
        """After a drill or an incident run that stopped part-way, or a primary killed by hand: the inventory
        follows what is really running. A dead primary is marked lost; a running member that is no longer in
        recovery (a standby promoted by a runbook) becomes the primary, else the standby is promoted; discovery
        points at the primary. Returns what it did."""
        from rehearsal.discovery import resolve

        try:
            target = "{}:{}".format(*resolve(self.aws("route53"), self.discovery()))
        except Exception:  # noqa: BLE001 - no record (or no endpoint): nothing is preferred
            target = None
        actions, changed = self.controlplane_db.heal(target)
        if changed:
            self.publish_standbys()
        if self.service_discovery.point_at_primary():
            actions.append(f"pointed discovery at the primary {self.primary.name}")
        return actions

    def forget_cluster(self, name: str) -> None:
        """Destroy a cluster and everything beside it (log, markers, quarantine); drop an emptied scratch folder."""
        self.controlplane_db.forget_cluster(name)

    def adopt_primary(self, name: str) -> None:
        """Record a recovered cluster of the inventory as the new primary; drop the lost one; the replica record
        follows."""
        self.controlplane_db.adopt_primary(name)
        self.publish_standbys()

    # ---------------------------------------------------------------- environment file
    def env_vars(self) -> dict[str, str]:
        primary, standby = self.primary, self.standby
        pw = self.passwords
        results = self.results_db.cluster()
        aws_endpoint, zone_id = self.aws_endpoint.url, self.service_discovery.zone_id
        environment = {"name": "sandbox", "drill_environment": True, "backup_bucket": BUCKET, "backup_cluster": DB,
                       "heartbeat_log": str(self.heartbeat.log), "sandbox_state": str(self.dir),
                       "reports_dir": os.environ.get("REHEARSAL_REPORTS_DIR", str(REPO_ROOT / "reports")),
                       "scratch_root": str(self.runtime / "scratch"), "archive_timeout_seconds": self.archive_timeout,
                       "archive_command": self.wal_shipping.archive_command(), "provisioner": PROVISIONER,
                       "probe_log": str(self.prober.log), "load_log": str(self.synthetic_load.log),
                       "approvers": ["admin"]}  # the local Airflow's admin user is the sandbox's on-call approver
        snapshots = self.snapshot_store
        environment |= {"snapshot_bucket": snapshots.bucket, "snapshot_prefix": snapshots.prefix,
                        "snapshot_replica_bucket": snapshots.replica_bucket,
                        "snapshot_replica_region": snapshots.replica_region,
                        "snapshot_index_backup_bucket": snapshots.index_backup_bucket,
                        "volumes_root": str(self.volumes.root)}
        # What drills may harm, by identity: a fault checks it first and refuses anything else (rehearsal.drills.targets).
        targets = {"controlplane_db": self.controlplane_db.state.get("drill_target"),
                   "control_plane_api": {"identity": self.control_plane_api.identity} if self.control_plane_api.identity else None,
                   "snapshot_store": {"bucket": snapshots.bucket, "marker": snapshots.drill_marker} if snapshots.drill_marker else None}
        environment["drill_targets"] = {k: v for k, v in targets.items() if v}
        block = self.hosts.block
        environment["regions"] = {r: {"networks": [f"{block}.{REGION_OCTETS[r]}.0/24"]} for r in REGIONS}
        customers = self.components()["customers"]
        if customers.exists:
            environment["customers_log"] = str(customers.log)
        pgbench = self.components()["pgbench"]
        if pgbench.exists:
            environment["pgbench_log"] = str(pgbench.log)
        discovery_extra = {"discovery_zone_id": zone_id, "discovery_record": RECORD, "replica_record": REPLICA_RECORD,
                           "discovery_a_record": A_RECORD}
        api = self.control_plane_api
        services_extra = {"api": api.url, "scheduler": self.scheduler.url, "reconciler": self.reconciler.url,
                          "agents_record": AGENTS_RECORD, "discovery_zone_id": zone_id}
        if self.controlplane_db.state.get("canary_app_id"):
            services_extra["canary_app"] = str(self.controlplane_db.state["canary_app_id"])
        # Each region's services (the standby control plane's too), and the records naming where they run now.
        services_extra["regions"] = {r: {n: self.components(r)[n].url for n in CONTROL_PLANE_SERVICES
                                         if self.components(r)[n].state.get("port")} for r in REGIONS}
        services_extra["service_records"] = dict(SERVICE_RECORDS)
        edges = {r: self.components(r)["edge"] for r in REGIONS}
        edge_extra = {"regions": {r: e.url for r, e in edges.items() if e.state.get("port")}, "zone_id": zone_id, "zone": ZONE,
                      "record": APPS_RECORD, "failover_record": FAILOVER_RECORD,
                      # apps read through an edge to prove it serves (reads only; customers' apps are never written)
                      "probe_apps": list(customers.state.get("probe_apps", []))}
        dns = self.components()["dns"]
        connections = {"AIRFLOW_CONN_EDGE": json.dumps({"conn_type": "http", "host": "apps.rehearsal.internal",
                                                        "extra": edge_extra})}
        if dns.state.get("port"):
            connections["AIRFLOW_CONN_DNS"] = json.dumps({"conn_type": "generic", "host": dns.host, "port": dns.port})
        return {
            "REHEARSAL_ENVIRONMENT": "sandbox",
            "REHEARSAL_DRILL_ENVIRONMENT": "true",
            "REHEARSAL_SANDBOX_DIR": str(self.dir),
            # The shared root (binaries, sockets), not this sandbox's folder: every process must agree on it.
            "REHEARSAL_RUNTIME": str(self.sandbox_state.runtime_root),
            "AWS_ENDPOINT_URL": aws_endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "BACKUP_BUCKET": BUCKET,
            "DISCOVERY_ZONE_ID": zone_id,
            "DISCOVERY_RECORD": RECORD,
            "PRIMARY_DSN": self.endpoint(primary).conninfo(),
            "STANDBY_DSN": self.endpoint(standby).conninfo() if standby else "",
            "RESULTS_DSN": Endpoint(results.host, results.port, "rehearsal", "postgres", pw["postgres"]).conninfo(),
            "HEARTBEAT_LOG": str(self.heartbeat.log),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                                                    "extra": {"endpoint_url": aws_endpoint, "region_name": REGION}}),
            "AIRFLOW_CONN_CONTROLPLANE_DB": json.dumps({"conn_type": "postgres", "host": "controlplane-db.rehearsal.internal",
                                                        "port": 5432, "login": DB, "password": pw[DB], "schema": DB,
                                                        "extra": discovery_extra}),
            "AIRFLOW_CONN_CONTROLPLANE_ADMIN": json.dumps({"conn_type": "postgres", "host": "controlplane-db.rehearsal.internal",
                                                           "port": 5432, "login": "postgres", "password": pw["postgres"],
                                                           "schema": DB, "extra": discovery_extra}),
            "AIRFLOW_CONN_REHEARSAL_RESULTS": json.dumps({"conn_type": "postgres", "host": results.host, "port": results.port,
                                                          "login": "postgres", "password": pw["postgres"], "schema": "rehearsal"}),
            "AIRFLOW_CONN_CONTROLPLANE_SERVICES": json.dumps({"conn_type": "http", "host": api.host, "port": api.port,
                                                              "schema": "http", "extra": services_extra}),
            **connections,
            "AIRFLOW_VAR_REHEARSAL_ENVIRONMENT": json.dumps(environment),
            **self.component("secrets").env_vars(),  # AIRFLOW_CONN_REHEARSAL_SECRETS: keys and files per region
        }

    def write_env(self) -> None:
        """``.sandbox/env``, once every component it names has its address (a no-op before)."""
        needs = {"controlplane_db": "primary", "results_db": "cluster", "aws_endpoint": "url", "discovery": "zone_id",
                 "wal_shipping": "spool", "api": "port", "scheduler": "port", "reconciler": "port", "prober": "log",
                 "load": "log", "volumes": "root", "snapshot_store": "bucket"}
        if not self.exists or not all(self.sandbox_state.peek(self.region, c).get(k) for c, k in needs.items()):
            return
        lines = ["# Written by the sandbox; source it: . .sandbox/env"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.env_vars().items()]
        path = self.dir / "env"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o600)
        tmp.replace(path)


def _frozen(value):
    if isinstance(value, dict):
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a sandbox's ``env`` file (what ``write_env`` wrote)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out
