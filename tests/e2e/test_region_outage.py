"""Scenario C on a two-region sandbox of its own (a region failover moves the control plane: the session's sandbox
is left alone): us-east-1 taken down whole by the test and Scenario C run in incident mode, customers resolving
names through the sandbox's DNS server; the single-region path's rebuild through its drill. (A false alarm changing
nothing is proven on the plain judgement: tests/unit/test_region_outage_logic.py.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import dns.resolver
import pytest

from rehearsal import results
from rehearsal_sandbox.platform import Sandbox, read_env_file

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]


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


def test_us_east_1_down_whole_fails_over_and_customers_follow_through_dns(regions):
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


def test_the_single_region_path_rebuilds_and_says_what_is_back(regions):
    sb = Sandbox(regions.dir)
    report = run(sb, "dr_drill_region_outage", {"mode": "disruptive", "path": "single_region"})
    assert report["status"] in ("passed", "degraded"), report.get("failure")
    done = steps(report)
    assert done["scenario_c.single_region.report_what_is_back"]["detail"].startswith("7 of 7 back")
    order = [s for s in done if s.startswith("scenario_c.single_region.") and done[s]["status"] == "success"]
    assert order.index("scenario_c.single_region.restore_control_plane_database.recover_database") < \
        order.index("scenario_c.single_region.bring_up_minimal_fleet") < \
        order.index("scenario_c.single_region.restore_critical_volumes.restore_volumes")
    assert report["measured_rto_seconds"] is not None and report["measured_rpo_seconds"] is not None
