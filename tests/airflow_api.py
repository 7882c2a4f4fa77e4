"""A small client of the running Airflow's REST API (/api/v2), as a user's script would use it."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request


class AirflowApi:
    def __init__(self, url: str, username: str, password: str) -> None:
        self.url = url.rstrip("/")
        body = json.dumps({"username": username, "password": password}).encode()
        req = urllib.request.Request(f"{self.url}/auth/token", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            self.token = json.loads(resp.read())["access_token"]

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/api/v2{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:500]}") from None
        return json.loads(raw) if raw else {}

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                return self.call("GET", f"/dags/{dag_id}")
            except AssertionError as exc:
                last = exc
                time.sleep(2)
        raise AssertionError(f"DAG {dag_id} not parsed within {timeout}s: {last}")

    def trigger(self, dag_id: str, conf: dict) -> str:
        self.call("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        run = self.call("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}")
            if run["state"] in ("success", "failed"):
                return run
            time.sleep(2)
        raise AssertionError(f"run {run_id} of {dag_id} did not finish within {timeout}s")

    def wait_for_all_runs(self, dag_id: str, timeout: float = 600) -> None:
        """Until no run of the DAG is queued or running: unpausing a scheduled DAG lets the scheduler start its own
        run of the latest interval beside the one a test triggered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = self.call("GET", f"/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]
            if all(r["state"] in ("success", "failed") for r in runs):
                return
            time.sleep(2)
        raise AssertionError(f"runs of {dag_id} still active after {timeout}s")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run (the API pages at 50 by default; a drill has more)."""
        page = self.call("GET", f"/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}/taskInstances?limit=1000")
        assert page["total_entries"] == len(page["task_instances"]), (page["total_entries"], len(page["task_instances"]))
        return page["task_instances"]

    def import_errors(self) -> list[dict]:
        return self.call("GET", "/importErrors")["import_errors"]
