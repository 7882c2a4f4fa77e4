"""The postgres-failover runbook as the on-call engineer runs it: in an incident with nothing but connections,
and on a real Airflow where a person approves or rejects through the REST API."""
from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from rehearsal.discovery import resolve
from rehearsal.drills.primary_loss import run_key
from rehearsal.heartbeat import read_acks
from rehearsal.postgres.connection import accepts_writes
from rehearsal.scratch import destroy_run_area
from rehearsal_sandbox.airflow_deployment import GUEST_USERNAME, USERNAME
from rehearsal_sandbox.platform import Sandbox
from tests.airflow_api import AirflowApi
from tests.e2e.test_drill_primary_loss import report_of, run_dag

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
RUNBOOK = "dr_runbook_postgres_failover"
GROUP = "postgres_failover"
APPROVAL_TASK = f"{GROUP}.approve_recovery"


def environment() -> dict:
    return json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])


def test_an_incident_with_nothing_but_connections_promotes_the_standby_and_clients_follow(platform, monkeypatch):
    """The primary dies; the runbook has no sandbox inventory, no provisioner and no heartbeat log to lean on."""
    env = environment()
    for key in ("sandbox_state", "heartbeat_log", "provisioner"):
        env.pop(key)
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", json.dumps({**env, "name": "incident-test",
                                                                         "drill_environment": False}))
    standby = platform.standby.address
    killed_at = time.time()
    platform.primary.kill()  # the test is the disaster: SIGKILL, nothing else

    dag_run = run_dag(RUNBOOK, {"mode": "incident", "approve": "auto"})
    report = report_of(dag_run)
    steps = {s["name"].removeprefix(f"{GROUP}."): s for s in report["steps"]}
    # Service is back, but nothing could build the new primary a standby: degraded, not passed, and it says so.
    assert str(dag_run.state) == "failed", report.get("failure")
    assert (report["status"], report["mode"], report["recovery_path"]) == ("degraded", "incident", "promote_standby")
    assert report["degraded"] == [{"step": f"{GROUP}.rebuild_redundancy", "item": "standby not rebuilt",
                                   "what_to_do": f"the new primary {standby} has no standby (no provisioner (the environment "
                                                 "names none)): build one by hand (pg_basebackup -R from it) and list it "
                                                 "in the replica record"}]
    assert steps["assess_cluster"]["detail"].startswith(f"primary {platform.primary.address}: unreachable")
    assert steps["approve_recovery"]["detail"] == "approved automatically (approve=auto)"
    assert steps["fence_old_primary"]["detail"].startswith(f"{platform.primary.address} unreachable")
    assert steps["reenable_wal_archiving"]["detail"].startswith(f"archiving from {standby} verified: segment ")
    assert steps["rebuild_redundancy"]["detail"].startswith("redundancy not rebuilt: no provisioner")
    assert report["evidence"]["recovered_address"] == standby
    # Clients followed service discovery: the record points at the standby and the heartbeat commits there.
    assert resolve(platform.aws("route53"), platform.discovery()) == (platform.standby.host, platform.standby.port)
    log = Path(platform.dir) / "heartbeat.log"
    assert any(a.endpoint == standby for a in read_acks(log, since=killed_at))

    # The sandbox learns what happened the way an operator's tooling would: from what runs.
    sb = Sandbox(platform.dir)
    sb.heal()
    Sandbox(platform.dir).rebuild_standby_and_back_up(dump=False)


def pending_approval(api, run_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = api.call("GET", "/dags/~/dagRuns/~/hitlDetails?response_received=false")
        for item in pending.get("hitl_details", []):
            ti = item.get("task_instance") or {}
            if ti.get("dag_run_id") == run_id and ti.get("task_id") == APPROVAL_TASK:
                return item
        time.sleep(1)
    raise AssertionError(f"no pending approval for run {run_id} within {timeout}s")


def answer(api, run_id: str, option: str) -> dict:
    """As a person would: a few seconds after the request appeared. (Airflow 3.3.2 races an answer given within a
    second of the task parking: the parked worker's exit is then taken as a failure and the task is retried,
    asking again. Seen with LocalExecutor; people do not answer that fast.)"""
    time.sleep(3)
    quoted = urllib.request.quote(run_id, safe="")
    return api.call("PATCH", f"/dags/{RUNBOOK}/dagRuns/{quoted}/taskInstances/{APPROVAL_TASK}/-1/hitlDetails",
                    {"chosen_options": [option], "params_input": {}})


def runbook_report(run_id: str) -> dict:
    return json.loads((Path(environment()["reports_dir"]) / RUNBOOK / f"{run_id}.json").read_text())


def test_a_runbook_triggered_without_mode_is_refused_naming_the_param(api):
    with pytest.raises(AssertionError, match="HTTP 400") as err:
        api.call("POST", f"/dags/{RUNBOOK}/dagRuns", {"logical_date": None, "conf": {"approve": "auto"}})
    assert "mode" in str(err.value)


def test_an_incident_waits_for_a_person_and_a_rejection_changes_nothing(api, deployment, sandbox_session):
    before = Sandbox(sandbox_session.dir)
    run_id = api.trigger(RUNBOOK, {"mode": "incident", "approve": "wait"})
    request = pending_approval(api, run_id)
    assert request["subject"].startswith("Postgres failover: ") and "Chosen path" in request["body"]
    assert [u["id"] for u in request["assigned_users"]] == environment()["approvers"] == [USERNAME]
    # A login that may edit DAG runs but is not an approver is refused, and the approval still waits.
    guest = AirflowApi(deployment.url, GUEST_USERNAME, deployment.guest_password)
    with pytest.raises(AssertionError, match="HTTP 403") as refused:
        answer(guest, run_id, "Approve")
    assert f"User={GUEST_USERNAME} (id={GUEST_USERNAME}) is not a respondent for the task" in str(refused.value)
    assert pending_approval(api, run_id, timeout=5)["response_received"] is False
    answer(api, run_id, "Reject")
    run = api.wait_for_run(RUNBOOK, run_id)
    report = runbook_report(run_id)
    assert run["state"] == "failed"  # the run ends; its report says why
    assert report["status"] == "aborted"
    assert report["failure"].startswith(f"rejected by {USERNAME}: ") and report["failure"].endswith("nothing was changed")
    statuses = {s["name"].removeprefix(f"{GROUP}."): s["status"] for s in report["steps"]}
    assert statuses["fence_old_primary"] == "skipped" and statuses["recover_database"] == "skipped"
    after = Sandbox(sandbox_session.dir)
    assert after.primary.address == before.primary.address
    assert resolve(after.aws("route53"), after.discovery()) == (before.primary.host, before.primary.port)
    assert accepts_writes(after.endpoint(after.primary, "admin").with_(dbname="postgres"))[0]  # not fenced


def test_an_incident_approved_through_the_api_completes(api, sandbox_session):
    run_id = api.trigger(RUNBOOK, {"mode": "incident", "approve": "wait", "target": "scratch"})
    try:
        pending_approval(api, run_id)
        answer(api, run_id, "Approve")
        run = api.wait_for_run(RUNBOOK, run_id)
        report = runbook_report(run_id)
        assert run["state"] == "success", report.get("failure")
        assert report["status"] == "passed" and report["recovery_path"] == "pitr"
        assert report["runbook"]["approved_by"] == USERNAME  # the environment's approver, as Airflow saw them
    finally:  # a scratch copy is left for inspection by design (on a host the provisioner gave it); the test removes it
        from rehearsal.environment import Environment
        from rehearsal_sandbox.provisioner import SandboxProvisioner

        SandboxProvisioner(Environment.from_mapping(environment())).release_run(run_key(RUNBOOK, run_id))
        destroy_run_area(Path(environment()["scratch_root"]) / run_key(RUNBOOK, run_id))


def test_a_primary_that_still_answers_is_fenced_before_the_standby_is_promoted(platform):
    """A planned failover (or a degraded primary): fenced first (read-only, sessions ended, checked), then the
    standby promoted, clients switched, and redundancy rebuilt by the sandbox's provisioner."""
    old, standby = platform.primary.address, platform.standby.address
    dag_run = run_dag(RUNBOOK, {"mode": "incident", "approve": "auto", "path": "promote_standby"})
    report = report_of(dag_run)
    steps = {s["name"].removeprefix(f"{GROUP}."): s for s in report["steps"]}
    assert str(dag_run.state) == "success", report.get("failure")
    assert steps["fence_old_primary"]["detail"].startswith(f"{old} fenced: read-only for new transactions, ")
    assert report["recovery_path"] == "promote_standby" and report["evidence"]["recovered_address"] == standby
    assert "new streaming standby" in steps["rebuild_redundancy"]["detail"]
    now = Sandbox(platform.dir)
    assert now.primary.address == standby and now.standby is not None
    assert resolve(now.aws("route53"), now.discovery()) == (now.primary.host, now.primary.port)


def postgres_listeners(runtime: str) -> list[str]:
    """``host:port`` of every listening socket of the platform's postgres servers whose data lives under ``runtime``
    (not the local Airflow's own metadata database, which is Airflow's, on the worker's side)."""
    import psutil

    pids = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if proc.info["name"] == "postgres" and any(runtime in part for part in cmdline) \
                    and not any("airflow-meta" in part for part in cmdline):
                pids.add(proc.pid)
        except psutil.Error:
            continue
    return sorted({f"{c.laddr.ip}:{c.laddr.port}" for c in psutil.net_connections(kind="tcp")
                   if c.status == psutil.CONN_LISTEN and c.pid in pids})


def test_a_pitr_into_production_lands_on_a_provisioned_host_and_clients_follow_it_there(platform):
    """The primary's host is lost; the on-call engineer restores from backups. The copy is made by the provisioner on
    a new database host with its own address, clients are switched there, and nothing production uses listens on
    the worker's 127.0.0.1 (a copy there would send every client to its own loopback)."""
    old = platform.primary.address
    killed_at = time.time()
    platform.primary.kill()
    dag_run = run_dag(RUNBOOK, {"mode": "incident", "approve": "auto", "path": "pitr"})
    report = report_of(dag_run)
    steps = {s["name"].removeprefix(f"{GROUP}."): s for s in report["steps"]}
    assert str(dag_run.state) == "success", report.get("failure")
    assert (report["status"], report["recovery_path"]) == ("passed", "pitr")
    recovered = report["evidence"]["recovered_address"]
    now = Sandbox(platform.dir)
    host = now.hosts.at(recovered)
    assert host is not None and host.role == "postgres" and host.region in ("us-east-1", "us-west-2"), recovered
    assert recovered != old and not recovered.startswith("127.0.0.1:")
    assert steps["recover_database"]["detail"].endswith(f"on host {host.name}, placed by the provisioner")
    # Clients followed service discovery to the new host: the record points there and the heartbeat commits there.
    assert now.primary.address == recovered
    assert "{}:{}".format(*resolve(now.aws("route53"), now.discovery())) == recovered
    assert any(a.endpoint == recovered for a in read_acks(Path(platform.dir) / "heartbeat.log", since=killed_at))
    listening = postgres_listeners(str(now.runtime))
    assert recovered in listening and not [a for a in listening if a.startswith("127.0.0.1:")], listening
