"""What every sandbox component is: ``up()``, ``down()``, ``status()``, and one slice of the state file.

A component reads and writes only its own slice (``self.state``). What it needs from another component it asks the
``Sandbox`` facade for (an endpoint, an AWS client, the archive command), never that component's slice.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import psutil

from rehearsal.postgres.binaries import REPO_ROOT
from rehearsal.postgres.cluster import LocalCluster, free_port, port_is_listening
from rehearsal.postgres.connection import Endpoint, connect

if TYPE_CHECKING:
    from rehearsal_sandbox.sandbox import Sandbox

log = logging.getLogger(__name__)


def progress(message: str) -> None:
    print(f"[sandbox] {message}", flush=True)


def ok(is_ok: bool, detail: str) -> dict:
    return {"ok": bool(is_ok), "detail": detail}


class Component:
    """One part of one region of the sandbox."""

    name: ClassVar[str]
    on_demand: ClassVar[bool] = False  # True: not started by Sandbox.up(), but by whoever needs it

    def __init__(self, sandbox: Sandbox, region: str) -> None:
        self.sandbox = sandbox
        self.region = region

    @property
    def state(self) -> dict:
        """This component's slice of the state file, changed in place; ``self.sandbox.save()`` writes it."""
        return self.sandbox.sandbox_state.component(self.region, self.name)

    @property
    def exists(self) -> bool:
        return self.sandbox.sandbox_state.has_component(self.region, self.name)

    def peer(self, name: str) -> Any:
        """Another component of the same region (its methods, never its slice)."""
        return self.sandbox.component(name, self.region)

    def up(self) -> None:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def status(self) -> dict[str, dict]:
        """``{name: {"ok": bool, "detail": str}}``: one entry, named after the component."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.region}/{self.name}>"


class ClusterComponent(Component):
    """A component that is one PostgreSQL cluster holding one database of ours.

    Slice: ``{"cluster": {"name", "data_dir", "port", "role"}}``, recorded before the cluster is created, so a
    failed start is still torn down."""

    cluster_name: ClassVar[str]
    database: ClassVar[str]
    role: ClassVar[str]
    settings: ClassVar[dict[str, object]] = {}
    host_name: ClassVar[str | None] = None  # its own host (global: outlives any region); None: the worker's 127.0.0.1

    def cluster(self) -> LocalCluster:
        record = self.state["cluster"]
        return cluster_of(record["name"], record)

    def clusters(self) -> dict[str, dict]:
        """Its cluster in the inventory's form, ``{name: {data_dir, port, role}}``."""
        if "cluster" not in self.state:
            return {}
        record = dict(self.state["cluster"])
        return {record.pop("name"): record}

    def endpoint(self) -> Endpoint:
        cluster = self.cluster()
        return Endpoint(cluster.host, cluster.port, self.database, "postgres", self.sandbox.passwords["postgres"])

    def up(self) -> None:
        """The cluster and its database, unless it exists already."""
        if "cluster" in self.state:
            return
        progress(f"creating the {self.role.replace('-', ' ')} database")
        if self.host_name:
            from rehearsal_sandbox.hosts import GLOBAL

            host = self.sandbox.hosts.allocate(self.host_name, GLOBAL, self.role).address
            port = self.sandbox.hosts.postgres_port
        else:
            host, port = "127.0.0.1", free_port()
        cluster = LocalCluster(self.cluster_name, self.sandbox.runtime / "clusters" / self.cluster_name, port, host)
        self.state["cluster"] = {"name": self.cluster_name, **cluster_record(cluster, self.role)}
        self.sandbox.save()
        password = self.sandbox.passwords["postgres"]
        cluster.initdb(password)
        if self.settings:
            cluster.configure(dict(self.settings))
        cluster.start()
        with connect(Endpoint(cluster.host, cluster.port, "postgres", "postgres", password)) as conn:
            conn.execute(f"CREATE DATABASE {self.database}")
        self.sandbox.save()

    def status(self) -> dict[str, dict]:
        if "cluster" not in self.state:
            return {} if self.on_demand else {self.name: ok(False, "no cluster")}  # on demand: not asked for yet
        running, detail = cluster_status(self.cluster())
        return {self.name: ok(running, f"{detail}, data {self.cluster().data_dir}")}

    def down(self) -> None:
        if "cluster" in self.state:
            self.cluster().destroy()
            del self.state["cluster"]


class DaemonComponent(Component):
    """A component that is one long-running process of ours (its pid in the slice, its output in ``<daemon>.log``)."""

    daemon: ClassVar[str]  # the process's name: its log file, and its name for daemon_alive()/stop_daemon()

    @property
    def pid(self) -> int | None:
        return self.state.get("pid")

    def spawn(self, args: list[str], env: dict | None = None) -> int:
        env = dict(env or os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "include"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        suffix = "" if self.region == "us-east-1" else f"-{self.region}"
        with open(self.sandbox.dir / f"{self.daemon}{suffix}.log", "ab") as logfile:
            proc = subprocess.Popen(args, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env=env, cwd=str(REPO_ROOT))
        self.state["pid"] = proc.pid
        self.sandbox.save()
        return proc.pid

    def spawn_sandbox_command(self) -> int:
        """``python -m rehearsal_sandbox run-<daemon>`` for this sandbox and region."""
        return self.spawn([sys.executable, "-m", "rehearsal_sandbox", f"run-{self.daemon}",
                           "--state-dir", str(self.sandbox.dir), "--region", self.region])

    def alive(self) -> bool:
        return pid_alive(self.pid)

    def stop(self) -> None:
        """Stop the process (TERM, then KILL after 10 s); the pid leaves the slice (the caller saves)."""
        stop_pid(self.state.pop("pid", None))

    def daemon_status(self, detail: str = "") -> dict[str, dict]:
        return {self.name: ok(self.alive(), f"{self.daemon} pid {self.pid}" + (f", {detail}" if detail else ""))}


def pid_alive(pid: int | None) -> bool:
    if not pid or not psutil.pid_exists(pid):
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop_pid(pid: int | None) -> None:
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


# ---------------------------------------------------------------------- clusters in a slice
def cluster_record(cluster: LocalCluster, role: str) -> dict:
    return {"data_dir": str(cluster.data_dir), "host": cluster.host, "port": cluster.port, "role": role}


def cluster_of(name: str, record: dict) -> LocalCluster:
    return LocalCluster(name=name, data_dir=Path(record["data_dir"]), port=int(record["port"]),
                        host=record.get("host", "127.0.0.1"))


def cluster_status(cluster: LocalCluster) -> tuple[bool, str]:
    running = cluster.is_running() and port_is_listening(cluster.port, cluster.host)
    return running, f"{cluster.name} at {cluster.address}{'' if running else ' NOT RUNNING'}"


def move_to_lost(runtime: Path, path: Path, label: str) -> str | None:
    """Move ``path`` to ``<runtime>/lost`` in one rename (gone from its path at once; deleted later). Returns where
    it went, or None when it was deleted in place (another filesystem, say)."""
    lost = runtime / "lost" / f"{label}-{time.time_ns()}"
    try:
        lost.parent.mkdir(exist_ok=True)
        path.rename(lost)
        return str(lost)
    except OSError as exc:
        log.warning("could not move %s aside (%s); deleting it now", path, exc)
        shutil.rmtree(path, ignore_errors=True)
        return None
