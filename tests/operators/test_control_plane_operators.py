"""Control-plane operators on bad input, each failing with its named reason: an API that does not answer, a freeze
the API does not honour, a drift item that cannot be repaired."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rehearsal.errors import RehearsalError
from rehearsal.postgres.cluster import free_port
from rehearsal.runbooks.control_plane import FreezeNotConfirmed
from rehearsal.runbooks.corruption import DriftNotRepaired
from rehearsal.services import ServiceUnreachable
from tests.operators.test_postgres_restore_rds import RecordingTaskInstance


def run(operator) -> tuple[object, dict]:
    ti = RecordingTaskInstance()
    try:
        result = operator.execute({"ti": ti, "run_id": "manual__test", "dag": None})
    except RehearsalError as exc:
        result = exc
    return result, ti.xcom["step"]


class CarelessApi(BaseHTTPRequestHandler):
    """Says it is frozen and takes every write anyway."""

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        if self.path == "/v1/apps":
            return self._answer(200, {"apps": [{"id": 7, "config": {}}]})
        return self._answer(200, {"status": "ok", "mode": "frozen"})

    def do_PUT(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        return self._answer(200, {"mode": "frozen"})

    def do_PATCH(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        return self._answer(200, {"request_id": "x", "app_id": 7, "generation": 12})

    def log_message(self, *args):
        pass


@pytest.fixture
def services_at(monkeypatch):
    def point(api_url: str, canary_app: str | None = "7") -> None:
        extra = {"api": api_url, "scheduler": api_url, "reconciler": api_url}
        monkeypatch.setenv("AIRFLOW_CONN_CONTROLPLANE_SERVICES", json.dumps(
            {"conn_type": "http", "extra": {**extra, **({"canary_app": canary_app} if canary_app else {})}}))
    return point


def test_an_api_that_does_not_answer_is_named(services_at):
    from rehearsal_airflow.operators.control_plane import FreezeMutationsOperator

    port = free_port()
    services_at(f"http://127.0.0.1:{port}")
    error, step = run(FreezeMutationsOperator(task_id="freeze_mutations"))
    assert isinstance(error, ServiceUnreachable)
    assert step["status"] == "failed" and step["kind"] == "refused"
    assert step["detail"].startswith(f"ServiceUnreachable: control-plane API at http://127.0.0.1:{port}/v1/mode did not answer")


def test_a_freeze_the_api_does_not_honour_stops_the_run(services_at):
    from rehearsal_airflow.operators.control_plane import FreezeMutationsOperator

    server = ThreadingHTTPServer(("127.0.0.1", 0), CarelessApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        services_at(f"http://127.0.0.1:{server.server_port}")
        error, step = run(FreezeMutationsOperator(task_id="freeze_mutations"))
    finally:
        server.shutdown()
    assert isinstance(error, FreezeNotConfirmed)
    assert step["kind"] == "refused"
    assert "freeze not confirmed: a mutation probe was ACCEPTED (HTTP 200) while the API should be frozen" in step["detail"]


@pytest.mark.sandbox
def test_a_drift_item_that_cannot_be_repaired_fails_the_run_by_name(sandbox):
    from rehearsal_airflow.operators.corruption import RepairDriftOperator

    captured = {"writes": [{"request_id": "lost-write-of-a-deleted-app", "app_id": 999999, "action": "update_config",
                            "payload": {"config": {"x": 1}}, "actor": "api", "created_at": "2026-11-29T03:00:00+00:00",
                            "audit_id": 1}]}
    error, step = run(RepairDriftOperator(task_id="repair_drift", captured=captured))
    assert isinstance(error, DriftNotRepaired)
    assert step["kind"] == "recovery_failed"
    assert ("1 drift item(s) not repaired: update_config app 999999 (lost-write-of-a-deleted-app, acknowledged "
            "2026-11-29T03:00:00+00:00): failed (HTTP 404 app 999999 not found)") in step["detail"]


def test_a_switch_to_the_workers_own_address_or_to_no_known_host_is_refused_by_name(sandbox):
    """Every client resolves the record: pointing it at the worker's loopback, or at an address that is no database
    host of the platform, would be an outage the runbook caused. Refused, naming the address; the record stays."""
    from rehearsal.discovery import resolve
    from rehearsal.errors import PreconditionFailed
    from rehearsal_airflow.operators.service_discovery import ServiceDiscoverySwitchOperator

    port = sandbox.primary.port
    worker = f"127.0.0.1:{port}"
    result, step = run(ServiceDiscoverySwitchOperator(task_id="switch_service_discovery", recovery={"address": worker}))
    assert isinstance(result, PreconditionFailed) and step["kind"] == "refused"
    assert str(result) == (f"refusing to point service discovery at {worker}: that is the Airflow worker's own address, "
                           "and every client that resolves it would reach its own machine, not the database")
    nobody = f"{sandbox.hosts.block}.1.250:{port}"
    result, step = run(ServiceDiscoverySwitchOperator(task_id="switch_service_discovery", recovery={"address": nobody}))
    assert isinstance(result, PreconditionFailed)
    assert str(result).startswith(f"refusing to point service discovery at {nobody}: it is not a known database host "
                                  f"(members and provisioned hosts: {sandbox.primary.address}, ")
    assert resolve(sandbox.aws("route53"), sandbox.discovery()) == (sandbox.primary.host, port)


def test_writes_not_captured_from_an_unreadable_audit_log_are_a_degraded_item(monkeypatch):
    """The damaged primary cannot be read: the run goes on (the restore does not need it), and the report will say
    that the writes since the corruption were not captured, as an item to act on."""
    from rehearsal_airflow.operators.corruption import CaptureWritesSinceOperator

    monkeypatch.setenv("AIRFLOW_CONN_CONTROLPLANE_ADMIN", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": free_port(), "login": "postgres", "password": "x",
         "schema": "controlplane"}))
    point = {"time": "2026-12-01T03:12:00.001+00:00", "recovery_target": "2026-12-01T03:12:00+00:00", "how": "given"}
    result, step = run(CaptureWritesSinceOperator(task_id="keep_writes_since_corruption", point=point))
    assert step["status"] == "success" and result["count"] == 0 and result["readable"] is False
    [item] = result["degraded"]
    assert item["item"] == "writes since the corruption not captured"
    assert item["what_to_do"].startswith("the damaged cluster's audit log could not be read (")
    assert "mutations acknowledged after 2026-12-01T03:12:00+00:00 are lost unless clients send them again" in item["what_to_do"]


def test_a_snapshot_frequency_that_cannot_be_put_back_is_a_degraded_item(monkeypatch):
    import os

    from rehearsal_airflow.operators.snapshot_store import PutSnapshotFrequencyBackOperator

    env = json.loads(os.environ.get("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", "{}"))
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", json.dumps({**env, "provisioner": "none"}))
    result, step = run(PutSnapshotFrequencyBackOperator(task_id="put_snapshot_frequency_back",
                                                        raised={"interval_seconds": 60.0, "interval_before": 300.0}))
    [item] = result["degraded"]
    assert item["item"] == "snapshot frequency still raised"
    assert item["what_to_do"].startswith("snapshots are still taken every 60s (it was 300s): set the interval back by hand")


def test_a_health_check_that_cannot_find_the_primary_fails_naming_why_and_never_chooses_failover(monkeypatch):
    import os

    from rehearsal.errors import PreconditionFailed
    from rehearsal_airflow.operators.control_plane import CheckPostgresHealthOperator

    conn = json.loads(os.environ.get("AIRFLOW_CONN_CONTROLPLANE_ADMIN") or json.dumps(
        {"conn_type": "postgres", "host": "db", "port": 5432, "login": "postgres", "schema": "controlplane",
         "extra": {}}))
    monkeypatch.setenv("AIRFLOW_CONN_CONTROLPLANE_ADMIN", json.dumps(
        {**conn, "extra": {"discovery_zone_id": "ZNOSUCHZONE", "discovery_record": "_postgresql._tcp.nowhere.invalid."}}))
    check = CheckPostgresHealthOperator(task_id="validate_postgres_health", healthy_task_id="postgres_healthy",
                                        failover_group_id="postgres_failover")
    result, step = run(check)
    assert isinstance(result, PreconditionFailed) and (step["status"], step["kind"]) == ("failed", "refused")
    assert str(result).startswith("cannot check Postgres health: where the primary is cannot be read (")
    assert str(result).endswith("a check that did not run never chooses failover: fix discovery, or run the failover "
                                "runbook by hand")


def test_a_probe_with_no_canary_app_configured_is_refused_naming_the_setting(services_at):
    """Probes write only to the platform's own canary app: with none configured, nothing is written anywhere."""
    from rehearsal.errors import PreconditionFailed
    from rehearsal_airflow.operators.control_plane import NO_CANARY, FreezeMutationsOperator

    class RecordingApi(CarelessApi):
        writes: list[str] = []

        def do_PATCH(self):  # noqa: N802
            RecordingApi.writes.append(self.path)
            return super().do_PATCH()

    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingApi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        services_at(f"http://127.0.0.1:{server.server_port}", canary_app=None)
        error, step = run(FreezeMutationsOperator(task_id="freeze_mutations"))
    finally:
        server.shutdown()
    assert isinstance(error, PreconditionFailed) and str(error) == NO_CANARY
    assert "set canary_app (an app id) in the controlplane_services connection's extra" in step["detail"]
    assert RecordingApi.writes == []


def test_a_drill_step_whose_stop_flag_cannot_be_read_refuses_to_run(monkeypatch):
    """The results database is unreachable mid-drill: the drill cannot be told to stop, so its next step does not run
    (fail closed); a step that puts the environment back still does."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from rehearsal_airflow.operators.base import DrillStepOperator
    from tests.operators.test_postgres_restore_rds import RecordingTaskInstance

    ran = []

    class Step(DrillStepOperator):
        def run_step(self, context):
            ran.append(self.task_id)
            return {"detail": "ran"}

    class Teardown(Step):
        runs_after_abort = True

    monkeypatch.setenv("AIRFLOW_CONN_REHEARSAL_RESULTS", json.dumps(
        {"conn_type": "postgres", "host": "127.0.0.1", "port": free_port(), "login": "postgres", "password": "x",
         "schema": "rehearsal"}))
    context = {"run_id": "manual__test", "dag": SimpleNamespace(dag_id="dr_drill_postgres_primary_loss"),
               "params": {"mode": "disruptive"}}
    ti = RecordingTaskInstance()
    step, teardown = Step(task_id="postgres_failover.recover_database"), Teardown(task_id="restore_drill_environment")
    for later in (step, teardown):  # later steps of the run (the guard, its first, already ran)
        later.upstream_task_ids.add("guard_drill_environment")
    with pytest.raises(AirflowFailException, match="the drill's stop flag and stop conditions cannot be read"):
        step.execute({**context, "ti": ti})
    assert ti.xcom["step"]["kind"] == "aborted" and ran == []
    teardown.execute({**context, "ti": RecordingTaskInstance()})
    assert ran == ["restore_drill_environment"]
