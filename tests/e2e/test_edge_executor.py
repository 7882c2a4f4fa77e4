"""The Edge executor's deployment without Airflow running: the workers' environment, refusals by name, and a
worker killed with every process under it. The run whose worker dies with its region is in
tests/e2e/test_region_outage.py (the single-region drill on a real Airflow with one edge worker per region)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import datetime
from types import SimpleNamespace

import psutil
import pytest

from rehearsal_sandbox.airflow_deployment import (
    EDGE_TASK_HEARTBEAT_TIMEOUT,
    LocalAirflow,
    kill_process_tree,
)
from rehearsal_sandbox.platform import Sandbox

# The run a worker is killed under: the DAG, its conf, and the task during which the worker running it is killed
# (a task that runs on the worker for a while, not deferred). The task must have retries >= 1: the scheduler fails
# a try whose heartbeat stopped, and only a task with a retry left goes back to the queue for the other worker.
# To be switched to Scenario C once it exists, e.g.
# RUN = ("dr_scenario_c_region_outage", {"mode": "drill", "failed_region": "us-west-2", "approve": "auto"}, "<task>")
RUN = ("dr_backup_verify", {}, "restore_scratch_copy")


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


# ---------------------------------------------------------------------------------------------- without Airflow
def test_the_edge_deployment_gives_workers_the_api_server_and_the_shared_secret_but_no_metadata_database(
        tmp_path, monkeypatch):
    airflow = LocalAirflow(Sandbox(tmp_path), port=18999, executor="edge")
    airflow.state = {"jwt_secret": "s3cret", "extra_env": {"REHEARSAL_RTO_OVERRIDE": "control_plane_api=3s"}}
    monkeypatch.setattr(airflow, "metadata_cluster", lambda: SimpleNamespace(port=5999))  # no cluster needed here
    monkeypatch.setattr(airflow.sandbox, "env_vars", dict)
    monkeypatch.setattr(Sandbox, "passwords", property(lambda self: {"postgres": "pw"}))
    server, worker = airflow.environment(), airflow.worker_environment()
    assert server["AIRFLOW__CORE__EXECUTOR"] == "airflow.providers.edge3.executors.EdgeExecutor"
    assert server["AIRFLOW__EDGE__API_ENABLED"] == "True"
    assert server["AIRFLOW__EDGE__API_URL"] == "http://127.0.0.1:18999/edge_worker/v1/rpcapi"
    assert server["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"] == str(EDGE_TASK_HEARTBEAT_TIMEOUT)
    assert worker["AIRFLOW__API_AUTH__JWT_SECRET"] == server["AIRFLOW__API_AUTH__JWT_SECRET"] == "s3cret"
    assert worker["AIRFLOW__API_AUTH__JWT_LEEWAY"] == server["AIRFLOW__API_AUTH__JWT_LEEWAY"] == "60"
    assert worker["REHEARSAL_RTO_OVERRIDE"] == "control_plane_api=3s"
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in server and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in worker


def test_an_unknown_executor_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"unknown Airflow executor 'celery' \(executors: local, edge\)"):
        LocalAirflow(Sandbox(tmp_path), executor="celery")


def test_a_local_deployment_has_no_edge_worker_to_start(tmp_path):
    airflow = LocalAirflow(Sandbox(tmp_path), port=18998, executor="local")
    with pytest.raises(RuntimeError, match="runs the local executor: it has no edge workers"):
        airflow.start_worker("us-east-1")


def test_a_region_without_an_edge_worker_is_named(tmp_path):
    airflow = LocalAirflow(Sandbox(tmp_path), port=18997, executor="edge")
    with pytest.raises(ValueError, match=r"no edge worker for region 'eu-west-1' \(regions: us-east-1, us-west-2\)"):
        airflow.start_worker("eu-west-1")
    with pytest.raises(RuntimeError, match=rf"no edge worker recorded for region 'us-west-2' in {tmp_path}/airflow-local/"
                                           r"deployment.json"):
        airflow.kill_worker("us-west-2")


def test_killing_a_worker_kills_the_tasks_it_runs_in_their_own_process_groups():
    """An edge worker's task processes call setpgrp; killing the worker's pid (or its group) alone would leave the
    task running and finishing on a worker that is supposed to be dead."""
    task = "import os, time; os.setpgrp(); print(os.getpid(), flush=True); time.sleep(60)"
    code = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {task!r}]); time.sleep(60)"
    worker = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    task_pid = int(worker.stdout.readline())
    try:
        assert os.getpgid(task_pid) != os.getpgid(worker.pid)  # the task left the worker's process group
        assert sorted(kill_process_tree(worker.pid)) == sorted([worker.pid, task_pid])
        assert not psutil.pid_exists(worker.pid) or psutil.Process(worker.pid).status() == psutil.STATUS_ZOMBIE
        assert not psutil.pid_exists(task_pid) or psutil.Process(task_pid).status() == psutil.STATUS_ZOMBIE
        assert kill_process_tree(worker.pid) == []  # already gone: nothing to kill, no error
    finally:
        for pid in (task_pid, worker.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
