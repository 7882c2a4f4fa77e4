"""Drills bound to their targets' identity: a drill environment whose connections point at a database of another
identity (a staging Airflow holding copied production connections, say) has every disruptive drill refuse before
any fault, naming both identities; a fault re-checks what it is about to harm; Scenario D rehearsed outside a drill
environment is refused."""
from __future__ import annotations

import json
import os

import pytest

from rehearsal.postgres.connection import accepts_writes
from rehearsal_sandbox.platform import Sandbox
from tests.e2e.test_drill_primary_loss import report_of, run_dag

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]

# One drill per guard the frame builds (every drill is made by the frame: tests/dags/test_dag_integrity.py); the
# control-plane outage and corruption drills share the primary-loss drill's guard operator and its identity check.
DISRUPTIVE_DRILLS = [
    ("dr_drill_postgres_primary_loss", {"mode": "disruptive", "path": "auto"}),
    ("dr_drill_volume_restore", {"mode": "disruptive"}),  # the volume drills' own guard operator
    ("dr_drill_region_outage", {"mode": "disruptive", "path": "multi_region"}),
]


@pytest.fixture
def admin_points_elsewhere(platform, monkeypatch):
    """``controlplane_admin`` names the results database's cluster: another system identifier, no marker row."""
    other = platform.results_db.cluster()
    conn = json.loads(os.environ["AIRFLOW_CONN_CONTROLPLANE_ADMIN"])
    monkeypatch.setenv("AIRFLOW_CONN_CONTROLPLANE_ADMIN", json.dumps(
        {**conn, "host": other.host, "port": other.port, "schema": "rehearsal", "extra": {}}))
    return other


@pytest.mark.parametrize(("dag_id", "conf"), DISRUPTIVE_DRILLS, ids=[d for d, _ in DISRUPTIVE_DRILLS])
def test_every_disruptive_drill_refuses_a_database_of_another_identity_before_any_fault(platform, admin_points_elsewhere,
                                                                                         dag_id, conf):
    recorded = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])["drill_targets"]["controlplane_db"]
    services = {name: platform.service(name).pid for name in ("api", "scheduler", "reconciler")}
    dag_run = run_dag(dag_id, conf)
    report = report_of(dag_run)
    steps = {s["name"]: s for s in report["steps"]}
    guard = steps["guard_drill_environment"]
    assert str(dag_run.state) == "failed" and report["status"] == "aborted"
    assert (guard["status"], guard["kind"]) == ("failed", "refused")
    other = admin_points_elsewhere
    assert guard["detail"].startswith(
        f"TargetMismatch: refusing to harm the control-plane database at {other.address} (database rehearsal): it is not "
        "the drill environment's recorded target (marker none, system identifier ")
    assert guard["detail"].endswith(f"found; marker {recorded['marker']}, system identifier "
                                    f"{recorded['system_identifier']} recorded by 'sandbox')")
    fault = next(name for name in steps if name.startswith("inject_") or name.startswith("volume_restore.restore"))
    assert steps[fault]["status"] in ("upstream_failed", "skipped", "not_run"), steps[fault]
    now = Sandbox(platform.dir)  # nothing was harmed
    assert accepts_writes(now.endpoint(now.primary, "admin").with_(dbname="postgres"))[0]
    assert {name: now.service(name).pid for name in services} == services
    assert now.snapshot_store.primary_exists()


def test_a_fault_checks_what_it_is_about_to_harm_even_after_its_guard(platform):
    """The corruption fault handed a guard record naming another database refuses it by identity (the results
    database is untouched), and the store-loss fault refuses a bucket without the recorded tag."""
    from rehearsal.drills.targets import TargetMismatch
    from rehearsal.postgres.connection import connect
    from rehearsal_airflow.faults.control_plane import InjectCorruptionOperator
    from tests.operators.test_control_plane_operators import run

    other = platform.results_db.cluster()
    server = platform.results_db.endpoint().with_(dbname="postgres")
    with connect(server) as conn:  # a database of the same name on another server: only its identity tells them apart
        conn.execute("CREATE DATABASE controlplane")
    try:
        result, step = run(InjectCorruptionOperator(task_id="inject_corruption", guard={"primary": other.address}))
        assert isinstance(result, TargetMismatch) and step["kind"] == "refused"
        assert str(result).startswith(f"refusing to harm the control-plane database at {other.address} (database "
                                      "controlplane): it is not the drill environment's recorded target (marker none, ")
        with connect(server.with_(dbname="controlplane")) as conn:  # nothing was run there
            assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0] == 0
    finally:
        with connect(server) as conn:
            conn.execute("DROP DATABASE controlplane")


def test_a_store_loss_fault_refuses_a_bucket_that_is_not_the_recorded_store(platform, monkeypatch):
    from rehearsal.drills.targets import TargetMismatch
    from rehearsal_airflow.faults.snapshot_store import InjectSnapshotStoreLossOperator
    from tests.operators.test_control_plane_operators import run

    env = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])
    index_backup = env["snapshot_index_backup_bucket"]
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", json.dumps({**env, "snapshot_bucket": index_backup}))
    result, step = run(InjectSnapshotStoreLossOperator(task_id="inject_snapshot_store_loss", guard={}))
    assert isinstance(result, TargetMismatch) and step["kind"] == "refused"
    marker = env["drill_targets"]["snapshot_store"]["marker"]
    assert str(result) == (f"refusing to harm the snapshot store at s3://{index_backup}: it is not the drill environment's "
                           f"recorded target (bucket {index_backup}, marker none found; bucket {env['snapshot_bucket']}, "
                           f"marker {marker} recorded by 'sandbox')")
    assert next(Sandbox(platform.dir).snapshot_store.index_backup_store().index_entries(), None) is not None


def test_scenario_d_rehearsed_outside_a_drill_environment_is_refused(platform, monkeypatch):
    env = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", json.dumps({**env, "name": "production-like",
                                                                         "drill_environment": False}))
    dag_run = run_dag("dr_scenario_d_snapshot_store_loss", {"mode": "drill", "approve": "auto"})
    report = report_of(dag_run)
    steps = {s["name"]: s for s in report["steps"]}
    first = steps["scenario_d.confirm_blast_radius"]
    assert str(dag_run.state) == "failed" and (first["status"], first["kind"]) == ("failed", "refused")
    assert first["detail"] == ("PreconditionFailed: refusing to rehearse Scenario D in drill mode (it rebuilds the snapshot "
                               "store and changes its snapshot frequency): environment 'production-like' is not marked as "
                               "a drill environment (set drill_environment: true in the rehearsal_environment Variable "
                               "only for drill targets)")
    assert {steps[s]["status"] for s in ("scenario_d.raise_snapshot_frequency_if_healthy",
                                         "scenario_d.restore_snapshot_store")} <= {"upstream_failed", "skipped"}
