"""The drills on a real Airflow: api-server, scheduler, dag-processor and triggerer (LocalExecutor,
PostgreSQL metadata DB), driven through the REST API as a user would. The deployment runs with a
drill-only RTO override of 3 s, so every drill run misses its Deadline Alert and the breach path is
exercised by a real scheduler and triggerer, while the runs themselves still complete."""
from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rehearsal.postgres.connection import Endpoint, connect
from rehearsal_sandbox.platform import Sandbox
from tests.helpers import leftovers

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
DRILL = "dr_drill_postgres_primary_loss"


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def report_for(run_id: str, dag_id: str = DRILL) -> dict:
    env = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])
    return json.loads((Path(env["reports_dir"]) / dag_id / f"{run_id}.json").read_text())


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


OUTAGE = "dr_drill_control_plane_outage"  # quarterly, disruptive by default: it SIGKILLs the control plane
OUTAGE_SCHEDULE = "0 6 15 2,5,8,11 *"
SERVICES = ("api", "scheduler", "reconciler")


def scheduled_runs(api, dag_id: str) -> list[dict]:
    return [r for r in api.call("GET", f"/dags/{dag_id}/dagRuns?limit=100")["dag_runs"] if r["run_type"] == "scheduled"]


def test_unpausing_a_disruptive_quarterly_drill_weeks_after_its_date_starts_nothing_disruptive(api, sandbox_session):
    """With catchup=False the scheduler runs the latest past cron tick as soon as the DAG is unpaused (logical date
    and run_after: that tick). That run starts weeks late: it skips, saying so, and kills nothing."""
    from croniter import croniter

    now = datetime.now(UTC)
    tick = croniter(OUTAGE_SCHEDULE, now).get_prev(datetime)
    if now - tick < timedelta(hours=2):
        pytest.skip(f"the drill's latest tick {tick.isoformat()} is too recent for an unpause to be late")
    sandbox = Sandbox(sandbox_session.dir)
    pids = {name: sandbox.service(name).pid for name in SERVICES}
    assert scheduled_runs(api, OUTAGE) == []
    api.call("PATCH", f"/dags/{OUTAGE}", {"is_paused": False})
    try:
        deadline = time.monotonic() + 180
        while not scheduled_runs(api, OUTAGE) and time.monotonic() < deadline:
            time.sleep(1)
        created = scheduled_runs(api, OUTAGE)
        assert len(created) == 1, "the scheduler started no run when the drill was unpaused"
        run = api.wait_for_run(OUTAGE, created[0]["dag_run_id"])
    finally:
        api.call("PATCH", f"/dags/{OUTAGE}", {"is_paused": True})
    print(f"\nunpaused {OUTAGE} at {now.isoformat()}: the scheduler's run {run['dag_run_id']} has logical_date "
          f"{run['logical_date']}, run_after {run['run_after']}, started {run['start_date']}")
    assert parse(run["logical_date"]) == parse(run["run_after"]) == tick  # CronTriggerTimetable: the latest past tick
    report = report_for(run["dag_run_id"], OUTAGE)
    assert run["state"] == "success", report.get("failure")  # skipped is not a failed drill
    assert report["status"] == "skipped"
    assert report["failure"].startswith(f"scheduled for {tick.strftime('%Y-%m-%dT%H:%M')} UTC but started ")
    assert "later (more than 1 h): a late drill would surprise people; trigger it by hand to run it now" in report["failure"]
    steps = {s["name"]: s["status"] for s in report["steps"]}
    assert steps["inject_control_plane_outage"] == "skipped" and steps["restore_drill_environment"] == "skipped"
    now_sandbox = Sandbox(sandbox_session.dir)
    assert {name: now_sandbox.service(name).pid for name in SERVICES} == pids  # nothing was killed
    assert all(now_sandbox.service(name).running() for name in SERVICES)


def test_with_the_kill_switch_on_a_manual_drill_skips_and_an_incident_runbook_runs(api, sandbox_session):
    """The Variable the UI sets switches every drill off; an incident is never held back."""
    from rehearsal import results
    from rehearsal.drills.primary_loss import run_key
    from rehearsal.scratch import destroy_run_area

    sandbox = Sandbox(sandbox_session.dir)
    primary = sandbox.primary.address
    reason = "freeze: the region is having a bad day"
    api.call("POST", "/variables", {"key": "rehearsal_drills_off", "value": reason})
    incident = None
    try:
        drill = api.trigger(DRILL, {"mode": "disruptive", "path": "auto"})
        incident = api.trigger("dr_runbook_volume_restore", {"mode": "incident", "volume_id": sandbox.volumes.volume_ids()[0],
                                                             "target": "scratch", "approve": "auto"})
        drill_run, incident_run = api.wait_for_run(DRILL, drill), api.wait_for_run("dr_runbook_volume_restore", incident)
    finally:
        api.call("DELETE", "/variables/rehearsal_drills_off")
        if incident is not None:
            env = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])
            destroy_run_area(Path(env["scratch_root"]) / run_key("dr_runbook_volume_restore", incident))
    report = report_for(drill)
    assert drill_run["state"] == "success" and report["status"] == "skipped", report.get("failure")
    assert report["failure"].startswith(f"drills are switched off for environment 'sandbox': {reason} (set by the Airflow "
                                        "Variable rehearsal_drills_off)")
    assert results.fetch_result(sandbox.results_endpoint(), DRILL, drill)["status"] == "skipped"
    assert Sandbox(sandbox_session.dir).primary.address == primary
    runbook = report_for(incident, "dr_runbook_volume_restore")
    assert incident_run["state"] == "success" and runbook["status"] == "passed", runbook.get("failure")
    assert runbook["evidence"]["drills_switched_off"].startswith(
        f"drills switched off for environment 'sandbox': incident declared by dr_runbook_volume_restore run {incident} at ")


def test_bad_form_values_are_refused_by_the_api(api):
    with pytest.raises(AssertionError, match="HTTP 400"):
        api.call("POST", f"/dags/{DRILL}/dagRuns", {"logical_date": None,
                                                    "conf": {"mode": "disruptive`reboot`", "path": "auto"}})


def test_the_sandbox_passwords_never_appear_in_logs_reports_or_results(deployment, sandbox_session):
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
