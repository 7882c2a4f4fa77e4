"""The sandbox's control plane and data plane against docs/control-plane-services.md, on the session's sandbox.

Every test leaves the services running, the API read-write, the reconciler at its default rate and no agent fault.
"""
from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from rehearsal.discovery import DiscoveryRecord, resolve_all
from rehearsal.environment import Environment
from rehearsal.postgres.connection import connect
from rehearsal_sandbox.platform import Sandbox
from rehearsal_sandbox.provisioner import SandboxProvisioner
from rehearsal_sandbox.services.common import call

pytestmark = pytest.mark.sandbox


@pytest.fixture
def services(sandbox):
    """The connection's extra, as runbook operators read it."""
    return json.loads(os.environ["AIRFLOW_CONN_CONTROLPLANE_SERVICES"])["extra"]


@pytest.fixture
def provisioner(sandbox):
    return SandboxProvisioner(Environment.from_mapping(json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])))


def agents(sandbox, services) -> list[str]:
    record = DiscoveryRecord(zone_id=services["discovery_zone_id"], name=services["agents_record"])
    return [f"http://{host}:{port}" for host, port in resolve_all(sandbox.aws("route53"), record)]


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def log_lines(path: str, since: float, key: str) -> list[dict]:
    with open(path) as fh:
        return [line for line in map(json.loads, fh) if line[key] >= since]


def test_mutations_are_refused_naming_the_mode_while_reads_still_work(services):
    api = services["api"]
    try:
        for mode in ("read-only", "frozen"):
            assert call("PUT", f"{api}/v1/mode", {"mode": mode, "reason": "test"}) == (200, {"mode": mode})
            status, body = call("POST", f"{api}/v1/apps/1/scale", {"replicas": 2, "request_id": uuid.uuid4().hex})
            assert (status, body) == (503, {"error": f"mutations refused: API is {mode}", "mode": mode})
            status, body = call("GET", f"{api}/v1/apps")
            assert status == 200 and len(body["apps"]) >= 100
            assert call("GET", f"{api}/v1/apps/1")[0] == 200
            assert call("GET", f"{api}/v1/mode")[1]["mode"] == mode
            assert call("GET", f"{api}/healthz")[1]["mode"] == mode
        assert call("PUT", f"{api}/v1/mode", {"mode": "sideways"})[0] == 400
    finally:
        call("PUT", f"{api}/v1/mode", {"mode": "read-write", "reason": "test done"})
    assert call("GET", f"{api}/v1/apps/999999")[1] == {"error": "app 999999 not found"}
    assert call("POST", f"{api}/v1/apps/1/scale", {"replicas": 11, "request_id": "x"})[0] == 400


def test_a_request_id_is_applied_once_and_its_first_result_given_again(sandbox, services):
    api, request_id = services["api"], f"test-{uuid.uuid4()}"
    before = call("GET", f"{api}/v1/apps/5")[1]
    status, first = call("PATCH", f"{api}/v1/apps/5/config", {"config": {"feature": "on"}, "request_id": request_id})
    assert status == 200 and first["generation"] == before["generation"] + 1 and first["action"] == "update_config"
    assert call("PATCH", f"{api}/v1/apps/5/config", {"config": {"feature": "off"}, "request_id": request_id}) == (200, first)
    after = call("GET", f"{api}/v1/apps/5")[1]
    assert after["config"]["feature"] == "on" and after["generation"] >= first["generation"]
    deploy_id = f"test-{uuid.uuid4()}"
    status, deployed = call("POST", f"{api}/v1/apps/5/releases", {"image": "registry.internal/app:t1", "request_id": deploy_id})
    assert status == 201 and deployed["action"] == "deploy"
    assert call("POST", f"{api}/v1/apps/5/releases", {"image": "registry.internal/app:t1", "request_id": deploy_id}) == (200, deployed)
    with connect(sandbox.endpoint(sandbox.primary)) as conn:
        rows = conn.execute("SELECT actor, action, detail FROM audit_log WHERE detail::jsonb->>'request_id' = %s", (request_id,)).fetchall()
    assert len(rows) == 1 and rows[0][:2] == ("api", "update_config")
    assert json.loads(rows[0][2])["payload"] == {"config": {"feature": "on"}}


def test_a_mutation_converges_to_every_placed_host_and_a_failing_agent_backs_off(sandbox, services):
    api, reconciler = services["api"], services["reconciler"]
    urls = agents(sandbox, services)
    names = {call("GET", f"{u}/healthz")[1]["hostname"]: u for u in urls}
    with connect(sandbox.endpoint(sandbox.primary)) as conn:
        app_id, hostname = conn.execute("""SELECT p.app_id, h.hostname FROM placements p JOIN hosts h ON h.id = p.host_id
                                            ORDER BY p.app_id DESC LIMIT 1""").fetchone()
    failing = names[hostname]
    assert call("PUT", f"{failing}/v1/faults", {"fail_desired": True})[0] == 200
    try:
        status, result = call("POST", f"{api}/v1/apps/{app_id}/releases",
                              {"image": "registry.internal/app:converge", "request_id": f"test-{uuid.uuid4()}"})
        assert status == 201

        def backing_off() -> dict | None:
            metrics = call("GET", f"{reconciler}/v1/metrics")[1]
            waiting = metrics["errors_last_30s"] > 0 and metrics["oldest_unconverged_seconds"] > 1.0
            return metrics if waiting else None

        metrics = wait_for(backing_off, 15, f"failed pushes to {hostname} and a change waiting for it")
        assert metrics["error_rate"] > 0 and metrics["queue_depth"] >= 1 and metrics["time_to_converge_seconds"] > 1.0
    finally:
        call("PUT", f"{failing}/v1/faults", {"fail_desired": False})

    def converged() -> bool:
        with connect(sandbox.endpoint(sandbox.primary)) as conn:
            placed = conn.execute("""SELECT h.hostname, p.slot FROM placements p JOIN hosts h ON h.id = p.host_id
                                      WHERE p.app_id = %s""", (app_id,)).fetchall()
        for host, slot in placed:
            status, body = call("GET", f"{names[host]}/apps/{app_id}/{slot}")
            if status != 200 or body["generation"] < result["generation"]:
                return False
        return bool(placed)

    wait_for(converged, 30, f"app {app_id} generation {result['generation']} on every placed host", interval=0.2)
    metrics = call("GET", f"{reconciler}/v1/metrics")[1]
    assert metrics["converged_changes_last_300s"] >= 1
    assert metrics["time_to_converge_seconds"] > 1.0  # this change waited out a back-off
    assert call("GET", f"{reconciler}/healthz") == (200, {"status": "ok", "rate": 5.0, "paused": False})


def test_agents_keep_serving_while_the_control_plane_is_killed_and_it_comes_back(sandbox, services, provisioner):
    urls = agents(sandbox, services)
    instances = [(u, app_id, slot) for u in urls
                 for app_id, record in call("GET", f"{u}/v1/state")[1]["running"].items() for slot in record["slots"]]
    try:
        killed = provisioner.kill_services(["api", "scheduler", "reconciler"])
        assert set(killed["killed"]) == {"api", "scheduler", "reconciler"} and killed["killed_at"] <= time.time()
        assert not any(provisioner.service_running(name) for name in ("api", "scheduler", "reconciler"))
        for url, app_id, slot in instances[::7]:
            status, body = call("GET", f"{url}/apps/{app_id}/{slot}")
            assert status == 200 and body["slot"] == slot
        probe_log = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])["probe_log"]
        probes = wait_for(lambda: [p for p in log_lines(probe_log, killed["killed_at"], "t") if p["api"] != "ok"],
                          5, "a probe round without the API")
        assert probes[-1]["ok"] == probes[-1]["endpoints"] > 0
    finally:
        for name in ("api", "scheduler", "reconciler"):
            provisioner.start_service(name)
    assert all(provisioner.service_running(name) for name in ("api", "scheduler", "reconciler"))
    assert provisioner.start_service("api")[0].startswith("api already runs")


def test_the_evidence_logs_show_probe_rounds_and_acknowledged_writes():
    environment = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])
    since = time.time() - 30
    rounds = wait_for(lambda: [r for r in log_lines(environment["probe_log"], since, "t") if r["endpoints"]], 15, "probe rounds")
    assert set(rounds[-1]) == {"t", "endpoints", "ok", "failed", "api", "api_mode"}
    assert rounds[-1]["endpoints"] >= 100
    writes = wait_for(lambda: log_lines(environment["load_log"], since, "t_sent"), 15, "attempted writes")
    acked = wait_for(lambda: [w for w in log_lines(environment["load_log"], since, "t_sent") if w["t_ack"] is not None],
                     15, "acknowledged writes")
    assert {w["action"] for w in writes} <= {"deploy", "scale", "update_config"}
    assert all(w["status"] in (200, 201) and w["generation"] for w in acked)


def test_bulk_updates_and_dropped_tables_are_audited(sandbox):
    table = f"throwaway_{uuid.uuid4().hex[:8]}"
    with connect(sandbox.endpoint(sandbox.primary), autocommit=False) as conn:
        n = conn.execute("UPDATE hosts SET status = status").rowcount
        row = conn.execute("SELECT actor, detail FROM audit_log WHERE action = 'bulk_update' ORDER BY id DESC LIMIT 1").fetchone()
        assert row[0] == "controlplane" and json.loads(row[1]) == {"table": "hosts", "rows": n}
        conn.execute("UPDATE hosts SET status = status WHERE id <= 10")
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action = 'bulk_update'").fetchone()[0] >= 1
        conn.rollback()
    with connect(sandbox.endpoint(sandbox.primary)) as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
        conn.execute(f"DROP TABLE {table}")
        row = conn.execute("SELECT actor, detail FROM audit_log WHERE action = 'drop_table' ORDER BY id DESC LIMIT 1").fetchone()
    assert row[0] == "controlplane" and json.loads(row[1]) == {"table": table}


def test_restore_environment_puts_every_service_back(sandbox, services, provisioner):
    urls = agents(sandbox, services)
    call("PUT", f"{services['api']}/v1/mode", {"mode": "frozen", "reason": "drill"})
    call("PUT", f"{services['reconciler']}/v1/rate", {"rate": 0})
    call("PUT", f"{urls[0]}/v1/faults", {"fail_desired": True})
    assert provisioner.stop_service("scheduler")[0].startswith("stopped scheduler")
    assert provisioner.stop_service("scheduler") == ["scheduler is not running"]
    done = provisioner.restore_environment()
    assert any(line.startswith("started scheduler") for line in done)
    assert "set the API's mode to read-write" in done and "set the reconciler's rate back to 5.0/s" in done
    assert any(line.startswith("cleared fault flags on ") for line in done)
    assert call("GET", f"{services['api']}/v1/mode")[1]["mode"] == "read-write"
    assert call("GET", f"{urls[0]}/v1/faults")[1]["faults"] == {"fail_desired": False}
    assert provisioner.start_service("api", mode="read-only")[-1] == "set the API's mode to read-only"
    assert provisioner.start_service("api", mode="read-write")[-1] == "set the API's mode to read-write"
    assert Sandbox(sandbox.dir).is_up()
