"""Scenario B and the control-plane outage drill, whole DAG runs against the sandbox's control plane and data
plane: the damage is really undone, the data plane really keeps serving, and the report says what was measured."""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest

from rehearsal.postgres.connection import connect
from rehearsal.services import Api, Reconciler
from rehearsal_sandbox.platform import Sandbox
from tests.e2e.test_drill_primary_loss import report_of, run_dag

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]

FINGERPRINT = "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) FROM {table} t"


def services() -> dict:
    import os

    return json.loads(os.environ["AIRFLOW_CONN_CONTROLPLANE_SERVICES"])["extra"]


def api(actor: str = "test") -> Api:
    return Api(services()["api"], actor=actor)


def steps_of(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["steps"]}


def acked_mutation(app_id: int, config: dict) -> str:
    request_id = f"test-{uuid.uuid4()}"
    answer = api().mutate("update_config", app_id, {"config": config}, request_id=request_id)
    assert answer.ok, answer
    return request_id


def test_scenario_b_undoes_a_corruption_made_by_hand_and_repairs_the_drift(platform):
    sb = Sandbox(platform.dir)
    admin = sb.endpoint(sb.primary, "admin")
    app_id = api().apps()[0]["id"]
    with connect(admin) as conn:
        endpoints_before = conn.execute(FINGERPRINT.format(table="endpoints")).fetchone()
        # The bulk UPDATE sees exactly the rows fingerprinted with it (one snapshot), and nothing else touches envs.
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        corrupted_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        envs_before = conn.execute(FINGERPRINT.format(table="envs")).fetchone()
        conn.execute("UPDATE envs SET config = jsonb_build_object('replicas', 0)")
        conn.execute("COMMIT")
        conn.execute("DROP TABLE endpoints")
    # Drift: a write acknowledged after the damage, which the restore to just before it loses.
    drift_request = acked_mutation(app_id, {"drift": "after-the-damage"})
    dag_run = run_dag("dr_scenario_b_postgres_corruption",
                      {"mode": "incident", "approve": "auto", "corruption_time": corrupted_at.isoformat()})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    steps = steps_of(report)
    now = Sandbox(platform.dir)
    new_admin = now.endpoint(now.primary, "admin")
    assert now.primary.address != sb.primary.address
    with connect(new_admin) as conn:
        assert conn.execute(FINGERPRINT.format(table="envs")).fetchone() == envs_before
        assert conn.execute(FINGERPRINT.format(table="endpoints")).fetchone() == endpoints_before
        repaired = conn.execute("SELECT actor FROM audit_log WHERE detail::jsonb->>'request_id' = %s", (drift_request,)).fetchall()
    assert repaired == [("drift-repair",)]  # re-applied by the runbook, on the new cluster
    assert api().app(app_id).body["config"]["drift"] == "after-the-damage"
    # Writes after the switch land in the new cluster.
    after = acked_mutation(app_id, {"after": "switch"})
    with connect(new_admin) as conn:
        assert conn.execute("SELECT count(*) FROM audit_log WHERE detail::jsonb->>'request_id' = %s", (after,)).fetchone()[0] == 1
    # The report names the backup and the target, and why.
    pick = steps["scenario_b.pick_last_good_backup"]["detail"]
    assert pick.startswith("base backup base-") and "the newest of" in pick
    point = steps["scenario_b.establish_corruption_time"]["detail"]
    assert corrupted_at.isoformat() in point and "given by the person" in point
    assert report["recovery_path"] == "pitr" and report["runbook"]["decision"] == pick
    assert "re-applied" in steps["scenario_b.repair_drift"]["detail"]
    assert steps["scenario_b.freeze_mutations"]["detail"].startswith("mutations frozen: mutation probe refused: HTTP 503")
    assert steps["scenario_b.postgres_failover.validate_damage_gone"]["detail"].startswith("2 damaging statement(s) not replayed; dropped "
                                                                        "table(s) back: endpoints (")
    assert steps["scenario_b.resume_writes"]["detail"].startswith("canary canary-")
    assert "while writes were still frozen; then the API went read-write" in steps["scenario_b.resume_writes"]["detail"]
    # Declaring the incident switched drills off for the environment, and the report says so.
    from rehearsal.results import drill_switch

    assert report["evidence"]["drills_switched_off"].startswith(
        "drills switched off for environment 'sandbox': incident declared by dr_scenario_b_postgres_corruption run "
        f"{dag_run.run_id} at ")
    assert drill_switch(now.results_endpoint(), "sandbox").set_by == f"dr_scenario_b_postgres_corruption run {dag_run.run_id}"


def test_the_control_plane_outage_drill_keeps_the_data_plane_serving_and_measures_it(platform):
    dag_run = run_dag("dr_drill_control_plane_outage", {"mode": "disruptive"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert report["status"] == "passed" and report["rto_met"] and report["rpo_met"]
    # The database was never touched (no kill_database): the RPO was not at risk, and is not reported as a measured 0.
    assert report["measured_rpo_seconds"] is None
    assert next(c for c in report["checks"] if c["name"] == "rpo_within_target")["detail"].startswith(
        "RPO not at risk: the fault never touched the control-plane database")
    outage = report["evidence"]["outage"]
    assert outage["dataplane_availability"] == 1.0 and outage["dataplane_rounds"] >= 3
    assert outage["read_only_at"] <= outage["read_write_at"]  # the API came back read-only first
    assert report["measured_rto_seconds"] == pytest.approx(outage["read_write_at"] - outage["fault_at"], abs=0.01)
    steps = steps_of(report)
    assert [s for s in steps if s.startswith("scenario_a.postgres_failover.")]  # skipped, not absent
    assert steps["scenario_a.postgres_failover.assess_cluster"]["status"] == "skipped"
    assert steps["scenario_a.restore_api_read_only"]["detail"].startswith("API serving read-only:")
    ramp = steps["scenario_a.resume_reconciler_gradually"]["detail"]
    assert ramp.startswith("reconciler ramped to 5 pushes/s in 4 step(s)") and "0.5/s ok -> 1/s ok -> 2/s ok -> 5/s ok" in ramp
    assert "time-to-converge back under 30s" in steps["scenario_a.confirm_time_to_converge"]["detail"]
    assert all(c["ok"] for c in report["checks"]), report["checks"]


def test_a_stop_condition_tripping_mid_drill_aborts_it_rolls_back_and_says_why(platform, monkeypatch):
    """Production gets worse than the drill planned: the data plane goes down with the control plane. The next
    step's stop-condition check sees it in the prober's log, stops the drill and rolls back."""
    from rehearsal_airflow.faults.control_plane import InjectControlPlaneOutageOperator

    probe_log = Path(json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])["probe_log"])
    original = InjectControlPlaneOutageOperator.run_step

    def and_the_data_plane_too(self, context):
        done = original(self, context)
        killed_at = time.time()
        Sandbox(platform.dir).service("agents").kill()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # until the prober has seen it
            rounds = [json.loads(line) for line in probe_log.read_text().splitlines()[-3:]]
            if any(r["t"] > killed_at and r["ok"] < r["endpoints"] for r in rounds):
                break
            time.sleep(0.2)
        return done

    monkeypatch.setattr(InjectControlPlaneOutageOperator, "run_step", and_the_data_plane_too)
    dag_run = run_dag("dr_drill_control_plane_outage", {"mode": "disruptive"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "failed"
    assert report["status"] == "aborted"
    assert report["failure"].startswith("scenario_a.declare_incident: DrillAborted: stop condition tripped before "
                                        "scenario_a.declare_incident at ")
    assert re.search(r"data-plane probe success \d+\.\d\d% < 95% over the last 5s", report["failure"]), report["failure"]
    steps = steps_of(report)
    assert steps["scenario_a.declare_incident"]["kind"] == "aborted"
    assert steps["restore_drill_environment"]["status"] == "success"
    assert steps["scenario_a.verify_hosts_running_workloads"]["status"] == "upstream_failed"
    assert Sandbox(platform.dir).service("agents").running()  # rolled back


def test_a_reconciler_that_never_converges_times_out_naming_the_last_value(sandbox):
    from rehearsal_airflow.operators.control_plane import TimeToConvergeSensor
    from tests.operators.test_control_plane_operators import run

    reconciler = Reconciler(services()["reconciler"])
    agents = sandbox.service("agents")
    app = api().apps()[0]
    try:
        assert agents.fault_all(fail_desired=True)
        acked_mutation(app["id"], {"never": "converges"})
        error, step = run(TimeToConvergeSensor(task_id="confirm_time_to_converge", threshold_seconds=2, timeout=6,
                                               poll_interval=0.5, deferrable=False))
        assert step["kind"] == "timed_out", step
        assert re.match(r"RecoveryTimedOut: time-to-converge under 2s not reached within 6s; last: time-to-converge "
                        r"\d+\.\ds, oldest unconverged change \d+\.\ds", step["detail"]), step["detail"]
        assert reconciler.metrics()["error_rate"] > 0  # the pushes fail, and back off
    finally:
        from rehearsal.environment import Environment
        from rehearsal_sandbox.provisioner import SandboxProvisioner

        SandboxProvisioner(Environment(sandbox_state=str(sandbox.dir))).restore_environment()


def test_scenario_b_refuses_a_corruption_older_than_the_oldest_backup(platform):
    dag_run = run_dag("dr_scenario_b_postgres_corruption",
                      {"mode": "incident", "approve": "auto", "corruption_time": "2020-01-01T00:00:00+00:00"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "failed"
    steps = steps_of(report)
    pick = steps["scenario_b.pick_last_good_backup"]
    assert pick["kind"] == "refused"
    assert "is older than the oldest base backup, base-" in pick["detail"]
    assert steps["scenario_b.postgres_failover.recover_database"]["status"] == "upstream_failed"
    # The backup is picked before anything is frozen: a refusal there leaves the platform as it was found.
    assert steps["scenario_b.freeze_mutations"]["status"] == "upstream_failed"
    assert api().mode() == "read-write" and not Reconciler(services()["reconciler"]).metrics().get("paused")



def test_scenario_a_fails_over_a_primary_that_answers_but_cannot_commit(platform):
    """The primary answers and is not in recovery, but every new transaction is read-only (a full disk's
    workaround, a bad setting): the health check writes, sees it cannot commit, and runs the failover runbook."""
    sb = Sandbox(platform.dir)
    old, standby = sb.primary.address, sb.standby.address
    with connect(sb.endpoint(sb.primary, "admin").with_(dbname="postgres")) as conn:
        conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        conn.execute("SELECT pg_reload_conf()")
    dag_run = run_dag("dr_scenario_a_control_plane_down", {"mode": "incident", "approve": "auto"})
    report = report_of(dag_run)
    steps = steps_of(report)
    health = steps["scenario_a.validate_postgres_health"]["detail"]
    assert health == (f"primary {old} is unhealthy (cannot commit a write: cannot execute INSERT in a read-only "
                      "transaction): running the postgres-failover runbook"), health
    assert steps["scenario_a.postgres_failover.recover_database"]["status"] == "success"
    assert report["evidence"]["recovered_address"] == standby and report["recovery_path"] == "promote_standby"
    assert str(dag_run.state) == "success", report.get("failure")
    now = Sandbox(platform.dir)
    assert now.primary.address == standby
    # Its probes (read-only check, canary, convergence) wrote to the platform's canary app, and to no customer's.
    canary = int(services()["canary_app"])
    with connect(now.endpoint(now.primary)) as conn:
        probed = [r[0] for r in conn.execute("SELECT app_id FROM deployments WHERE config ? 'rehearsal_probe'").fetchall()]
    assert probed == [canary]


def run_refusing_every_approval(dag_id: str, conf: dict) -> tuple[object, dict]:
    """``make run`` with ``APPROVE=no``: every approval a person would be asked is rejected."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[2] / "scripts" / "run_dag.py"), "--sandbox",
                          dag_id, "--conf", json.dumps(conf)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "APPROVE": "no"})
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("[rehearsal] report: ")), None)
    assert line, out.stdout[-3000:] + out.stderr[-2000:]
    return out, json.loads(Path(line.split("report: ", 1)[1]).read_text())


def test_scenario_a_on_a_healthy_platform_is_a_false_alarm_and_changes_nothing(platform):
    """Every service up, the data plane serving, Postgres committing: declared in incident mode anyway (with every
    approval refused). Nothing is put read-only or paused; the run ends not_applicable, saying why."""
    sb = Sandbox(platform.dir)
    rate_before = Reconciler(services()["reconciler"]).metrics()["rate"]
    started = time.time()
    out, report = run_refusing_every_approval("dr_scenario_a_control_plane_down",
                                              {"mode": "incident", "approve": "wait"})
    assert out.returncode == 0, out.stdout[-3000:]
    assert report["status"] == "not_applicable"
    assert report["failure"].startswith("Scenario A: control plane down, data plane still running is not happening: "
                                        "no impact measured")
    steps = steps_of(report)
    assert steps["scenario_a.declare_incident"]["status"] == "skipped"
    assert {steps[s]["status"] for s in ("scenario_a.approve_degrading_steps", "scenario_a.restore_api_read_only",
                                         "scenario_a.restore_reconciler_paused")} == {"skipped"}
    rounds = [json.loads(line) for line in sb.prober.log.read_text().splitlines() if line.strip()]
    during = [r for r in rounds if r["t"] >= started]
    assert during and {r.get("api_mode") for r in during} == {"read-write"}  # the prober never saw it read-only
    metrics = Reconciler(services()["reconciler"]).metrics()
    assert not metrics.get("paused") and metrics["rate"] == rate_before
    assert "declared Sev" not in json.dumps(report)  # no severity for a healthy platform


def test_scenario_b_rejected_leaves_the_api_and_the_reconciler_as_found_and_says_so(platform):
    from datetime import UTC, datetime, timedelta

    rate_before = Reconciler(services()["reconciler"]).metrics()["rate"]
    when = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    out, report = run_refusing_every_approval("dr_scenario_b_postgres_corruption",
                                              {"mode": "incident", "approve": "wait", "corruption_time": when})
    assert out.returncode == 1 and report["status"] == "aborted"
    assert report["failure"].endswith(f"nothing was changed: as found, the API is read-write and the reconciler at "
                                      f"{rate_before:g}/s"), report["failure"]
    steps = steps_of(report)
    assert steps["scenario_b.freeze_mutations"]["status"] == "skipped"
    assert api().mode() == "read-write"
    metrics = Reconciler(services()["reconciler"]).metrics()
    assert not metrics.get("paused") and metrics["rate"] == rate_before
