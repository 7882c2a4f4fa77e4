"""The control-plane database: a PostgreSQL primary seeded with generated control-plane tables, a streaming hot
standby, and their backups; what drills do to it (kill the primary, lose its disks) and how it is made whole.

Slice::

    {"scale": 1.0, "archive_timeout": 5, "generation": 2, "primary": "cp-1", "standby": "cp-2",
     "clusters": {"cp-1": {"data_dir": ..., "port": ..., "role": "primary"}, "cp-2": {..., "role": "standby"}},
     "lost_data": ["<runtime>/lost/cp-1-..."]}

Every cluster runs on a database host of its own (``db-<n>``, ``rehearsal_sandbox.hosts``), at that host's address
and the sandbox's Postgres port; its record names both (``"host"``, ``"host_name"``).

Roles: ``primary``, ``standby``, ``lost`` (killed, waiting to be replaced), and a run's restored copies on hosts the
provisioner gave it: ``restoring`` (a point-in-time restore production may adopt as its primary) and ``scratch`` (a
copy production never uses); their records carry the run's key and purpose. Discovery records and the WAL spool are
other components': the ``Sandbox`` facade keeps them in step with what happens here.
"""
from __future__ import annotations

import os
import secrets
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor

from rehearsal.backups.base_backup import take_base_backup
from rehearsal.backups.logical_dump import take_logical_dump
from rehearsal.backups.store import BackupStore
from rehearsal.postgres.binaries import pg_tool, run_as_server, server_env
from rehearsal.postgres.cluster import LocalCluster
from rehearsal.postgres.connection import Endpoint, connect
from rehearsal_sandbox import seed
from rehearsal_sandbox.components.base import Component, cluster_of, cluster_record, cluster_status, move_to_lost, ok, progress

DB = "controlplane"


class ControlPlaneDb(Component):
    name = "controlplane_db"

    # ------------------------------------------------------------------ inventory
    @property
    def scale(self) -> float:
        return self.state["scale"]

    @property
    def archive_timeout(self) -> int:
        return self.state["archive_timeout"]

    @property
    def primary_name(self) -> str | None:
        return self.state.get("primary")

    @property
    def standby_name(self) -> str | None:
        return self.state.get("standby")

    @property
    def primary(self) -> LocalCluster:
        return self.cluster(self.state["primary"])

    @property
    def standby(self) -> LocalCluster | None:
        return self.cluster(self.state["standby"]) if self.state.get("standby") else None

    def clusters(self) -> dict[str, dict]:
        """``{name: {data_dir, port, role}}``, the live inventory (changed in place)."""
        return self.state.setdefault("clusters", {})

    def cluster(self, name: str) -> LocalCluster:
        return cluster_of(name, self.clusters()[name])

    def role(self, name: str) -> str:
        return self.clusters()[name]["role"]

    def named_at(self, address: str) -> str | None:
        """The cluster listening at ``host:port``, if any."""
        return next((n for n in self.clusters() if self.cluster(n).address == address), None)

    def new_cluster(self, role: str, purpose: str = "", run_key: str = "", region: str | None = None) -> LocalCluster:
        """A cluster on a new database host of its own (``db-<n>``, at its own address, the sandbox's Postgres port).

        Its region: ``region`` when given; a standby goes to the region the primary is not in (the standby control
        plane), unless that region is down; anything else to the primary's region."""
        self.state["generation"] = self.state.get("generation", 0) + 1
        name = f"cp-{self.state['generation']}"
        region = region or self.region_for(role)
        host = self.sandbox.hosts.allocate(f"db-{self.state['generation']}", region, "postgres", purpose, run_key)
        cluster = LocalCluster(name=name, data_dir=self.sandbox.runtime / "clusters" / name,
                               port=self.sandbox.hosts.postgres_port, host=host.address)
        labels = {k: v for k, v in (("purpose", purpose), ("run_key", run_key)) if v}
        self.clusters()[name] = {**cluster_record(cluster, role), "host_name": host.name, **labels}
        return cluster

    def primary_region(self) -> str:
        """The region of the primary's host (this component's region before there is one)."""
        name = self.state.get("primary")
        host_name = self.clusters().get(name, {}).get("host_name") if name else None
        host = self.sandbox.hosts.get(host_name) if host_name else None
        return host.region if host is not None else self.region

    def region_for(self, role: str) -> str:
        from rehearsal_sandbox.hosts import other_region

        home = self.primary_region()
        if role == "standby" and self.state.get("primary"):
            other = other_region(home)
            return home if other in self.sandbox.regions_down() else other
        return home

    def run_copy(self, run_key: str, purpose: str) -> tuple[LocalCluster, bool]:
        """The run's restored copy for ``purpose`` (``production``: role ``restoring``; ``scratch``): the one an earlier
        try made, or a new cluster on a new host. Returns (cluster, made now)."""
        for name, info in self.clusters().items():
            if info.get("run_key") == run_key and info.get("purpose") == purpose and info["role"] != "lost":
                return self.cluster(name), False
        cluster = self.new_cluster("restoring" if purpose == "production" else "scratch", purpose, run_key)
        self.sandbox.save()  # recorded before it exists: a failed restore is still torn down
        return cluster, True

    def run_copies(self, run_key: str) -> list[str]:
        """Names of a run's restored copies that production has not adopted."""
        return [n for n, i in self.clusters().items() if i.get("run_key") == run_key and i["role"] in ("restoring", "scratch")]

    def store(self) -> BackupStore:
        """Its backups and archived WAL in the bucket."""
        return self.peer("aws_endpoint").store(DB)

    def mark_lost(self, name: str) -> None:
        self.clusters()[name]["role"] = "lost"

    def endpoint(self, cluster: LocalCluster, role: str = "app") -> Endpoint:
        passwords = self.sandbox.passwords
        if role == "admin":
            return Endpoint(cluster.host, cluster.port, DB, "postgres", passwords["postgres"])
        return Endpoint(cluster.host, cluster.port, DB, DB, passwords[DB])

    def settings(self) -> dict[str, object]:
        """The primary's settings (archiving into the WAL shipper's spool)."""
        return {"wal_level": "replica", "archive_mode": "on", "archive_command": self.peer("wal_shipping").archive_command(),
                "archive_timeout": f"{self.archive_timeout}s", "max_wal_senders": 10,
                "wal_keep_size": "256MB", "hot_standby": True, "shared_buffers": "128MB", "max_connections": 60,
                "checkpoint_timeout": "5min", "max_wal_size": "512MB", "log_min_messages": "warning",
                "password_encryption": "scram-sha-256"}

    # ------------------------------------------------------------------ up
    def up(self, scale: float | None = None, archive_timeout: int | None = None) -> None:
        """Primary, seed, then a streaming standby with the first base backup and logical dump beside it."""
        scale = float(os.environ.get("SANDBOX_SCALE", "1")) if scale is None else scale
        archive_timeout = int(os.environ.get("SANDBOX_ARCHIVE_TIMEOUT", "5")) if archive_timeout is None else archive_timeout
        self.state.update({"scale": scale, "archive_timeout": archive_timeout, "generation": 0, "clusters": {}})
        progress(f"creating the control-plane primary (archive_timeout {archive_timeout}s)")
        primary = self.new_cluster("primary")
        self.state["primary"] = primary.name
        self.sandbox.save()  # recorded before it exists: a failed start is still torn down
        primary.initdb(self.sandbox.passwords["postgres"])
        primary.configure(self.settings())
        primary.allow_replication()
        primary.start()
        self.sandbox.save()
        with connect(self.endpoint(primary, "admin").with_(dbname="postgres")) as conn:
            conn.execute(f"CREATE ROLE {DB} LOGIN PASSWORD {_literal(self.sandbox.passwords[DB])}")
            conn.execute(f"CREATE DATABASE {DB} OWNER {DB}")
        with connect(self.endpoint(primary, "admin")) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            conn.execute(f"GRANT CREATE ON SCHEMA public TO {DB}")
            self._mark_drill_target(conn)
        progress(f"seeding control-plane data at scale {scale} (about {int(200 * scale)} MB)")
        started = time.monotonic()
        self._seed(primary, scale)
        progress(f"seeded in {time.monotonic() - started:.1f}s")
        self._deploy_fleet(primary)
        progress("creating the streaming standby, the first base backup and the first logical dump (in parallel)")
        self.rebuild_standby_and_back_up()

    def _mark_drill_target(self, conn) -> None:
        """The identity drills check before they harm this database (``rehearsal.drills.targets``): its system
        identifier and a marker row, written before the first backups (so its standbys and copies hold it too)."""
        from rehearsal.drills.targets import MARKER_TABLE
        from rehearsal.postgres.connection import HEALTH_TABLE

        marker = secrets.token_hex(8)
        conn.execute(f"CREATE TABLE {MARKER_TABLE} (marker text PRIMARY KEY, environment text NOT NULL, "
                     "created_at timestamptz NOT NULL DEFAULT now())")
        conn.execute(f"INSERT INTO {MARKER_TABLE} (marker, environment) VALUES (%s, 'sandbox')", (marker,))
        conn.execute(f"GRANT SELECT ON {MARKER_TABLE} TO {DB}")  # its dumps hold it (only a superuser changes it)
        # Where runbooks probe Postgres health with a real write (rehearsal.postgres.connection.write_health).
        conn.execute(f"CREATE TABLE {HEALTH_TABLE} (prober text PRIMARY KEY, token text NOT NULL, "
                     "probed_at timestamptz NOT NULL)")
        conn.execute(f"GRANT SELECT ON {HEALTH_TABLE} TO {DB}")
        identifier = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
        self.state["drill_target"] = {"system_identifier": str(identifier), "marker": marker}
        self.sandbox.save()

    def _seed(self, primary: LocalCluster, scale: float) -> None:
        """The seed's lanes side by side, as a bulk load: max_wal_size is raised for its duration so no checkpoint
        falls between a page's insert and its vacuum (with data checksums, every page touched again after a
        checkpoint is logged whole: at scale 5 that doubled the WAL the archive has to take)."""
        admin = self.endpoint(primary, "admin")
        with connect(admin) as conn:
            conn.execute("ALTER SYSTEM SET max_wal_size = '16GB'")
            conn.execute("SELECT pg_reload_conf()")
        try:
            with connect(self.endpoint(primary), statement_timeout_ms=0) as conn:
                conn.execute(seed.SCHEMA_SQL.read_text())

            def fill(lane: list[str]) -> None:
                with connect(self.endpoint(primary), statement_timeout_ms=0) as conn:
                    for statement in lane:
                        conn.execute(statement)

            lanes = seed.seed_lanes(scale)
            with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="seed") as pool:
                for done in [pool.submit(fill, lane) for lane in lanes]:
                    done.result()
        finally:
            with connect(admin) as conn:
                conn.execute(f"ALTER SYSTEM SET max_wal_size = '{self.settings()['max_wal_size']}'")
                conn.execute("SELECT pg_reload_conf()")

    def _deploy_fleet(self, primary: LocalCluster) -> None:
        """Migration 0006 (deployments, placements, host reports, the audit triggers) and the live fleet's rows, then
        migration 0007 (volume attachments) and the sandbox's volumes' rows (the Volumes component's): before the
        first backups, so they hold them."""
        apps, hosts = seed.fleet_size()
        progress(f"migrating to {seed.SCHEMA_VERSION}; the live fleet: {apps} apps on {hosts} hosts")
        owner, superuser = seed.migration()
        with connect(self.endpoint(primary), statement_timeout_ms=0) as conn:
            conn.execute(owner)
        with connect(self.endpoint(primary, "admin"), statement_timeout_ms=0) as conn:
            conn.execute(superuser)
        with connect(self.endpoint(primary), statement_timeout_ms=0) as conn:
            for statement in seed.fleet_statements(apps, hosts):
                conn.execute(statement)
            # The platform's own canary: a deployed app no customer owns, the only one runbooks' probes write to.
            canary = conn.execute("UPDATE apps SET name = 'rehearsal-canary' WHERE id = (SELECT min(app_id) FROM "
                                  "deployments) RETURNING id").fetchone()[0]
            conn.execute(seed.migration(seed.VOLUMES_MIGRATION_SQL)[0])
            self.peer("volumes").attach(conn)
            conn.execute(seed.migration(seed.IPV4_MIGRATION_SQL)[0])
        self.state["fleet"] = {"apps": apps, "hosts": hosts}
        self.state["canary_app_id"] = int(canary)
        self.sandbox.save()

    def fleet(self) -> dict:
        """``{"apps": n, "hosts": n}``: the live fleet's size, as created."""
        return dict(self.state.get("fleet") or dict(zip(("apps", "hosts"), seed.fleet_size(), strict=True)))

    # ------------------------------------------------------------------ standby and backups
    def rebuild_standby(self) -> LocalCluster:
        """A fresh streaming standby of the current primary (the replica record is the facade's to publish)."""
        old = self.standby
        if old is not None:
            self.forget_cluster(old.name)
        standby = self.new_cluster("standby")
        standby.make_empty_data_dir()
        primary = self.primary
        env = {**server_env(), "PGPASSWORD": self.sandbox.passwords["postgres"], "PGCONNECT_TIMEOUT": "5"}
        run_as_server([pg_tool("pg_basebackup"), "-h", primary.host, "-p", str(primary.port), "-U", "postgres",
                       "-D", str(standby.data_dir), "-X", "stream", "-R", "-c", "fast", "--no-password"],
                      env=env, timeout=3600)
        # Its address as cluster_name: the WAL receiver reports it as application_name, so the primary's
        # pg_stat_replication names its standbys (how a runbook finds them from connections alone).
        standby.configure({"cluster_name": standby.address})
        standby.start()
        self.state["standby"] = standby.name
        self.sandbox.save()
        return standby

    def take_backups(self) -> dict:
        """A base backup and a logical dump of the current primary, taken at the same time (each is I/O bound)."""
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backup") as pool:
            return _results(self._submit_backups(pool))

    def rebuild_standby_and_back_up(self, dump: bool = True) -> tuple[LocalCluster, dict]:
        """A new standby and fresh backups, side by side (see ``Sandbox.rebuild_standby_and_back_up``)."""
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="backup") as pool:
            jobs = self._submit_backups(pool, dump)  # endpoints read before the standby entry changes
            standby = pool.submit(self.rebuild_standby)
            backups = _results({**jobs, "standby": standby})
            return backups.pop("standby"), backups

    def _submit_backups(self, pool: ThreadPoolExecutor, dump: bool = True) -> dict[str, Future]:
        store, primary = self.store(), self.primary
        admin, app = self.endpoint(primary, "admin"), self.endpoint(primary)
        jobs = {"base_backup": pool.submit(take_base_backup, admin, app, store)}
        if dump:
            jobs["logical_dump"] = pool.submit(take_logical_dump, app, store)
        return jobs

    def archive_backlog(self) -> int:
        """Segments the primary has finished but its archiver has not yet copied to the spool."""
        with connect(self.endpoint(self.primary, "admin")) as conn:
            return conn.execute("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'").fetchone()[0]

    # ------------------------------------------------------------------ what drills do to it
    def kill_primary(self) -> tuple[LocalCluster, int | None, float]:
        """SIGKILL the primary's processes and mark it lost: (cluster, postmaster pid, when the kill took effect)."""
        primary = self.primary
        pid = primary.kill()
        killed_at = time.time()  # every server process is gone: nothing is acknowledged by it after this
        self.mark_lost(primary.name)
        self.sandbox.save()
        return primary, pid, killed_at

    def lose_data_dir(self, cluster: LocalCluster) -> None:
        """Its disks are gone: the data directory moved aside in one rename, deleted by ``discard_lost_data``."""
        lost = move_to_lost(self.sandbox.runtime, cluster.data_dir, cluster.name)
        if lost:
            self.state.setdefault("lost_data", []).append(lost)

    def discard_lost_data(self) -> list[str]:
        gone = self.state.pop("lost_data", [])
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
        return gone

    def heal(self, discovery_target: str | None = None) -> tuple[list[str], bool]:
        """The inventory follows what runs (see ``Sandbox.heal``). Returns what it did, and whether the primary
        changed.

        :param discovery_target: where the discovery record points (``host:port``): a promoted member there is the one
            clients already use, so it is preferred"""
        actions = []
        primary_name = self.state["primary"]
        if self.role(primary_name) != "lost" and not self.primary.is_running():
            self.mark_lost(primary_name)
            self.sandbox.save()
            actions.append(f"marked the stopped primary {primary_name} lost")
        if self.role(self.state["primary"]) != "lost":
            return actions, False
        promoted = self._running_primary_other_than(self.state["primary"], discovery_target)
        if promoted is not None:
            self.adopt_primary(promoted.name)
            actions.append(f"recorded {promoted.name}, already promoted, as the primary")
            return actions, True
        standby = self.standby
        if standby is None or not standby.is_running():
            raise RuntimeError("the primary was lost and no standby is running: run `make sandbox-down sandbox-up`")
        with connect(self.endpoint(standby, "admin").with_(dbname="postgres")) as conn:
            if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                conn.execute("SELECT pg_promote(true, 60)")
        self.adopt_primary(standby.name)
        actions.append(f"promoted standby {standby.name} to replace the lost primary")
        return actions, True

    def _running_primary_other_than(self, lost: str, preferred: str | None = None) -> LocalCluster | None:
        """A running member out of recovery: a standby a runbook promoted, or a restored copy discovery points at (a
        copy discovery does not point at was never switched to; a scratch copy never is)."""
        for name, info in sorted(self.clusters().items(), key=lambda item: self.cluster(item[0]).address != preferred):
            if name == lost or info["role"] not in ("standby", "restoring"):
                continue
            if info["role"] == "restoring" and self.cluster(name).address != preferred:
                continue
            cluster = self.cluster(name)
            if not cluster.is_running():
                continue
            try:
                with connect(self.endpoint(cluster, "admin").with_(dbname="postgres"), connect_timeout=2) as conn:
                    if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        return cluster
            except Exception:  # noqa: BLE001 - not answering: not the primary
                continue
        return None

    def forget_cluster(self, name: str) -> None:
        """Destroy a cluster and everything beside it (log, markers, quarantine), and give its host back; drop an
        emptied scratch folder."""
        cluster = self.cluster(name)
        cluster.destroy()
        host_name = self.clusters()[name].get("host_name")
        if host_name:
            self.sandbox.hosts.release(host_name)
        parent = cluster.data_dir.parent
        for sibling in parent.glob(f"{name}.*"):
            if sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
        scratch = self.sandbox.runtime / "scratch"
        if parent.parent == scratch and parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
        self.clusters().pop(name, None)

    def adopt_primary(self, name: str) -> None:
        """Record a recovered cluster of the inventory (a promoted standby, a restored copy) as the primary; the lost
        ones are destroyed."""
        for old, info in list(self.clusters().items()):
            if info["role"] == "lost":
                self.forget_cluster(old)
        if self.state.get("standby") == name:
            self.state["standby"] = None
        record = self.clusters()[name]
        record["role"] = "primary"
        record.pop("purpose", None)
        record.pop("run_key", None)
        self.state["primary"] = name
        self.sandbox.save()

    # ------------------------------------------------------------------ status / down
    def status(self) -> dict[str, dict]:
        if not self.clusters():
            return {self.name: ok(False, "no clusters")}
        parts, every = [], True
        for name, info in self.clusters().items():
            running, detail = cluster_status(self.cluster(name))
            every = every and running
            parts.append(f"{info['role']} {detail}")
        return {self.name: ok(every, "; ".join(parts))}

    def down(self) -> None:
        for name in list(self.clusters()):
            self.cluster(name).destroy()
            self.clusters().pop(name)
        self.discard_lost_data()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _results(jobs: dict[str, Future]) -> dict:
    """Every job's result (a backup's id), or one error naming every job that failed and why."""
    out, failed = {}, []
    for name, job in jobs.items():
        try:
            result = job.result()
        except Exception as exc:  # noqa: BLE001 - gathered and raised below, each with its job's name
            failed.append(f"{name.replace('_', ' ')}: {exc}")
            continue
        out[name] = getattr(result, "backup_id", result)
    if failed:
        raise RuntimeError("; ".join(failed))
    return out
