"""The runbooks survive the region: the real local Airflow on the Edge executor (apache-airflow-providers-edge3),
one edge worker per sandbox region, both serving the queues ``default`` and ``recovery``. A run whose worker is
killed with its region mid-task finishes on the other worker.

The session's Airflow (``deployment`` in tests/e2e/conftest.py) is used as it is when it already runs the Edge
executor (``REHEARSAL_AIRFLOW_EXECUTOR=edge``); otherwise the ``edge`` fixture restarts that same deployment in place
on the Edge executor (same port, JWT secret, password and settings), and the modules after this one run on it too:
one Airflow per session, never two at once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
from datetime import UTC, datetime
from types import SimpleNamespace

import psutil
import pytest

from rehearsal_sandbox.airflow_deployment import (
    EDGE_QUEUES,
    EDGE_REGIONS,
    EDGE_TASK_HEARTBEAT_TIMEOUT,
    LocalAirflow,
    kill_process_tree,
    worker_hostname,
)
from rehearsal_sandbox.platform import Sandbox
from rehearsal_sandbox.state import SandboxState

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


# ---------------------------------------------------------------------------------------------- on the real Airflow
@pytest.fixture(scope="module")
def edge(deployment, sandbox_session):
    if deployment.executor != "edge":
        started = time.monotonic()
        deployment.executor = "edge"
        deployment.up(extra_env=deployment.state.get("extra_env"))
        print(f"\nthe session's Airflow restarted on the Edge executor in {time.monotonic() - started:.1f}s")
    yield deployment
    for region in EDGE_REGIONS:  # a worker a test killed comes back for the modules after this one
        record = deployment.state["workers"].get(region)
        if record is None or not psutil.pid_exists(record["pid"]):
            deployment.start_worker(region)


@pytest.fixture(scope="module")
def edge_api(edge, api):
    return api


@pytest.mark.sandbox
@pytest.mark.e2e
def test_one_worker_per_region_serves_both_queues_and_is_recorded_in_the_sandbox_state(edge, sandbox_session):
    registered = edge.registered_workers()
    recorded = SandboxState(Sandbox(sandbox_session.dir).state_file).data["airflow"]["edge_workers"]
    for region in EDGE_REGIONS:
        name = worker_hostname(region)
        assert registered[name]["state"] in ("idle", "running"), registered
        assert registered[name]["queues"] == list(EDGE_QUEUES)
        assert recorded[region] == {"pid": edge.state["workers"][region]["pid"], "hostname": name,
                                    "queues": ["default", "recovery"]}
        assert psutil.Process(recorded[region]["pid"]).is_running()
    status = edge.status()
    assert status["edge-worker us-east-1"]["ok"] and status["edge-worker us-west-2"]["ok"], status
    assert "worker-us-west-2 pid" in status["edge-worker us-west-2"]["detail"]
    assert "queues default,recovery, api-server says " in status["edge-worker us-west-2"]["detail"]


@pytest.mark.sandbox
@pytest.mark.e2e
def test_a_run_whose_worker_dies_with_its_region_completes_on_the_other_worker(edge, edge_api, sandbox_session):
    api = edge_api
    dag_id, conf, task_id = RUN
    hostnames = {worker_hostname(r): r for r in EDGE_REGIONS}
    run_id = api.trigger(dag_id, conf)
    deadline = time.monotonic() + 600
    victim = None
    while victim is None:
        assert time.monotonic() < deadline, f"{task_id} of {dag_id} run {run_id} never ran on an edge worker"
        tis = {ti["task_id"]: ti for ti in api.task_instances(dag_id, run_id)}
        ti = tis.get(task_id)
        assert ti is None or ti["state"] not in ("success", "failed", "upstream_failed", "skipped"), \
            f"{task_id} finished ({ti['state']}) before its worker could be killed"
        if ti and ti["state"] == "running" and ti["hostname"] in hostnames:
            victim = hostnames[ti["hostname"]]
        else:
            time.sleep(0.2)
    killed = edge.kill_worker(victim)
    survivor = next(r for r in EDGE_REGIONS if r != victim)
    assert killed["hostname"] == worker_hostname(victim) and killed["pid"] in killed["killed"]
    assert len(killed["killed"]) >= 2, killed  # the worker and the task processes under it
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in killed["killed"])

    run = api.wait_for_run(dag_id, run_id, timeout=900)
    assert run["state"] == "success", [(t["task_id"], t["state"], t["hostname"]) for t in api.task_instances(dag_id, run_id)]

    quoted = urllib.parse.quote(run_id, safe="")
    tries = api.call("GET", f"/dags/{dag_id}/dagRuns/{quoted}/taskInstances/{task_id}/tries")["task_instances"]
    first, last = tries[0], tries[-1]
    assert (first["try_number"], first["hostname"], first["state"]) == (1, worker_hostname(victim), "failed")
    assert (last["try_number"], last["hostname"], last["state"]) == (2, worker_hostname(survivor), "success")
    kill_at = parse(killed["at"])
    after = [t for t in api.task_instances(dag_id, run_id) if t["start_date"] and parse(t["start_date"]) > kill_at]
    assert after and {t["hostname"] for t in after} == {worker_hostname(survivor)}
    detected = (parse(last["start_date"]) - kill_at).total_seconds()
    print(f"\nkilled {worker_hostname(victim)} during {task_id} (pids {killed['killed']}); try 2 started on "
          f"{worker_hostname(survivor)} {detected:.1f}s later (task heartbeat timeout {EDGE_TASK_HEARTBEAT_TIMEOUT}s "
          f"+ retry delay); run {(parse(run['end_date']) - parse(run['start_date'])).total_seconds():.1f}s")
    assert detected >= EDGE_TASK_HEARTBEAT_TIMEOUT  # nothing noticed the death before the heartbeat timed out

    # The api-server's view: the silent worker is unknown (no heartbeat for 5 intervals), the other serves on.
    deadline = time.monotonic() + 60
    while edge.registered_workers()[worker_hostname(victim)]["state"] != "unknown":
        assert time.monotonic() < deadline, edge.registered_workers()
        time.sleep(1)
    assert edge.registered_workers()[worker_hostname(survivor)]["state"] in ("idle", "running")
    status = edge.status()
    assert not status[f"edge-worker {victim}"]["ok"] and "(dead)" in status[f"edge-worker {victim}"]["detail"]
    assert "api-server says unknown" in status[f"edge-worker {victim}"]["detail"]
    assert datetime.now(UTC) > kill_at
