"""The drills on a real Airflow: api-server, scheduler, dag-processor and triggerer (LocalExecutor,
PostgreSQL metadata DB), driven through the REST API as a user would. The deployment runs with a
drill-only RTO override of 3 s, so every drill run misses its Deadline Alert and the breach path is
exercised by a real scheduler and triggerer, while the runs themselves still complete."""
from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

import pytest

from rehearsal.postgres.connection import Endpoint, connect
from rehearsal_sandbox.platform import Sandbox
from tests.helpers import leftovers

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
DRILL = "dr_drill_postgres_primary_loss"


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def report_for(run_id: str) -> dict:
    import os

    env = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])
    return json.loads((Path(env["reports_dir"]) / DRILL / f"{run_id}.json").read_text())


def test_every_dag_is_listed_without_import_errors(api):
    assert api.import_errors() == []
    dags = {d["dag_id"] for d in api.call("GET", "/dags")["dags"]}
    assert {"dr_drill_postgres_primary_loss", "dr_backup_freshness", "dr_backup_verify", "dr_backup_postgres"} <= dags


def test_a_disruptive_drill_through_the_rest_api_passes_and_its_missed_deadline_is_recorded(api, deployment, sandbox_session):
    run_id = api.trigger(DRILL, {"mode": "disruptive", "path": "auto"})
    run = api.wait_for_run(DRILL, run_id)
    report = report_for(run_id)
    assert run["state"] == "success", report.get("failure")
    assert report["status"] == "passed" and report["recovery_path"] == "promote_standby"
    assert report["measured_rto_seconds"] > 3  # longer than the shortened deadline: the breach is real

    # The scheduler marked the deadline missed, the triggerer ran the callback, the breach row exists.
    sandbox = Sandbox(sandbox_session.dir)
    meta = deployment.metadata_cluster()
    pw = sandbox.passwords["postgres"]
    deadline = time.monotonic() + 60
    breach = missed = None
    while time.monotonic() < deadline and not (breach and missed):
        with connect(Endpoint("127.0.0.1", meta.port, "airflow", "postgres", pw)) as conn:
            missed = conn.execute("SELECT d.missed FROM deadline d JOIN dag_run r ON r.id = d.dagrun_id "
                                  "WHERE r.run_id = %s", (run_id,)).fetchone()
        with connect(sandbox.results_endpoint()) as conn:
            breach = conn.execute("SELECT component, late_seconds, detail FROM rto_breaches WHERE run_id = %s",
                                  (run_id,)).fetchone()
        time.sleep(1)
    assert missed == (True,)
    assert breach is not None and breach[0] == "control_plane_api" and breach[1] >= 0
    assert breach[2]["target"] == "rto" and breach[2]["target_seconds"] == 3.0

    # Per-task scheduling overhead on the real scheduler: run wall time minus the sum of task durations.
    tis = [ti for ti in api.task_instances(DRILL, run_id) if ti["duration"] is not None]
    wall = (parse(run["end_date"]) - parse(run["start_date"])).total_seconds()
    overhead = (wall - sum(ti["duration"] for ti in tis)) / len(tis)
    print(f"\nreal scheduler: run {wall:.1f}s, {len(tis)} tasks, overhead {overhead:.2f}s per task")
    api.wait_for_all_runs(DRILL)  # the scheduler's own run of the latest quarter (non-disruptive) may still run
    assert leftovers(Sandbox(sandbox_session.dir)) == {"processes": [], "scratch": []}


def test_long_waits_ran_in_the_real_triggerer(api, deployment):
    """With deferrable operators on, the disruptive drill above waited for clients in the triggerer (the task
    paused as deferred and resumed), not in a worker slot."""
    logs = list((deployment.home / "logs").rglob("*confirm_clients_followed*/*.log"))
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert logs and "Pausing task as DEFERRED" in text, [str(p) for p in logs]
    assert '"event":"trigger ' in text  # the triggerer's lines for this task's trigger


def test_two_drills_at_once_both_pass_without_colliding(api, sandbox_session):
    runs = [api.trigger(DRILL, {"mode": "non_disruptive"}) for _ in range(2)]
    finished = [api.wait_for_run(DRILL, r) for r in runs]
    assert [f["state"] for f in finished] == ["success", "success"], [report_for(r).get("failure") for r in runs]
    a, b = finished
    assert parse(a["start_date"]) < parse(b["end_date"]) and parse(b["start_date"]) < parse(a["end_date"]), "did not overlap"
    created = [set(report_for(r)["resources_created"]) for r in runs]
    assert created[0] and created[1] and not (created[0] & created[1])
    assert leftovers(Sandbox(sandbox_session.dir)) == {"processes": [], "scratch": []}


def test_bad_form_values_are_refused_by_the_api(api):
    with pytest.raises(AssertionError, match="HTTP 400"):
        api.call("POST", f"/dags/{DRILL}/dagRuns", {"logical_date": None,
                                                    "conf": {"mode": "disruptive`reboot`", "path": "auto"}})


def test_the_sandbox_passwords_never_appear_in_logs_reports_or_results(deployment, sandbox_session):
    import os

    sandbox = Sandbox(sandbox_session.dir)
    secrets = list(sandbox.passwords.values())
    places = list(deployment.home.rglob("*.log"))
    places += list(Path(json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])["reports_dir"]).rglob("*.*"))
    assert len(places) > 5
    for path in places:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a sandbox password appears in {path}"
    with connect(sandbox.results_endpoint()) as conn:
        rows = conn.execute("SELECT report::text FROM drill_results UNION ALL SELECT detail::text FROM rto_breaches").fetchall()
    assert rows
    for (text,) in rows:
        for secret in secrets:
            assert secret not in text
