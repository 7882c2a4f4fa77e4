"""The kill switch, whole runs against the sandbox: while drills are switched off (the results database's switch,
or the Airflow Variable) a disruptive drill skips, saying why, touching nothing, and `make run` exits 0; a runbook
in incident mode is never held back, while the same runbook in drill mode is."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rehearsal import results
from rehearsal.drills.primary_loss import run_key
from rehearsal.postgres.connection import accepts_writes
from rehearsal.results import fetch_result
from rehearsal.scratch import destroy_run_area
from rehearsal_sandbox.platform import Sandbox
from tests.e2e.test_drill_primary_loss import report_of, run_dag

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]
DRILL = "dr_drill_postgres_primary_loss"
REASON = "game day freeze (INC-4242)"


def statuses(report: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["steps"]}


def test_with_drills_switched_off_a_disruptive_drill_skips_touching_nothing_and_make_run_says_why(platform):
    endpoint = platform.results_endpoint()
    results.drills_off(endpoint, "sandbox", REASON, "the test")
    primary = platform.primary.address
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "run_dag.py"), "--sandbox", DRILL, "--quiet",
                          "--conf", json.dumps({"mode": "disruptive", "path": "auto"})],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr  # a skipped drill is not a failed one
    assert (f"SKIPPED, nothing was touched: drills are switched off for environment 'sandbox': {REASON} (set by the "
            "test since ") in out.stdout
    report_path = next(ln for ln in out.stdout.splitlines() if "] report: " in ln).split("] report: ", 1)[1]
    report = json.loads(Path(report_path).read_text())
    assert report["status"] == "skipped" and report["mode"] == "disruptive"
    assert report["failure"].startswith(f"drills are switched off for environment 'sandbox': {REASON}")
    assert report["failure"].endswith("`make drills-on ENV=sandbox` turns them back on")
    steps = statuses(report)
    assert steps["guard_drill_environment"] == "skipped"
    assert {s["kind"] for s in report["steps"] if s["name"] == "guard_drill_environment"} == {"skipped"}
    # Nothing disruptive ran after the skip, not even the steps that run when others skip or fail.
    assert {steps[t] for t in ("inject_primary_loss", "postgres_failover.assess_cluster",
                               "postgres_failover.recover_database", "measure_rto_rpo",
                               "restore_drill_environment")} == {"skipped"}
    row = fetch_result(endpoint, DRILL, report["run_id"])
    assert row["status"] == "skipped" and row["report"]["failure"] == report["failure"]
    now = Sandbox(platform.dir)
    assert now.primary.address == primary and accepts_writes(now.endpoint(now.primary, "admin").with_(dbname="postgres"))[0]


def test_the_airflow_variable_switches_drills_off_too_and_the_outage_drill_kills_nothing(platform, monkeypatch):
    services = {name: platform.service(name).pid for name in ("api", "scheduler", "reconciler")}
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_DRILLS_OFF", "all hands on the region outage")
    dag_run = run_dag("dr_drill_control_plane_outage", {"mode": "disruptive"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert report["status"] == "skipped"
    assert report["failure"] == ("drills are switched off for environment 'sandbox': all hands on the region outage (set "
                                 "by the Airflow Variable rehearsal_drills_off); delete or empty the Variable "
                                 "rehearsal_drills_off turns them back on")
    steps = statuses(report)
    assert steps["inject_control_plane_outage"] == "skipped" and steps["measure_outage"] == "skipped"
    assert steps["scenario_a.resume_writes"] == "skipped"  # none_failed_min_one_success: skipped with the rest
    now = Sandbox(platform.dir)
    assert {name: now.service(name).pid for name in services} == services  # no service was killed
    assert all(now.service(name).running() for name in services)


def test_an_incident_runs_while_drills_are_off_and_the_same_runbook_as_a_drill_does_not(platform):
    endpoint = platform.results_endpoint()
    results.drills_off(endpoint, "sandbox", REASON, "the test")
    volume = platform.volumes.volume_ids()[0]
    conf = {"volume_id": volume, "target": "scratch", "approve": "auto"}
    scratch_root = Path(json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])["scratch_root"])
    incident = run_dag("dr_runbook_volume_restore", {"mode": "incident", **conf})
    try:
        report = report_of(incident)
        assert str(incident.state) == "success", report.get("failure")
        assert report["status"] == "passed"
        assert statuses(report)["volume_restore.verify_restored_volumes"] == "success"
        # The incident left the person's switch (and its reason) as it was, and says so.
        assert report["evidence"]["drills_switched_off"].startswith(
            f"drills were already switched off for environment 'sandbox': {REASON} (set by the test since ")
        assert results.drill_switch(endpoint, "sandbox").reason == REASON
    finally:  # a scratch restore is left for inspection by design
        destroy_run_area(scratch_root / run_key(incident.dag_id, incident.run_id))
    rehearsal = run_dag("dr_runbook_volume_restore", {"mode": "drill", **conf})
    report = report_of(rehearsal)
    assert str(rehearsal.state) == "success" and report["status"] == "skipped"
    assert report["failure"].startswith(f"drills are switched off for environment 'sandbox': {REASON}")
    assert set(statuses(report).values()) == {"skipped"}
