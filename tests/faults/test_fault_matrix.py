"""The fault matrix: things going wrong in the middle. Each case asserts a clear failure naming its
cause, the source backups byte-identical, and nothing left behind (clusters, processes, scratch
directories, results rows marked in progress), with the sandbox whole for the next drill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rehearsal.discovery import point_at
from rehearsal.postgres.connection import connect
from tests.e2e.test_drill_primary_loss import DRILL, report_of, run_dag

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]
REPO = Path(__file__).resolve().parents[2]


RUNBOOK = "postgres_failover"
# One failing step per state the teardown must handle: before the fault; the primary gone and nothing recovered; a
# restore that failed half-way; a restored copy not yet switched to; production switched; the measurement; a scratch
# copy (non-disruptive). The steps left out fail in one of those states (the promotion as assess does, archiving as
# validation does, the rebuild after the switch), through the same frame and the same teardown.
STEP_FAILURES = [
    ("disruptive", "auto", "inject_primary_loss"),
    ("disruptive", "auto", f"{RUNBOOK}.assess_cluster"),
    ("disruptive", "pitr", f"{RUNBOOK}.recover_database"),  # the restore
    ("disruptive", "pitr", f"{RUNBOOK}.validate_recovered_database"),
    ("disruptive", "auto", f"{RUNBOOK}.switch_service_discovery"),
    ("disruptive", "auto", "measure_rto_rpo"),
    ("non_disruptive", "auto", f"{RUNBOOK}.recover_database"),
]


@pytest.mark.parametrize(("mode", "path", "failing_step"), STEP_FAILURES)
def test_a_failure_at_any_step_is_reported_and_torn_down(platform, monkeypatch, mode, path, failing_step):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[DRILL]
    operator_class = type(dag.get_task(failing_step))

    def injected(self, context):
        if self.task_id == failing_step:
            raise RuntimeError(f"injected failure at {failing_step}")
        return original(self, context)

    original = operator_class.run_step
    monkeypatch.setattr(operator_class, "run_step", injected)
    dag_run = run_dag(DRILL, {"mode": mode, "path": path})
    assert str(dag_run.state) == "failed"
    report = report_of(dag_run)
    assert report["status"] == "failed"
    assert f"{failing_step}: RuntimeError: injected failure at {failing_step}" in report["failure"]
    steps = {s["name"]: s["status"] for s in report["steps"]}
    assert steps[failing_step] == "failed" and steps["restore_drill_environment"] == "success"
    kinds = {s["name"]: s["kind"] for s in report["steps"]}
    assert kinds[failing_step] == "error"  # a RuntimeError is no domain kind: refused, timed out... are named


def test_a_restore_killed_mid_way_then_retried_converges(platform, tmp_path):
    runtime = Path(platform.runtime)
    script = tmp_path / "restore.py"
    script.write_text(f"""
import sys
from pathlib import Path
from rehearsal_sandbox.platform import Sandbox
from rehearsal.postgres.cluster import LocalCluster
from rehearsal.postgres.restore import RecoveryTarget, restore_pitr
sb = Sandbox(Path({str(platform.dir)!r}))
dest = LocalCluster("killed-restore", Path({str(runtime / 'scratch' / 'fault-kill')!r}) / "killed-restore", int(sys.argv[1]))
print(restore_pitr(sb.store(), RecoveryTarget(), dest, [(sb.primary.host, sb.primary.port)]).to_dict())
""")
    from rehearsal.postgres.cluster import LocalCluster, free_port

    port = free_port()
    dest = LocalCluster("killed-restore", runtime / "scratch" / "fault-kill" / "killed-restore", port)
    proc = subprocess.Popen([sys.executable, str(script), str(port)], env=os.environ.copy())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (dest.data_dir / "PG_VERSION").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-way: the base backup is being unpacked
    proc.wait()
    assert dest.data_dir.exists(), "the kill came too late to leave leftovers"
    from rehearsal.postgres.restore import RecoveryTarget, restore_pitr

    try:
        result = restore_pitr(platform.store(), RecoveryTarget(), dest, [(platform.primary.host, platform.primary.port)])
        assert not result.reused and result.port == port
        with connect(platform.endpoint(platform.primary).with_(host=dest.host, port=port)) as conn:
            assert conn.execute("SELECT count(*) FROM orgs").fetchone()[0] > 0
    finally:
        dest.destroy()
        import shutil

        shutil.rmtree(dest.data_dir.parent, ignore_errors=True)


def test_a_switch_interrupted_after_the_record_changed_is_rerun_once(platform):
    route53, record = platform.aws("route53"), platform.discovery()
    host, port = platform.primary.host, platform.primary.port
    # A first attempt changed the record and died before confirming; the rerun finds it done.
    assert point_at(route53, record, host, port) is False
    records = [r for r in route53.list_resource_record_sets(HostedZoneId=record.zone_id)["ResourceRecordSets"]
               if r["Type"] == "SRV" and r["Name"] == record.fqdn]  # the replica record is another SRV record
    assert len(records) == 1 and records[0]["ResourceRecords"] == [{"Value": f"0 0 {port} {host}."}]


def test_the_heartbeat_connection_cut_mid_drill_still_measures_rto_and_rpo(platform):
    admin = platform.endpoint(platform.primary, "admin").with_(dbname="postgres")
    cuts = []

    def cut() -> None:
        for _ in range(3):
            try:
                with connect(admin, connect_timeout=1) as conn:
                    cuts.append(conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                             "WHERE application_name = 'heartbeat'").fetchone()[0])
            except Exception:  # noqa: BLE001 - the primary may already be gone: that is the drill
                return
            time.sleep(0.7)

    cutter = threading.Thread(target=cut)
    cutter.start()
    dag_run = run_dag(DRILL, {"mode": "disruptive", "path": "auto"})
    cutter.join()
    report = report_of(dag_run)
    assert sum(cuts) >= 1, "the writer's connection was never cut"
    assert str(dag_run.state) == "success", report.get("failure")
    assert report["measured_rpo_seconds"] <= 1.0
    assert report["measured_rto_seconds"] == pytest.approx(
        report["evidence"]["first_ack_after_recovery"]["acked_at"] - report["evidence"]["fault_at"])
    log = Path(json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])["heartbeat_log"]).read_text()
    assert "terminating connection due to administrator command" in log


@pytest.mark.parametrize("conf", [
    {"mode": "disruptive; rm -rf /", "path": "auto"},
    {"mode": "non_disruptive", "path": "pitr'; DROP TABLE orgs; --"},
])
def test_form_values_with_shell_or_sql_metacharacters_are_refused(platform, conf):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    dag = DagBag(dag_folder=str(REPO / "dags")).dags[DRILL]
    dag.deadline = None
    with pytest.raises(ParamValidationError, match="is not one of"):
        dag.test(run_conf=conf)
    with connect(platform.endpoint(platform.primary)) as conn:
        assert conn.execute("SELECT count(*) FROM orgs").fetchone()[0] > 0
