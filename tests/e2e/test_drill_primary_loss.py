"""Whole DAG runs against the sandbox, drill by drill, read like the runbook."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from rehearsal.catalog import DEFAULT_CATALOG
from rehearsal.discovery import resolve
from rehearsal.environment import Environment
from rehearsal.postgres.connection import connect
from rehearsal.report import report_paths
from rehearsal.results import fetch_result
from rehearsal_sandbox.platform import Sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]
DRILL = "dr_drill_postgres_primary_loss"
RUNBOOK = "postgres_failover"
RUNBOOK_STEPS = ["assess_cluster", "choose_recovery_path", "approve_recovery", "fence_old_primary", "recover_database",
                 "validate_recovered_database", "reenable_wal_archiving", "switch_service_discovery",
                 "confirm_clients_followed", "rebuild_redundancy"]
REPORT_FIELDS = {"dag_id", "run_id", "scenario", "mode", "environment", "status", "started_at", "finished_at", "component",
                 "target_rto_seconds", "measured_rto_seconds", "rto_met", "target_rpo_seconds", "measured_rpo_seconds",
                 "rpo_met", "recovery_path", "steps", "checks", "evidence", "resources_created", "resources_cleaned"}


def run_dag(dag_id: str, conf: dict):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[dag_id]
    dag.deadline = None  # apache/airflow#73428: dag.test() crashes on deadline=; proven on a real scheduler instead
    return dag.test(run_conf=conf)


def report_of(dag_run) -> dict:
    env = Environment.from_mapping(json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"]))
    json_path, md_path = report_paths(env.reports_dir, dag_run.dag_id, dag_run.run_id)
    assert md_path.exists()
    return json.loads(json_path.read_text())


def assert_complete(report: dict, mode: str, path: str) -> None:
    assert REPORT_FIELDS <= set(report)
    assert report["status"] == "passed", report.get("failure")
    assert (report["mode"], report["recovery_path"], report["environment"]) == (mode, path, "sandbox")
    assert report["rto_met"] and report["rpo_met"]
    assert report["target_rto_seconds"] == 7200 and report["target_rpo_seconds"] == 900
    ev = report["evidence"]
    assert ev["fault_at"] < ev["first_ack_after_recovery"]["acked_at"]
    assert report["measured_rto_seconds"] == pytest.approx(ev["first_ack_after_recovery"]["acked_at"] - ev["fault_at"])
    # Writes acknowledged until the kill took effect count as before the fault.
    assert ev["last_ack_before_fault"]["acked_at"] <= (ev["fault_effective_at"] or ev["fault_at"])
    assert ev["window_seconds"] == 1800 and ev["lineage"] and not ev["rpo_is_lower_bound"]
    assert ev["acked_before_fault"] > 0
    statuses = {s["name"]: s["status"] for s in report["steps"]}
    assert statuses["restore_drill_environment"] == "success"
    assert all(c["ok"] for c in report["checks"]), [c for c in report["checks"] if not c["ok"]]
    # The drill ran the runbook's own steps, and the report names them.
    assert report["runbook"]["dag_id"] == "dr_runbook_postgres_failover" and report["runbook"]["group"] == RUNBOOK
    assert report["runbook"]["steps"] == [f"{RUNBOOK}.{step}" for step in RUNBOOK_STEPS]
    assert report["runbook"]["approved_by"] == "mode drill: drills never wait"


def test_killing_the_primary_then_the_standby_is_promoted_and_clients_follow(platform):
    old_primary = platform.primary.address
    standby = platform.standby.address
    dag_run = run_dag(DRILL, {"mode": "disruptive", "path": "auto"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert_complete(report, "disruptive", "promote_standby")
    assert report["evidence"]["first_ack_after_recovery"]["endpoint"] == standby
    assert report["measured_rpo_seconds"] <= 1.0
    # pgbench, knowing the database only by its A record, committed again on the promoted standby after the fault.
    pgbench = report["evidence"]["pgbench_after_fault"]
    assert pgbench["committed_at"] > pgbench["started_at"] >= report["evidence"]["fault_at"], pgbench
    assert pgbench["address"] == standby.rsplit(":", 1)[0]
    now = Sandbox(platform.dir)
    assert now.primary.address == standby and now.primary.address != old_primary
    assert "{}:{}".format(*resolve(now.aws("route53"), now.discovery())) == standby
    row = fetch_result(now.results_endpoint(), DRILL, dag_run.run_id)
    assert row["status"] == "passed" and row["measured_rto_seconds"] == pytest.approx(report["measured_rto_seconds"])


def test_killing_the_primary_and_restoring_from_backups_loses_at_most_the_archive_timeout(platform):
    dag_run = run_dag(DRILL, {"mode": "disruptive", "path": "pitr"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert_complete(report, "disruptive", "pitr")
    # Unarchived WAL is lost with the primary: bounded by archive_timeout, plus the shipper's poll (0.2 s)
    # and the archiver's wake-up.
    assert report["measured_rpo_seconds"] <= platform.archive_timeout + 1.0
    assert report["evidence"]["restored_lsn"]
    now = Sandbox(platform.dir)
    with connect(now.endpoint(now.standby, "admin").with_(dbname="postgres")) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0], "the new primary got a streaming standby"


def missing_load_writes(sandbox, since: float) -> set[str]:
    """The synthetic load's acknowledged writes since ``since`` that the control-plane database does not hold."""
    from rehearsal.drills.control_plane import read_load_log
    from rehearsal.runbooks.corruption import present_request_ids

    acks = [a for a in read_load_log(Path(sandbox.synthetic_load.log), since=since) if a.get("t_ack")
            and 200 <= int(a.get("status") or 0) < 300]
    with connect(sandbox.endpoint(sandbox.primary)) as conn:
        present = present_request_ids(conn, [a["request_id"] for a in acks])
    return {a["request_id"] for a in acks} - present


def test_a_later_drill_does_not_report_an_earlier_pitr_drills_losses_as_its_own(platform):
    """A PITR primary-loss drill loses the load's writes of its last unarchived seconds; the corruption drill after it
    on the same sandbox lists them as the environment's history, never as its own RPO."""
    import time

    started = time.time() - 1700
    earlier = missing_load_writes(platform, started)
    if not earlier:  # run alone: make the earlier loss here
        assert str(run_dag(DRILL, {"mode": "disruptive", "path": "pitr"}).state) == "success"
        earlier = missing_load_writes(Sandbox(platform.dir), started)
    assert earlier, "a PITR drill lost no acknowledged write of the load: nothing to tell apart"
    dag_run = run_dag("dr_drill_postgres_corruption", {"mode": "disruptive"})
    report = report_of(dag_run)
    rpo = report["evidence"]["rpo"]
    assert {a["request_id"] for a in rpo["lost_before"]}.isdisjoint(earlier)
    assert rpo["history_count"] >= 1 and {a["request_id"] for a in rpo["history"]} <= earlier
    steps = {s["name"]: s for s in report["steps"]}
    assert "were already missing (an earlier fault's: not this drill's to answer for)" in \
        steps["guard_drill_environment"]["detail"]
    assert str(dag_run.state) == "success", report.get("failure")


def test_a_non_disruptive_drill_restores_into_scratch_and_leaves_production_alone(platform):
    from rehearsal.results import acquire_drill_lock

    primary = platform.primary.address
    # A disruptive drill killed before its teardown left its lock; its run no longer exists.
    acquire_drill_lock(platform.results_endpoint(), "sandbox", DRILL, "manual__killed-before-its-teardown")
    dag_run = run_dag(DRILL, {"mode": "non_disruptive"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert_complete(report, "non_disruptive", "pitr")
    statuses = {s["name"]: s["status"] for s in report["steps"]}
    assert {statuses[f"{RUNBOOK}.{step}"] for step in ("fence_old_primary", "reenable_wal_archiving",
                                                       "switch_service_discovery", "confirm_clients_followed",
                                                       "rebuild_redundancy")} == {"skipped"}
    now = Sandbox(platform.dir)
    assert now.primary.address == primary
    assert "{}:{}".format(*resolve(now.aws("route53"), now.discovery())) == primary
    # The scratch copy ran on a database host the provisioner gave the run, and went with it.
    copy = report["evidence"]["recovered_address"]
    assert not copy.startswith("127.0.0.1:") and copy.startswith(os.environ["REHEARSAL_ADDRESS_BLOCK"] + ".1.")
    assert any(r.startswith("cluster:cp-") and f"@{copy} " in r and r.endswith("released)")
               for r in report["resources_cleaned"]), report["resources_cleaned"]
    assert now.hosts.at(copy) is None
    assert report["evidence"]["drill_lock"].startswith(
        f"broke a stale drill lock ({DRILL} run manual__killed-before-its-teardown, held for ")
    # The copy was restored from what the archive held at the simulated fault, not what it holds minutes later:
    # the writes acknowledged after the last segment stored by then are lost, as they would have been.
    ev = report["evidence"]
    assert ev["restore_archive"]["archived_before"] is not None
    assert ev["missing_acked_writes"] > 0 and report["measured_rpo_seconds"] > 0
    assert ev["measurement_includes"].startswith("simulated loss: a scratch copy restored from what the archive held at ")


def test_a_standby_that_stopped_streaming_is_not_promoted_and_a_missed_rpo_fails_the_run(platform, tmp_path):
    """path=auto with a standby whose WAL receiver stopped while the primary kept committing: the drill restores
    from backups instead and says why; with the RPO target shortened below what that loses, `make run` fails."""
    import subprocess
    import sys
    import time

    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["components"]["control_plane_api"]["rpo"] = "0s"  # nothing may be lost: a PITR always loses the tail
    data["assets"]["controlplane_wal_archive"]["max_age"] = "15m"
    targets = tmp_path / "targets.yaml"
    targets.write_text(yaml.safe_dump(data))
    standby = platform.endpoint(platform.standby, "admin").with_(dbname="postgres")
    with connect(standby) as conn:
        conninfo = conn.execute("SHOW primary_conninfo").fetchone()[0]
        conn.execute("ALTER SYSTEM SET primary_conninfo = ''")  # the receiver stops; the heartbeat goes on
        conn.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(2)
        out = subprocess.run([sys.executable, str(REPO / "scripts" / "run_dag.py"), "--sandbox", DRILL,
                              "--conf", json.dumps({"mode": "disruptive", "path": "auto"})], capture_output=True, text=True,
                             timeout=600, env={**os.environ, "REHEARSAL_TARGETS_FILE": str(targets)})
    finally:
        if Sandbox(platform.dir).standby.address == platform.standby.address:  # not replaced by the drill: reconnect it
            with connect(standby) as conn:
                conn.execute("ALTER SYSTEM SET primary_conninfo = '" + conninfo.replace("'", "''") + "'")
                conn.execute("SELECT pg_reload_conf()")
    assert out.returncode == 1, out.stdout[-3000:]
    report_line = next(line for line in out.stdout.splitlines() if line.startswith("[rehearsal] report: "))
    report = json.loads(Path(report_line.split("report: ", 1)[1]).read_text())
    assert (report["status"], report["recovery_path"], report["rpo_met"], report["rto_met"]) == ("failed", "pitr", False, True)
    assert report["measured_rpo_seconds"] > 0 and report["evidence"]["missing_acked_writes"] > 0
    choice = next(s for s in report["steps"] if s["name"] == f"{RUNBOOK}.choose_recovery_path")
    standby_address = platform.standby.address
    assert choice["detail"].startswith(f"pitr: standby unusable: standby {standby_address} replay lag ")
    assert "exceeds the RPO of 0s" in choice["detail"]
    before = report["evidence"]["standbys_before_fault"][standby_address]["limitation"]
    assert before.startswith(f"standby {standby_address} is not streaming from the primary (receiver not running")
    assert report["failure"] is None


def test_freshness_passes_then_names_the_stale_asset_when_its_limit_shrinks(platform, tmp_path, monkeypatch):
    assert str(run_dag("dr_backup_freshness", {}).state) == "success"
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["assets"]["controlplane_logical_dump"]["max_age"] = "1s"
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("REHEARSAL_TARGETS_FILE", str(path))
    dag_run = run_dag("dr_backup_freshness", {})
    assert str(dag_run.state) == "failed"
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        step = session.execute(select(XComModel.value).where(XComModel.run_id == dag_run.run_id,
                                                              XComModel.task_id == "check_backup_freshness",
                                                              XComModel.key == "step")).scalar_one()
    step = json.loads(step) if isinstance(step, str) else step
    assert step["detail"].startswith("StaleBackup: stale backups: controlplane_logical_dump: newest logical_dump dump-")
    assert "over its 1s limit" in step["detail"]
