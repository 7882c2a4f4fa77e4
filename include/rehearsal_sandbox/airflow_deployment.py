"""A real local Airflow 3 beside the sandbox: api-server, scheduler, dag-processor and triggerer with a
PostgreSQL metadata database (a cluster from the same binaries the sandbox uses), and one of two executors:

- ``local`` (the default): LocalExecutor, tasks run as children of the scheduler.
- ``edge``: the Edge executor (``apache-airflow-providers-edge3``): the scheduler writes each task to the
  ``edge_job`` table and one edge worker per sandbox region (``worker-us-east-1``, ``worker-us-west-2``, both
  serving the queues ``default`` and ``recovery``) fetches it from the api-server over HTTP, authenticated by a JWT
  signed with the api-server's ``[api_auth] jwt_secret``; no broker, and the workers get no metadata-database
  address. Each worker is recorded in the sandbox state under ``airflow.edge_workers.<region>`` (``pid``,
  ``hostname``, ``queues``) so taking its region down kills it too (``kill_worker``, ``kill_process_tree``).

A task whose worker dies keeps its state ``running`` until its heartbeat is older than
``[scheduler] task_instance_heartbeat_timeout`` (``EDGE_TASK_HEARTBEAT_TIMEOUT`` here, 300 s by default in
Airflow); the scheduler then fails that try, and only a task with retries left (``retries`` >= 1) goes back to
its queue (after its ``retry_delay``) for a live worker to take. A task with ``retries=0`` fails and so does its run.

Airflow is driven through its own CLI in child processes; nothing here imports Airflow.
"""
from __future__ import annotations

import ast
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psutil

from rehearsal.postgres.binaries import REPO_ROOT
from rehearsal.postgres.cluster import LocalCluster
from rehearsal_sandbox.sandbox import Sandbox, progress
from rehearsal_sandbox.state import SandboxState

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
USERNAME = "admin"
DEFAULT_PASSWORD = "rehearsal"
# A second login that may edit DAG runs (role ``user``) but is no approver: who may answer an approval is the
# environment's ``approvers`` (HITL assigned_users), not the role.
GUEST_USERNAME = "oncall-guest"
GUEST_ROLE = "user"
RESTORE_POOL_SLOTS = 2

EXECUTORS = {"local": "LocalExecutor", "edge": "airflow.providers.edge3.executors.EdgeExecutor"}
EDGE_REGIONS = ("us-east-1", "us-west-2")  # one edge worker per sandbox region
EDGE_QUEUES = ("default", "recovery")  # [operators] default_queue, and the runbooks' recovery queue
EDGE_WORKER_CONCURRENCY = 8
EDGE_HEARTBEAT_INTERVAL = 5  # s; the executor marks a worker silent for 5 heartbeats "unknown"
EDGE_JOB_POLL_INTERVAL = 1  # s an idle worker waits between asking for a job
EDGE_TASK_HEARTBEAT_TIMEOUT = 30  # s without a task heartbeat before the scheduler fails that try (Airflow: 300)
# A worker signs each call with a token valid for [api_auth] jwt_leeway seconds, and the api-server accepts it that
# much later again: Airflow's 10 s (20 s in all) is less than the api-server stalls on two loaded cores, and a
# worker whose call is refused (HTTP 403 "signature has expired") exits. 60 s (120 s in all) rides that out.
EDGE_JWT_LEEWAY = 60
LIVE_WORKER_STATES = ("starting", "idle", "running")


def worker_hostname(region: str) -> str:
    return f"worker-{region}"


class LocalAirflow:
    def __init__(self, sandbox: Sandbox, port: int | None = None, executor: str | None = None) -> None:
        self.sandbox = sandbox
        self.home = sandbox.dir / "airflow-local"
        self.state_file = self.home / "deployment.json"
        self.state: dict = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.port = port or self.state.get("port") or int(os.environ.get("AIRFLOW_PORT", "8080"))
        # ``make airflow EXECUTOR=edge`` passes REHEARSAL_AIRFLOW_EXECUTOR; a running deployment keeps its own.
        self.executor = executor or os.environ.get("REHEARSAL_AIRFLOW_EXECUTOR") or self.state.get("executor") or "local"
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown Airflow executor {self.executor!r} (executors: {', '.join(EXECUTORS)})")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def password(self) -> str:
        return self.state.get("password", DEFAULT_PASSWORD)

    @property
    def guest_password(self) -> str:
        """The password of ``GUEST_USERNAME`` (a user who may edit DAG runs but approves nothing)."""
        return self.state["guest_password"]

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(self.state, indent=2))
        self.state_file.chmod(0o600)

    # ------------------------------------------------------------------ environment
    def metadata_cluster(self) -> LocalCluster:
        """The sandbox's ``airflow_metadata`` component, created on first use."""
        self.sandbox.airflow_metadata.up()
        return self.sandbox.airflow_metadata.cluster()

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        meta = self.metadata_cluster()
        pw = self.sandbox.passwords["postgres"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(self.sandbox.env_vars())
        venv_bin = str(Path(sys.executable).parent)
        env.update({
            "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "include"), str(REPO_ROOT / "plugins")]),
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__EXECUTOR": EXECUTORS[self.executor],
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres:{pw}@127.0.0.1:{meta.port}/airflow",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin,{GUEST_USERNAME}:{GUEST_ROLE}",
            # Never every login an admin: then anyone may answer any approval (HITL assigned_users not checked).
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.state["jwt_secret"],
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
        })
        if self.executor == "edge":
            env.update({
                "AIRFLOW__EDGE__API_ENABLED": "True",  # the api-server serves /edge_worker/v1 (off by default)
                "AIRFLOW__EDGE__API_URL": f"{self.url}/edge_worker/v1/rpcapi",
                "AIRFLOW__EDGE__HEARTBEAT_INTERVAL": str(EDGE_HEARTBEAT_INTERVAL),
                "AIRFLOW__EDGE__JOB_POLL_INTERVAL": str(EDGE_JOB_POLL_INTERVAL),
                "AIRFLOW__EDGE__WORKER_CONCURRENCY": str(EDGE_WORKER_CONCURRENCY),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(EDGE_TASK_HEARTBEAT_TIMEOUT),
                "AIRFLOW__API_AUTH__JWT_LEEWAY": str(EDGE_JWT_LEEWAY),
            })
        env.update(extra or {})
        return env

    def worker_environment(self) -> dict[str, str]:
        """An edge worker's environment: the api-server's (the shared JWT secret, the DAGs, the sandbox's
        connections) without the metadata database; a worker reaches Airflow over HTTP only."""
        env = self.environment(self.state.get("extra_env"))
        env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        return env

    # ------------------------------------------------------------------ lifecycle
    def up(self, extra_env: dict[str, str] | None = None, timeout: float = 180, start_workers: bool = True) -> None:
        """Start Airflow; with the Edge executor also one worker per region unless ``start_workers`` is False (then
        ``start_worker(region)`` starts each when wanted)."""
        if self.is_up() and self.state.get("executor", "local") == self.executor:
            progress(f"Airflow already serving {self.url} ({self.executor} executor)")
            return
        self.down()
        self.home.mkdir(parents=True, exist_ok=True)
        # A restart keeps the JWT secret: tokens handed out before it (REST clients, workers) stay valid.
        self.state = {"port": self.port, "executor": self.executor, "pids": {}, "workers": {},
                      "jwt_secret": self.state.get("jwt_secret") or secrets.token_urlsafe(24),
                      "password": os.environ.get("AIRFLOW_ADMIN_PASSWORD", DEFAULT_PASSWORD), "extra_env": extra_env or {},
                      "guest_password": self.state.get("guest_password") or secrets.token_urlsafe(12)}
        (self.home / "passwords.json").write_text(json.dumps({USERNAME: self.state["password"],
                                                              GUEST_USERNAME: self.state["guest_password"]}))
        self.save()
        env = self.environment(extra_env)
        progress("migrating the Airflow metadata database")
        self._airflow(["db", "migrate"], env)
        self._airflow(["pools", "set", "restores", str(RESTORE_POOL_SLOTS), "Concurrent restores into scratch clusters"], env)
        for component in COMPONENTS:
            args = ["api-server", "--port", str(self.port), "--host", "127.0.0.1"] if component == "api-server" else [component]
            log = open(self.home / f"{component}.log", "ab")
            proc = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(REPO_ROOT))
            self.state["pids"][component] = proc.pid
            self.save()
        progress(f"waiting for the api-server on {self.url}")
        deadline = time.monotonic() + timeout
        while not self._healthy():
            dead = [c for c, pid in self.state["pids"].items() if not _alive(pid)]
            if dead:
                raise RuntimeError(f"Airflow {', '.join(dead)} exited; see {self.home}/<component>.log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"Airflow api-server not healthy on {self.url} after {timeout:.0f}s")
            time.sleep(1)
        if self.executor == "edge" and start_workers:
            for region in EDGE_REGIONS:
                self.start_worker(region, timeout=max(30.0, deadline - time.monotonic()))
        progress(f"Airflow is up: {self.url} ({self.executor} executor; login {USERNAME} / {self.state['password']})")

    # ------------------------------------------------------------------ edge workers
    def start_worker(self, region: str, timeout: float = 60) -> dict:
        """Start the edge worker of ``region`` and wait until it registered with the api-server. A worker killed
        moments ago keeps its name until the executor marks it unknown (no heartbeat for 5 intervals) and the
        api-server refuses a second worker of that name (HTTP 409), so this first waits for that."""
        if self.executor != "edge":
            raise RuntimeError(f"Airflow at {self.url} runs the {self.executor} executor: it has no edge workers")
        if region not in EDGE_REGIONS:
            raise ValueError(f"no edge worker for region {region!r} (regions: {', '.join(EDGE_REGIONS)})")
        hostname = worker_hostname(region)
        old = self.state.get("workers", {}).get(region)
        if old and _alive(old["pid"]):
            raise RuntimeError(f"edge worker {hostname} of region {region} is already running (pid {old['pid']})")
        deadline = time.monotonic() + timeout
        while (held := self.registered_workers().get(hostname, {}).get("state")) in LIVE_WORKER_STATES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"edge worker {hostname} of region {region}: the api-server still holds the name "
                                   f"as {held!r} after {timeout:.0f}s (is another worker of that name running?)")
            time.sleep(1)
        log_path = self.home / f"edge-worker-{region}.log"
        args = ["edge", "worker", "--queues", ",".join(EDGE_QUEUES), "--edge-hostname", hostname,
                "--concurrency", str(EDGE_WORKER_CONCURRENCY), "--pid", str(self.home / f"edge-worker-{region}.pid")]
        started = datetime.now(UTC)
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "airflow", *args], env=self.worker_environment(), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=str(REPO_ROOT))
        record = {"pid": proc.pid, "hostname": hostname, "queues": list(EDGE_QUEUES)}
        self.state.setdefault("workers", {})[region] = record
        self.save()
        self._record_worker(region, record)
        while True:
            seen = self.registered_workers().get(hostname, {})
            if seen.get("state") in ("idle", "running") and seen["last_update"] and seen["last_update"] >= started:
                break
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-800:]
                raise RuntimeError(f"edge worker {hostname} of region {region} exited with {proc.returncode} before "
                                   f"registering with {self.url} (see {log_path}): {tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"edge worker {hostname} of region {region} not registered with {self.url} after "
                                   f"{timeout:.0f}s (api-server says {seen.get('state', 'nothing')}; see {log_path})")
            time.sleep(0.5)
        progress(f"edge worker {hostname} (region {region}, pid {proc.pid}) serving queues {','.join(EDGE_QUEUES)}")
        return record

    def kill_worker(self, region: str) -> dict:
        """SIGKILL the edge worker of ``region`` and every process under it (its task supervisors and tasks,
        which run in process groups of their own), the way a region dies: nothing is told, nothing drains."""
        record = self.state.get("workers", {}).get(region) or _sandbox_workers(self.sandbox).get(region)
        if not record:
            raise RuntimeError(f"no edge worker recorded for region {region!r} in {self.state_file}")
        killed = kill_process_tree(record["pid"])
        return {"region": region, "hostname": record["hostname"], "pid": record["pid"], "killed": killed,
                "at": datetime.now(UTC).isoformat()}

    def registered_workers(self) -> dict[str, dict]:
        """The edge workers the api-server knows (its ``edge_worker`` table): hostname -> ``state`` (starting,
        idle, running, unknown, offline, ...), ``queues``, ``last_update`` (its last heartbeat, a datetime)."""
        from rehearsal.postgres.connection import Endpoint, connect

        meta = self.sandbox.airflow_metadata.cluster()
        endpoint = Endpoint("127.0.0.1", meta.port, "airflow", "postgres", self.sandbox.passwords["postgres"])
        with connect(endpoint) as conn:
            if conn.execute("SELECT to_regclass('edge_worker')").fetchone()[0] is None:
                return {}  # the executor creates its tables when the scheduler starts it
            rows = conn.execute("SELECT worker_name, state, queues, last_update FROM edge_worker").fetchall()
        # queues are stored as a Python list literal (the provider's own EdgeWorkerModel.queues reads them so)
        return {name: {"state": state, "queues": ast.literal_eval(queues) if queues else None, "last_update": last}
                for name, state, queues, last in rows}

    def _record_worker(self, region: str, record: dict | None) -> None:
        """The sandbox state's ``airflow.edge_workers.<region>``, read back by ``Sandbox.region_down``."""
        state = SandboxState(self.sandbox.state_file)  # its own copy: the caller's Sandbox may hold unsaved changes
        if not state.exists:
            return
        workers = state.data.setdefault("airflow", {}).setdefault("edge_workers", {})
        if record is None:
            workers.pop(region, None)
        else:
            workers[region] = dict(record)
        state.save()

    def _airflow(self, args: list[str], env: dict[str, str]) -> None:
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed: {result.stderr[-1500:]}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=5) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return body.get("metadatabase", {}).get("status") == "healthy" and \
            body.get("scheduler", {}).get("status") == "healthy"

    def is_up(self) -> bool:
        return bool(self.state.get("pids")) and all(_alive(p) for p in self.state["pids"].values()) and self._healthy()

    def status(self) -> dict[str, dict]:
        out = {c: {"ok": _alive(pid), "detail": f"pid {pid}"} for c, pid in self.state.get("pids", {}).items()}
        healthy = self._healthy()
        out["health"] = {"ok": healthy, "detail": f"{self.url}/api/v2/monitor/health ({self.state.get('executor', 'local')} executor)"}
        workers = self.state.get("workers", {})
        try:
            registered = self.registered_workers() if workers else {}
        except Exception as exc:  # noqa: BLE001 - the status names what it could not read
            registered = {w["hostname"]: {"state": f"unreadable ({type(exc).__name__}: {exc})"} for w in workers.values()}
        for region, record in workers.items():
            seen = registered.get(record["hostname"], {})
            alive = _alive(record["pid"])
            out[f"edge-worker {region}"] = {
                "ok": alive and seen.get("state") in LIVE_WORKER_STATES,
                "detail": f"{record['hostname']} pid {record['pid']} ({'alive' if alive else 'dead'}), queues "
                          f"{','.join(record['queues'])}, api-server says {seen.get('state', 'not registered')}"
                          + (f" (last heartbeat {seen['last_update']:%H:%M:%S})" if seen.get("last_update") else "")}
        return out

    def down(self) -> None:
        for region, record in list(self.state.get("workers", {}).items()):
            _stop_tree(record["pid"])
            self.state["workers"].pop(region, None)
            self._record_worker(region, None)
        for component, pid in list(self.state.get("pids", {}).items()):
            try:
                proc = psutil.Process(pid)
                children = proc.children(recursive=True)
                proc.terminate()
                gone, alive = psutil.wait_procs([proc, *children], timeout=15)
                for p in alive:
                    p.kill()
            except psutil.Error:
                pass
            self.state["pids"].pop(component, None)
        if self.state:
            self.save()


def kill_process_tree(pid: int) -> list[int]:
    """SIGKILL ``pid`` and every process under it; returns the pids killed. An edge worker's task processes
    call ``setpgrp`` (their own process group), so killing the worker's pid or its group leaves them running
    (and finishing the task); only the whole tree dies the way a region does."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    killed = []
    for proc in procs:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)
    return killed


def _stop_tree(pid: int, timeout: float = 15) -> None:
    try:
        proc = psutil.Process(pid)
        children = proc.children(recursive=True)
        proc.terminate()
        _gone, alive = psutil.wait_procs([proc, *children], timeout=timeout)
        for p in alive:
            p.kill()
    except psutil.Error:
        pass


def _sandbox_workers(sandbox: Sandbox) -> dict[str, dict]:
    return SandboxState(sandbox.state_file).data.get("airflow", {}).get("edge_workers", {})


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
