"""dr_backup_verify, whole runs against the sandbox: verified and restore-tested, nothing leaked when the
restore fails half-way, and working on a sandbox that was just brought up."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rehearsal.drills.primary_loss import run_key
from rehearsal.environment import Environment
from rehearsal.errors import RestoreError
from rehearsal.postgres.cluster import LocalCluster, port_is_listening
from rehearsal_sandbox.platform import Sandbox, read_env_file
from tests.e2e.test_drill_primary_loss import report_of, run_dag
from tests.helpers import leftovers, source_fingerprint

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
DAG_ID = "dr_backup_verify"
STEPS = ["verify_base_backup", "verify_logical_dump", "prepare_scratch_area", "restore_scratch_copy",
         "validate_scratch_copy", "destroy_scratch_copies"]


def environment() -> Environment:
    return Environment.from_mapping(json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"]))


def test_new_backups_are_verified_and_restore_tested(platform):
    dag_run = run_dag(DAG_ID, {})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    names = {c["name"] for c in report["checks"]}
    assert {"sha256:base.tar", "pg_verifybackup", "wal_continuity", "pg_restore_list", "schema_version"} <= names
    assert report["resources_cleaned"]


def test_a_failed_restore_inside_dr_backup_verify_leaves_no_cluster_process_or_port_behind(platform, monkeypatch):
    import rehearsal.postgres.restore as restore

    scratch_root = Path(environment().scratch_root)
    if scratch_root.is_dir() and not any(scratch_root.iterdir()):
        scratch_root.rmdir()  # the operators create it themselves: they must not rely on the sandbox
    started: list[dict] = []

    def fail_after_start(dest: LocalCluster, admin, timeout: float) -> None:
        # dag.test() runs every task in this process, so the restore calls this, after dest.start().
        started.append({"cluster": dest, "running": dest.is_running(), "listening": port_is_listening(dest.port)})
        raise RestoreError(f"injected by the test: {dest.name} on port {dest.port} never left recovery")

    monkeypatch.setattr(restore, "_wait_promoted", fail_after_start)
    try:
        dag_run = run_dag(DAG_ID, {})
        report = report_of(dag_run)
        assert started, "the patched restore step did not run in this process"
        assert all(s["running"] and s["listening"] for s in started), "the restore must fail after its cluster started"
        cluster: LocalCluster = started[-1]["cluster"]

        assert str(dag_run.state) == "failed"
        assert report["status"] == "failed"
        reason = f"restore_scratch_copy: RestoreError: injected by the test: {cluster.name} on port {cluster.port}"
        assert reason in report["failure"]
        statuses = {s["name"]: s["status"] for s in report["steps"]}
        run_dir = scratch_root / run_key(DAG_ID, dag_run.run_id)
        assert cluster.data_dir.parent == run_dir
        left = {"teardown": statuses.get("destroy_scratch_copies"), "leftovers": leftovers(Sandbox(platform.dir)),
                "run_dir_exists": run_dir.exists(), "server_running": cluster.is_running(),
                "port_listening": port_is_listening(cluster.port)}
        assert left == {"teardown": "success", "leftovers": {"processes": [], "scratch": []}, "run_dir_exists": False,
                        "server_running": False, "port_listening": False}
        assert f"cluster:{cluster.name}@127.0.0.1:{cluster.port}" in report["resources_cleaned"]

        order = [s["name"] for s in report["steps"]]
        assert sorted(order) == sorted(STEPS)
        assert [name for name in order if name in STEPS[2:]] == STEPS[2:], order
        assert (statuses["prepare_scratch_area"], statuses["restore_scratch_copy"], statuses["validate_scratch_copy"]) == (
            "success", "failed", "upstream_failed")
    finally:  # whatever failed above, leave the session's sandbox as clean as the teardown should have
        for seen in started:
            seen["cluster"].destroy()
        for seen in started[-1:]:
            shutil.rmtree(seen["cluster"].data_dir.parent, ignore_errors=True)


def test_sandbox_down_then_up_then_dr_backup_verify_passes(sandbox_session, airflow_db):
    """`make sandbox-down && make sandbox-up && make run DAG=dr_backup_verify`, as a new user would.

    Last in this module: it rebuilds the session's sandbox (new ports, passwords and backups), and reloads
    the env file, so the fixtures of later tests (which re-read the sandbox) see the new one."""
    sb = sandbox_session
    sb.reload()  # drills change the topology: down() must see today's clusters
    runtime = sb.runtime
    sb.down()
    shutil.rmtree(runtime / "scratch", ignore_errors=True)
    sb.up(scale=float(os.environ["SANDBOX_SCALE"]), archive_timeout=5)
    os.environ.update(read_env_file(sb.dir / "env"))  # as conftest's load_env_file: new ports and passwords
    assert sb.is_up(), sb.status()
    fingerprint = source_fingerprint(sb.store())

    dag_run = run_dag(DAG_ID, {})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert report["status"] == "passed"
    statuses = {s["name"]: s["status"] for s in report["steps"]}
    assert all(statuses[step] == "success" for step in STEPS), statuses
    now = Sandbox(sb.dir)
    assert now.is_up(), now.status()
    assert leftovers(now) == {"processes": [], "scratch": []}
    assert {k: v for k, v in source_fingerprint(now.store()).items() if k in fingerprint} == fingerprint
