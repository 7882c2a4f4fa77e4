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
from rehearsal.sandbox.platform import Sandbox

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]
DRILL = "dr_drill_postgres_primary_loss"
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
    assert ev["last_ack_before_fault"]["acked_at"] <= ev["fault_at"]
    assert ev["acked_before_fault"] > 0
    statuses = {s["name"]: s["status"] for s in report["steps"]}
    assert statuses["tear_down_drill_resources"] == "success"
    assert all(c["ok"] for c in report["checks"]), [c for c in report["checks"] if not c["ok"]]


def test_killing_the_primary_then_the_standby_is_promoted_and_clients_follow(platform):
    old_primary = platform.primary.port
    standby = platform.standby.port
    dag_run = run_dag(DRILL, {"mode": "disruptive", "path": "auto"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert_complete(report, "disruptive", "promote_standby")
    assert report["evidence"]["first_ack_after_recovery"]["endpoint"] == f"127.0.0.1:{standby}"
    assert report["measured_rpo_seconds"] <= 1.0
    now = Sandbox(platform.dir)
    assert now.primary.port == standby and now.primary.port != old_primary
    assert resolve(now.aws("route53"), now.discovery()) == ("127.0.0.1", standby)
    row = fetch_result(now.results_endpoint(), DRILL, dag_run.run_id)
    assert row["status"] == "passed" and row["measured_rto_seconds"] == pytest.approx(report["measured_rto_seconds"])


def test_killing_the_primary_and_restoring_from_backups_loses_at_most_the_archive_timeout(platform):
    dag_run = run_dag(DRILL, {"mode": "disruptive", "path": "pitr"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert_complete(report, "disruptive", "pitr")
    # Unarchived WAL is lost with the primary: bounded by archive_timeout, plus the shipper's poll (0.2 s)
    # and the archiver's wake-up.
    assert report["measured_rpo_seconds"] <= platform.state["archive_timeout"] + 1.0
    assert report["evidence"]["restored_lsn"]
    now = Sandbox(platform.dir)
    with connect(now.endpoint(now.standby, "admin").with_(dbname="postgres")) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0], "the new primary got a streaming standby"


def test_a_non_disruptive_drill_restores_into_scratch_and_leaves_production_alone(platform):
    primary = platform.primary.port
    dag_run = run_dag(DRILL, {"mode": "non_disruptive"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert_complete(report, "non_disruptive", "pitr")
    statuses = {s["name"]: s["status"] for s in report["steps"]}
    assert statuses["switch_service_discovery"] == "skipped" and statuses["enroll_new_primary"] == "skipped"
    now = Sandbox(platform.dir)
    assert now.primary.port == primary
    assert resolve(now.aws("route53"), now.discovery()) == ("127.0.0.1", primary)
    assert any(r.startswith("cluster:drill-") for r in report["resources_cleaned"])


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
                                                              XComModel.key == "step")).scalar_one()
    step = json.loads(step) if isinstance(step, str) else step
    assert step["detail"].startswith("StaleBackup: stale backups: controlplane_logical_dump: newest logical_dump dump-")
    assert "over its 1s limit" in step["detail"]
