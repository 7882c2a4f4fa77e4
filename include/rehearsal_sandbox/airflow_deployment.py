"""A real local Airflow 3 beside the sandbox: api-server, scheduler, dag-processor and triggerer with
LocalExecutor and a PostgreSQL metadata database (a cluster from the same binaries the sandbox uses).

Airflow is driven through its own CLI in child processes; nothing here imports Airflow.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from rehearsal.postgres.binaries import REPO_ROOT
from rehearsal.postgres.cluster import LocalCluster
from rehearsal_sandbox.sandbox import Sandbox, progress

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
USERNAME = "admin"
DEFAULT_PASSWORD = "rehearsal"
RESTORE_POOL_SLOTS = 2


class LocalAirflow:
    def __init__(self, sandbox: Sandbox, port: int | None = None) -> None:
        self.sandbox = sandbox
        self.home = sandbox.dir / "airflow-local"
        self.state_file = self.home / "deployment.json"
        self.state: dict = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}
        self.port = port or self.state.get("port") or int(os.environ.get("AIRFLOW_PORT", "8080"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def password(self) -> str:
        return self.state.get("password", DEFAULT_PASSWORD)

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
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres:{pw}@127.0.0.1:{meta.port}/airflow",
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": self.state["jwt_secret"],
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
        })
        env.update(extra or {})
        return env

    # ------------------------------------------------------------------ lifecycle
    def up(self, extra_env: dict[str, str] | None = None, timeout: float = 180) -> None:
        if self.is_up():
            progress(f"Airflow already serving {self.url}")
            return
        self.down()
        self.home.mkdir(parents=True, exist_ok=True)
        self.state = {"port": self.port, "pids": {}, "jwt_secret": secrets.token_urlsafe(24),
                      "password": os.environ.get("AIRFLOW_ADMIN_PASSWORD", DEFAULT_PASSWORD), "extra_env": extra_env or {}}
        (self.home / "passwords.json").write_text(json.dumps({USERNAME: self.state["password"]}))
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
        while time.monotonic() < deadline:
            if self._healthy():
                progress(f"Airflow is up: {self.url} (login {USERNAME} / {self.state['password']})")
                return
            dead = [c for c, pid in self.state["pids"].items() if not _alive(pid)]
            if dead:
                raise RuntimeError(f"Airflow {', '.join(dead)} exited; see {self.home}/<component>.log")
            time.sleep(1)
        raise TimeoutError(f"Airflow api-server not healthy on {self.url} after {timeout:.0f}s")

    def _airflow(self, args: list[str], env: dict[str, str]) -> None:
        result = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed: {result.stderr[-1500:]}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/api/v2/monitor/health", timeout=2) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError, urllib.error.URLError):
            return False
        return body.get("metadatabase", {}).get("status") == "healthy" and \
            body.get("scheduler", {}).get("status") == "healthy"

    def is_up(self) -> bool:
        return bool(self.state.get("pids")) and all(_alive(p) for p in self.state["pids"].values()) and self._healthy()

    def status(self) -> dict[str, dict]:
        out = {c: {"ok": _alive(pid), "detail": f"pid {pid}"} for c, pid in self.state.get("pids", {}).items()}
        out["health"] = {"ok": self._healthy(), "detail": f"{self.url}/api/v2/monitor/health"}
        return out

    def down(self) -> None:
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


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
