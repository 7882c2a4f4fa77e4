"""The sandbox platform: a local AWS endpoint, a control-plane Postgres primary with a streaming
standby, WAL archiving to S3, base backups and dumps, a results database, service discovery and a
heartbeat writer. Real processes that really die; state in ``.sandbox/``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import boto3
import psutil
from botocore.config import Config

from rehearsal.backups.base_backup import take_base_backup
from rehearsal.backups.logical_dump import take_logical_dump
from rehearsal.backups.store import BackupStore
from rehearsal.discovery import DiscoveryRecord, point_all_at, point_at, resolve
from rehearsal.postgres.binaries import REPO_ROOT, chown_to_server, pg_tool, run_as_server, runtime_root
from rehearsal.postgres.cluster import LocalCluster, free_port, port_is_listening
from rehearsal.postgres.connection import Endpoint, connect
from rehearsal_sandbox import seed
from rehearsal_sandbox.wal_shipper import archive_command

log = logging.getLogger(__name__)
_CLIENT_LOCK = threading.Lock()

STATE_DIR = Path(os.environ.get("REHEARSAL_SANDBOX_DIR", REPO_ROOT / ".sandbox"))
BUCKET = "rehearsal-backups"
ZONE = "rehearsal.internal."
RECORD = "_postgresql._tcp.controlplane-db.rehearsal.internal."
REPLICA_RECORD = "_postgresql-replica._tcp.controlplane-db.rehearsal.internal."  # the standbys, for runbooks
PROVISIONER = "rehearsal_sandbox.provisioner:SandboxProvisioner"
REGION = "us-east-1"
DB = "controlplane"


def progress(message: str) -> None:
    print(f"[sandbox] {message}", flush=True)


class Sandbox:
    def __init__(self, state_dir: Path | None = None) -> None:
        self.dir = Path(state_dir or STATE_DIR)
        self.state_file = self.dir / "state.json"
        self.state: dict = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    # ---------------------------------------------------------------- state and clients
    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)
        self.write_env()

    @property
    def runtime(self) -> Path:
        return Path(self.state["runtime"])

    def cluster(self, name: str) -> LocalCluster:
        info = self.state["clusters"][name]
        return LocalCluster(name=name, data_dir=Path(info["data_dir"]), port=int(info["port"]))

    def new_cluster(self, role: str) -> LocalCluster:
        self.state["generation"] = self.state.get("generation", 0) + 1
        name = f"cp-{self.state['generation']}"
        cluster = LocalCluster(name=name, data_dir=self.runtime / "clusters" / name, port=free_port())
        self.state["clusters"][name] = {"data_dir": str(cluster.data_dir), "port": cluster.port, "role": role}
        return cluster

    @property
    def primary(self) -> LocalCluster:
        return self.cluster(self.state["primary"])

    @property
    def standby(self) -> LocalCluster | None:
        return self.cluster(self.state["standby"]) if self.state.get("standby") else None

    def aws(self, service: str):
        with _CLIENT_LOCK:  # boto3's default session is not safe to create clients from two threads at once
            return boto3.client(service, endpoint_url=self.state["aws_endpoint"], region_name=REGION,
                                aws_access_key_id="testing", aws_secret_access_key="testing",
                                # Probes stay short; S3 completes multipart uploads of whole base backups.
                                config=Config(connect_timeout=2, read_timeout=600 if service == "s3" else 10,
                                              retries={"max_attempts": 2}))

    def store(self) -> BackupStore:
        return BackupStore(self.aws("s3"), BUCKET, DB)

    def discovery(self) -> DiscoveryRecord:
        return DiscoveryRecord(zone_id=self.state["zone_id"], name=RECORD)

    def replica_discovery(self) -> DiscoveryRecord:
        return DiscoveryRecord(zone_id=self.state["zone_id"], name=REPLICA_RECORD)

    def publish_standbys(self) -> None:
        """The replica record lists the running standbys (a runbook finds them there when the primary is gone)."""
        standby = self.standby
        targets = [("127.0.0.1", standby.port)] if standby is not None else []
        point_all_at(self.aws("route53"), self.replica_discovery(), targets)

    def endpoint(self, cluster: LocalCluster, role: str = "app") -> Endpoint:
        if role == "admin":
            return Endpoint("127.0.0.1", cluster.port, DB, "postgres", self.state["passwords"]["postgres"])
        return Endpoint("127.0.0.1", cluster.port, DB, DB, self.state["passwords"][DB])

    def results_endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.cluster("results").port, "rehearsal", "postgres",
                        self.state["passwords"]["postgres"])

    # ---------------------------------------------------------------- up
    def is_up(self) -> bool:
        if not self.state:
            return False
        status = self.status()
        return all(v["ok"] for v in status.values())

    def up(self, scale: float | None = None, archive_timeout: int | None = None) -> None:
        if self.state and self.is_up():
            progress("already running")
            return
        if self.state:
            progress("found a partial sandbox; tearing it down first")
            self.down()
        scale = float(os.environ.get("SANDBOX_SCALE", "1")) if scale is None else scale
        archive_timeout = int(os.environ.get("SANDBOX_ARCHIVE_TIMEOUT", "5")) if archive_timeout is None else archive_timeout
        # Each sandbox has its own folder under the runtime root: two sandboxes must never share cluster dirs.
        root = runtime_root() / f"sandbox-{hashlib.sha256(str(self.dir.resolve()).encode()).hexdigest()[:10]}"
        root.mkdir(mode=0o755, exist_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self.state = {"runtime": str(root), "runtime_root": str(runtime_root()), "clusters": {}, "pids": {}, "generation": 0, "scale": scale,
                      "archive_timeout": archive_timeout,
                      "passwords": {"postgres": secrets.token_urlsafe(18), DB: secrets.token_urlsafe(18)}}
        spool = root / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        chown_to_server(spool)
        self.state["spool"] = str(spool)
        (root / "scratch").mkdir(mode=0o755, exist_ok=True)
        progress("starting the local AWS endpoint (moto server)")
        self._start_moto()
        s3 = self.aws("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        zone = self.aws("route53").create_hosted_zone(Name=ZONE, CallerReference=secrets.token_hex(8))
        self.state["zone_id"] = zone["HostedZone"]["Id"].split("/")[-1]
        self.save()

        progress("creating the results database")
        results = LocalCluster("results", root / "clusters" / "results", free_port())
        self.state["clusters"]["results"] = {"data_dir": str(results.data_dir), "port": results.port, "role": "results"}
        results.initdb(self.state["passwords"]["postgres"])
        results.start()
        with connect(Endpoint("127.0.0.1", results.port, "postgres", "postgres", self.state["passwords"]["postgres"])) as conn:
            conn.execute("CREATE DATABASE rehearsal")
        self.save()

        progress(f"creating the control-plane primary (archive_timeout {archive_timeout}s)")
        primary = self.new_cluster("primary")
        self.state["primary"] = primary.name
        primary.initdb(self.state["passwords"]["postgres"])
        primary.configure(self.primary_settings())
        primary.allow_replication()
        primary.start()
        self.save()
        admin = self.endpoint(primary, "admin").with_(dbname="postgres")
        with connect(admin) as conn:
            conn.execute(f"CREATE ROLE {DB} LOGIN PASSWORD %s".replace("%s", _literal(self.state["passwords"][DB])))
            conn.execute(f"CREATE DATABASE {DB} OWNER {DB}")
        with connect(self.endpoint(primary, "admin")) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS amcheck")
            conn.execute(f"GRANT CREATE ON SCHEMA public TO {DB}")
        self._start_daemon("wal-shipper")  # ships the seed's WAL while it is written
        progress(f"seeding control-plane data at scale {scale} (about {int(200 * scale)} MB)")
        started = time.monotonic()
        self._seed(primary, scale)
        progress(f"seeded in {time.monotonic() - started:.1f}s")

        point_at(self.aws("route53"), self.discovery(), "127.0.0.1", primary.port)
        progress("creating the streaming standby, the first base backup and the first logical dump (in parallel)")
        self.rebuild_standby_and_back_up()
        self._start_daemon("heartbeat")
        self.save()
        progress("sandbox is up; environment in " + str(self.dir / "env"))

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
                conn.execute(f"ALTER SYSTEM SET max_wal_size = '{self.primary_settings()['max_wal_size']}'")
                conn.execute("SELECT pg_reload_conf()")

    def archive_backlog(self) -> int:
        """WAL segments not yet in the bucket: waiting for the archiver, or in the spool for the shipper."""
        with connect(self.endpoint(self.primary, "admin")) as conn:
            ready = conn.execute("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'").fetchone()[0]
        return ready + sum(1 for p in Path(self.state["spool"]).iterdir() if not p.name.startswith("."))

    def primary_settings(self) -> dict[str, object]:
        return {"wal_level": "replica", "archive_mode": "on", "archive_command": archive_command(Path(self.state["spool"])),
                "archive_timeout": f"{self.state['archive_timeout']}s", "max_wal_senders": 10,
                "wal_keep_size": "256MB", "hot_standby": True, "shared_buffers": "128MB", "max_connections": 60,
                "checkpoint_timeout": "5min", "max_wal_size": "512MB", "log_min_messages": "warning",
                "password_encryption": "scram-sha-256"}

    def rebuild_standby(self) -> LocalCluster:
        """A fresh streaming standby of the current primary (the sandbox made whole again)."""
        old = self.standby
        if old is not None:
            self.forget_cluster(old.name)
        standby = self.new_cluster("standby")
        standby.make_empty_data_dir()
        primary = self.primary
        env = {**_server_env_with_password(self.state["passwords"]["postgres"])}
        run_as_server([pg_tool("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                       "-D", str(standby.data_dir), "-X", "stream", "-R", "-c", "fast", "--no-password"],
                      env=env, timeout=3600)
        # Its address as cluster_name: the WAL receiver reports it as application_name, so the primary's
        # pg_stat_replication names its standbys (how a runbook finds them from connections alone).
        standby.configure({"cluster_name": f"127.0.0.1:{standby.port}"})
        standby.start()
        self.state["standby"] = standby.name
        self.save()
        self.publish_standbys()
        return standby

    def take_backups(self) -> dict:
        """A base backup and a logical dump of the current primary, taken at the same time (each is I/O bound)."""
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="backup") as pool:
            jobs = self._submit_backups(pool)
            return _results(jobs)

    def rebuild_standby_and_back_up(self, dump: bool = True) -> tuple[LocalCluster, dict]:
        """The sandbox made whole after its primary changed: a new standby and fresh backups, side by side.

        :param dump: also take a logical dump. After a failover only the base backup is needed: the new primary
            writes a new timeline, and its WAL is replayable from a base backup of that timeline. Logical
            dumps do not depend on timelines; they keep their own schedule (``dr_backup_postgres``).
        """
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

    # ---------------------------------------------------------------- daemons
    def _start_moto(self) -> None:
        port = free_port()
        env = {**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
        self._spawn("moto", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env)
        self.state["aws_endpoint"] = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server did not start on port {port}: see {self.dir / 'moto.log'}")

    def _start_daemon(self, name: str) -> None:
        self._spawn(name, [sys.executable, "-m", "rehearsal_sandbox", f"run-{name}", "--state-dir", str(self.dir)])

    def _spawn(self, name: str, args: list[str], env: dict | None = None) -> None:
        env = dict(env or os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "include"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        logfile = open(self.dir / f"{name}.log", "ab")
        proc = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env, cwd=str(REPO_ROOT))
        self.state["pids"][name] = proc.pid
        self.save()

    def daemon_alive(self, name: str) -> bool:
        pid = self.state.get("pids", {}).get(name)
        if not pid or not psutil.pid_exists(pid):
            return False
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def stop_daemon(self, name: str) -> None:
        pid = self.state.get("pids", {}).pop(name, None)
        if not pid:
            return
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            proc.wait(timeout=10)
        except psutil.TimeoutExpired:
            proc.kill()
        except psutil.Error:
            pass

    # ---------------------------------------------------------------- status / down
    def status(self) -> dict[str, dict]:
        if not self.state:
            return {"sandbox": {"ok": False, "detail": "not created (run make sandbox-up)"}}
        out: dict[str, dict] = {}
        for name in ("moto", "wal-shipper", "heartbeat"):
            out[name] = {"ok": self.daemon_alive(name), "detail": f"pid {self.state['pids'].get(name)}"}
        for name, info in self.state.get("clusters", {}).items():
            cluster = self.cluster(name)
            out[f"{info['role']} {name}"] = {"ok": cluster.is_running() and port_is_listening(cluster.port),
                                             "detail": f"port {cluster.port}, data {cluster.data_dir}"}
        try:
            host, port = resolve(self.aws("route53"), self.discovery())
            out["discovery"] = {"ok": port == self.primary.port, "detail": f"{RECORD} -> {host}:{port}"}
        except Exception as exc:  # noqa: BLE001
            out["discovery"] = {"ok": False, "detail": str(exc)}
        return out

    def down(self) -> None:
        for name in ("heartbeat", "wal-shipper"):
            self.stop_daemon(name)
        for name in list(self.state.get("clusters", {})):
            self.cluster(name).destroy()
        self.stop_daemon("moto")
        runtime = self.state.get("runtime")
        if runtime:
            for sub in ("clusters", "spool", "scratch"):
                shutil.rmtree(Path(runtime) / sub, ignore_errors=True)
            if Path(runtime).name.startswith("sandbox-"):
                shutil.rmtree(runtime, ignore_errors=True)
        # The heartbeat log is evidence about these clusters only: a new sandbox starts a new log.
        for path in (self.state_file, self.dir / "env", self.dir / "heartbeat.log"):
            path.unlink(missing_ok=True)
        self.state = {}

    # ---------------------------------------------------------------- environment file
    def env_vars(self) -> dict[str, str]:
        s = self.state
        primary, standby = self.primary, self.standby
        pw = s["passwords"]
        results = self.cluster("results")
        environment = {"name": "sandbox", "drill_environment": True, "backup_bucket": BUCKET, "backup_cluster": DB,
                       "heartbeat_log": str(self.dir / "heartbeat.log"), "sandbox_state": str(self.dir),
                       "reports_dir": os.environ.get("REHEARSAL_REPORTS_DIR", str(REPO_ROOT / "reports")),
                       "scratch_root": str(self.runtime / "scratch"), "archive_timeout_seconds": s["archive_timeout"],
                       "archive_command": archive_command(Path(s["spool"])), "provisioner": PROVISIONER}
        discovery_extra = {"discovery_zone_id": s["zone_id"], "discovery_record": RECORD, "replica_record": REPLICA_RECORD}
        return {
            "REHEARSAL_ENVIRONMENT": "sandbox",
            "REHEARSAL_DRILL_ENVIRONMENT": "true",
            "REHEARSAL_SANDBOX_DIR": str(self.dir),
            # The shared root (binaries, sockets), not this sandbox's folder: every process must agree on it.
            "REHEARSAL_RUNTIME": self.state.get("runtime_root", str(self.runtime.parent)),
            "AWS_ENDPOINT_URL": s["aws_endpoint"],
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "BACKUP_BUCKET": BUCKET,
            "DISCOVERY_ZONE_ID": s["zone_id"],
            "DISCOVERY_RECORD": RECORD,
            "PRIMARY_DSN": self.endpoint(primary).conninfo(),
            "STANDBY_DSN": self.endpoint(standby).conninfo() if standby else "",
            "RESULTS_DSN": Endpoint("127.0.0.1", results.port, "rehearsal", "postgres", pw["postgres"]).conninfo(),
            "HEARTBEAT_LOG": str(self.dir / "heartbeat.log"),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                                                    "extra": {"endpoint_url": s["aws_endpoint"], "region_name": REGION}}),
            "AIRFLOW_CONN_CONTROLPLANE_DB": json.dumps({"conn_type": "postgres", "host": "controlplane-db.rehearsal.internal",
                                                        "port": 5432, "login": DB, "password": pw[DB], "schema": DB,
                                                        "extra": discovery_extra}),
            "AIRFLOW_CONN_CONTROLPLANE_ADMIN": json.dumps({"conn_type": "postgres", "host": "controlplane-db.rehearsal.internal",
                                                           "port": 5432, "login": "postgres", "password": pw["postgres"],
                                                           "schema": DB, "extra": discovery_extra}),
            "AIRFLOW_CONN_REHEARSAL_RESULTS": json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": results.port,
                                                          "login": "postgres", "password": pw["postgres"], "schema": "rehearsal"}),
            "AIRFLOW_VAR_REHEARSAL_ENVIRONMENT": json.dumps(environment),
        }

    def write_env(self) -> None:
        if "primary" not in self.state or "results" not in self.state.get("clusters", {}):
            return
        lines = ["# Written by the sandbox; source it: . .sandbox/env"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in self.env_vars().items()]
        path = self.dir / "env"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.chmod(0o600)
        tmp.replace(path)

    # ---------------------------------------------------------------- what drills do to it
    def kill_primary(self, lose_data: bool = True) -> dict:
        """The fault: SIGKILL the primary's processes and, optionally, lose its host's disks: its data directory
        and the WAL spool beside it (segments archived locally but not yet shipped to S3 are lost with the host,
        as they would be in a real host loss)."""
        primary = self.primary
        pid = primary.kill()
        killed_at = time.time()  # every server process is gone: nothing is acknowledged by it after this
        self.state["clusters"][primary.name]["role"] = "lost"
        self.save()
        lost_spool: list[str] = []
        if lose_data:
            lost_spool = self._lose_spool(primary.name)
            # Gone for the recovery in one rename: nothing can start from it or read it at its path. The bytes are
            # deleted by discard_lost_data() at teardown; deleting 1 GB here took 4 s of the measured outage.
            self._move_to_lost(primary.data_dir, primary.name)
            self.save()
        return {"cluster": primary.name, "port": primary.port, "pid": pid, "killed_at": killed_at, "data_lost": lose_data,
                "spool_lost": lose_data, "unshipped_wal_lost": lost_spool}

    def _lose_spool(self, host: str) -> list[str]:
        """The spool goes with the host: moved aside in one rename (the shipper finds an empty spool at the same
        path, where the new primary archives). Returns the WAL files that had not been shipped."""
        spool = Path(self.state["spool"])
        waiting = sorted(p.name for p in spool.iterdir() if not p.name.startswith(".")) if spool.exists() else []
        if spool.exists():
            self._move_to_lost(spool, f"{host}-spool")
        spool.mkdir(parents=True, exist_ok=True)
        chown_to_server(spool)
        return waiting

    def _move_to_lost(self, path: Path, label: str) -> None:
        lost = self.runtime / "lost" / f"{label}-{time.time_ns()}"
        try:
            lost.parent.mkdir(exist_ok=True)
            path.rename(lost)
            self.state.setdefault("lost_data", []).append(str(lost))
        except OSError as exc:  # another filesystem, say: delete in place
            log.warning("could not move %s aside (%s); deleting it now", path, exc)
            shutil.rmtree(path, ignore_errors=True)

    def discard_lost_data(self) -> list[str]:
        """Delete the data directories that faults moved aside; returns what was deleted."""
        gone = self.state.pop("lost_data", [])
        for path in gone:
            shutil.rmtree(path, ignore_errors=True)
        self.save()
        return gone

    def heal(self) -> list[str]:
        """After a drill or an incident run that stopped part-way, or a primary killed by hand: the inventory
        follows what is really running. A dead primary is marked lost; a running member that is no longer in
        recovery (a standby promoted by a runbook) becomes the primary, else the standby is promoted; discovery
        points at the primary. Returns what it did."""
        actions = []
        primary_name = self.state["primary"]
        if self.state["clusters"][primary_name]["role"] != "lost" and not self.primary.is_running():
            self.state["clusters"][primary_name]["role"] = "lost"
            self.save()
            actions.append(f"marked the stopped primary {primary_name} lost")
        if self.state["clusters"][self.state["primary"]]["role"] == "lost":
            promoted = self._running_primary_other_than(self.state["primary"])
            if promoted is not None:
                self.adopt_primary(promoted.name, promoted.port, str(promoted.data_dir))
                actions.append(f"recorded {promoted.name}, already promoted, as the primary")
            else:
                standby = self.standby
                if standby is None or not standby.is_running():
                    raise RuntimeError("the primary was lost and no standby is running: run `make sandbox-down sandbox-up`")
                with connect(self.endpoint(standby, "admin").with_(dbname="postgres")) as conn:
                    if conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
                        conn.execute("SELECT pg_promote(true, 60)")
                self.adopt_primary(standby.name, standby.port, str(standby.data_dir))
                actions.append(f"promoted standby {standby.name} to replace the lost primary")
        if point_at(self.aws("route53"), self.discovery(), "127.0.0.1", self.primary.port):
            actions.append(f"pointed discovery at the primary {self.primary.name}")
        return actions

    def _running_primary_other_than(self, lost: str) -> LocalCluster | None:
        for name, info in self.state["clusters"].items():
            if name == lost or info["role"] in ("results", "lost"):
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
        """Destroy a cluster and everything beside it (log, markers, quarantine); drop an emptied scratch folder."""
        cluster = self.cluster(name)
        cluster.destroy()
        parent = cluster.data_dir.parent
        for sibling in parent.glob(f"{name}.*"):
            if sibling.is_dir():
                shutil.rmtree(sibling, ignore_errors=True)
            else:
                sibling.unlink(missing_ok=True)
        scratch = self.runtime / "scratch"
        if parent.parent == scratch and parent.exists() and not any(parent.iterdir()):
            parent.rmdir()
        self.state["clusters"].pop(name, None)

    def adopt_primary(self, name: str, port: int, data_dir: str) -> None:
        """Record a recovered cluster as the new primary; drop the lost one and re-enable archiving."""
        for old, info in list(self.state["clusters"].items()):
            if info["role"] == "lost":
                self.forget_cluster(old)
        if self.state.get("standby") == name:
            self.state["standby"] = None
        self.state["clusters"][name] = {"data_dir": data_dir, "port": port, "role": "primary"}
        self.state["primary"] = name
        self.save()
        self.publish_standbys()


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _server_env_with_password(password: str) -> dict[str, str]:
    from rehearsal.postgres.binaries import server_env
    return {**server_env(), "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}


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


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of a sandbox's ``env`` file (what ``write_env`` wrote)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            out[key] = shlex.split(value)[0] if value else ""
    return out
