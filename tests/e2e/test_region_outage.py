"""Scenario C on a two-region sandbox of its own (a region failover moves the control plane: the session's sandbox
is left alone): us-east-1 taken down whole by the test and Scenario C run in incident mode, customers resolving
names through the sandbox's DNS server; the single-region path's rebuild through its drill, on a real Airflow with
the Edge executor whose worker in the region taken down dies with it. (A false alarm changing
nothing is proven on the plain judgement: tests/unit/test_region_outage_logic.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from datetime import datetime
from pathlib import Path

import dns.resolver
import psutil
import pytest

from rehearsal import results
from rehearsal.postgres.cluster import free_port
from rehearsal_sandbox.airflow_deployment import EDGE_REGIONS, USERNAME, LocalAirflow, worker_hostname
from rehearsal_sandbox.platform import Sandbox, read_env_file
from tests.airflow_api import AirflowApi

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]
DRILL = "dr_drill_region_outage"


@pytest.fixture(scope="module")
def regions(tmp_path_factory, airflow_db):
    """A sandbox of its own: its own state folder and address block."""
    session_block = os.environ["REHEARSAL_ADDRESS_BLOCK"]
    os.environ["REHEARSAL_ADDRESS_BLOCK"] = f"127.{100 + (int(session_block.split('.')[1]) - 99) % 150}"
    sb = Sandbox(tmp_path_factory.mktemp("regions") / "sandbox")
    try:
        sb.up(scale=0.05, archive_timeout=5)
    finally:
        os.environ["REHEARSAL_ADDRESS_BLOCK"] = session_block
    yield sb
    Sandbox(sb.dir).down()


def run(sb: Sandbox, dag_id: str, conf: dict) -> dict:
    """One run under ``dag.test()`` in a process of its own, with this sandbox's environment; its report."""
    env = {**os.environ, **read_env_file(sb.dir / "env"), "REHEARSAL_SANDBOX_DIR": str(sb.dir), "APPROVE": "yes"}
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "run_dag.py"), dag_id, "--quiet", "--conf",
                          json.dumps(conf)], env=env, capture_output=True, text=True, timeout=600)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("[rehearsal] report:")), None)
    assert line, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(Path(line.split("report:", 1)[1].strip()).read_text())


def steps(report: dict) -> dict:
    return {s["name"]: s for s in report["steps"]}


def test_us_east_1_down_whole_fails_over_and_customers_follow_through_dns(regions, edge_airflow_starting):
    sb = Sandbox(regions.dir)
    down = sb.region_down("us-east-1")
    assert any("postgres" in k for k in down["killed"]) and any("/edge" in k for k in down["killed"])
    report = run(sb, "dr_scenario_c_region_outage", {"mode": "incident", "failed_region": "us-east-1",
                                                     "approve": "auto"})
    results.drills_on(sb.results_endpoint(), "sandbox")
    assert report["status"] in ("passed", "degraded"), report.get("failure")
    done = steps(report)
    assert "path multi_region" in done["scenario_c.declare_region_outage"]["detail"]
    assert done["scenario_c.multi_region.verify_endpoint_availability"]["detail"].startswith("100/100 app endpoints")
    measured = report["evidence"]["customers"]
    assert measured["availability_before"] == 1.0 and measured["availability_after"] >= 0.99
    assert set(measured["served_by_after"]) == {"us-west-2"} and report["measured_rto_seconds"] > 0
    assert report["measured_rpo_seconds"] == 0
    now = Sandbox(regions.dir)
    assert now.control_plane_region == "us-west-2" and now.region_of(now.primary.host) == "us-west-2"
    # As customers see it: the name resolves, through the DNS server, to us-west-2's edge, and every app answers.
    resolver = dns.resolver.Resolver(configure=False)
    dns_server = now.components()["dns"]
    resolver.nameservers, resolver.port = [dns_server.host], dns_server.port
    edge = now.components("us-west-2")["edge"]
    assert {resolver.resolve("apps.rehearsal.internal.", "A")[0].address for _ in range(5)} == {edge.host}
    for app in now.components()["customers"].state["apps"][:20]:
        with urllib.request.urlopen(f"http://{edge.host}:{edge.port}/apps/{app}", timeout=3) as answer:
            assert answer.status == 200 and answer.headers["X-Region"] == "us-west-2"
    sb.region_up("us-east-1")  # the region back: its data plane serves, its old primary is fenced


@pytest.fixture(scope="module")
def edge_airflow_starting(regions):
    """A real Airflow for this module's sandbox on the Edge executor, started in the background while the first test
    runs (its metadata database created first, here: the sandbox's state is written by one hand at a time). Its
    edge workers are started by ``edge_airflow``, after that test's region outage is over."""
    airflow = LocalAirflow(Sandbox(regions.dir), port=free_port(), executor="edge")
    airflow.metadata_cluster()
    failed: list[BaseException] = []

    def start() -> None:
        try:
            airflow.up(extra_env={"AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True"}, timeout=600, start_workers=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test that needs it
            failed.append(exc)

    thread = threading.Thread(target=start, name="edge-airflow-up", daemon=True)
    thread.start()
    yield airflow, thread, failed
    thread.join(timeout=600)
    airflow.down()


@pytest.fixture(scope="module")
def edge_airflow(edge_airflow_starting):
    """That Airflow up, with one edge worker per region (both serving the queues default and recovery), reaching the
    api-server over HTTP."""
    airflow, thread, failed = edge_airflow_starting
    thread.join(timeout=600)
    assert not thread.is_alive() and not failed, failed
    for region in EDGE_REGIONS:
        airflow.start_worker(region)
    return airflow


def test_the_single_region_path_rebuilds_and_completes_on_the_worker_outside_the_region(regions, edge_airflow):
    """The single-region drill on a real Airflow with the Edge executor: the region taken down holds the control
    plane and one of the two edge workers; it dies mid-run with its region (any task it ran with it) and the
    drill, Scenario C's rebuild included, completes on the other region's worker."""
    api = AirflowApi(edge_airflow.url, USERNAME, edge_airflow.password)
    api.wait_for_dag(DRILL)
    victim = Sandbox(regions.dir).control_plane_region  # region=auto: the one holding the control plane
    survivor = next(r for r in EDGE_REGIONS if r != victim)
    registered = edge_airflow.registered_workers()
    assert {worker_hostname(r): registered[worker_hostname(r)]["state"] in ("idle", "running") for r in EDGE_REGIONS} \
        == {worker_hostname(r): True for r in EDGE_REGIONS}, registered
    victim_pid = edge_airflow.state["workers"][victim]["pid"]
    status = edge_airflow.status()  # what make airflow-status prints
    assert all(status[f"edge-worker {r}"]["ok"] for r in EDGE_REGIONS), status
    assert "queues default,recovery, api-server says " in status[f"edge-worker {victim}"]["detail"]

    run_id = api.trigger(DRILL, {"mode": "disruptive", "path": "single_region"})
    run = api.wait_for_run(DRILL, run_id, timeout=900)
    env = read_env_file(regions.dir / "env")
    reports = Path(json.loads(env["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])["reports_dir"])
    report = json.loads((reports / DRILL / f"{run_id}.json").read_text())
    tis = api.task_instances(DRILL, run_id)
    assert run["state"] == "success", (report.get("failure"), [(t["task_id"], t["state"], t["hostname"]) for t in tis])
    assert report["status"] in ("passed", "degraded"), report.get("failure")

    done = steps(report)
    assert done["scenario_c.single_region.report_what_is_back"]["detail"].startswith("7 of 7 back")
    order = [s for s in done if s.startswith("scenario_c.single_region.") and done[s]["status"] == "success"]
    assert order.index("scenario_c.single_region.restore_control_plane_database.recover_database") < \
        order.index("scenario_c.single_region.bring_up_minimal_fleet") < \
        order.index("scenario_c.single_region.restore_critical_volumes.restore_volumes")
    assert report["measured_rto_seconds"] is not None and report["measured_rpo_seconds"] is not None

    # The victim's worker died with its region, mid-run; everything after the fault ran on the survivor's.
    assert not psutil.pid_exists(victim_pid) or psutil.Process(victim_pid).status() == psutil.STATUS_ZOMBIE
    dead = edge_airflow.status()[f"edge-worker {victim}"]
    assert not dead["ok"] and f"pid {victim_pid} (dead)" in dead["detail"], dead
    inject = next(t for t in tis if t["task_id"] == "inject_region_outage")
    after = [t for t in tis if t["state"] != "skipped" and t["start_date"]  # skipped tasks ran nowhere
             and parse(t["start_date"]) > parse(inject["end_date"])]
    assert len(after) > 10 and {t["hostname"] for t in after} == {worker_hostname(survivor)}, \
        [(t["task_id"], t["hostname"]) for t in after]
    if inject["try_number"] > 1:  # its first try ran on the victim and died with it: the retry adopted the fault
        assert inject["hostname"] == worker_hostname(survivor)
        assert "which died with the region" in done["inject_region_outage"]["detail"]
    print(f"\nregion {victim} down with worker {worker_hostname(victim)}; inject_region_outage try "
          f"{inject['try_number']} on {inject['hostname']}; {len(after)} tasks after it on {worker_hostname(survivor)}; "
          f"run {(parse(run['end_date']) - parse(run['start_date'])).total_seconds():.1f}s")


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))
