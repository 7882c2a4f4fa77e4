"""TrafficShiftOperator against a real local Route 53 (moto in server mode, a zone of our own) and two small edge
stand-ins on their own addresses: a shift in two steps, a target that fails our probes (refused, nothing shifted), a
change never INSYNC (a wrapped client: moto says INSYNC at once), probes failing after the shift (rolled back), a
second run (nothing changed), the failover pair flipped, and the deferred path through the trigger."""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from airflow.sdk.exceptions import TaskDeferred

from rehearsal.errors import RecoveryTimedOut, RehearsalError
from rehearsal.postgres.cluster import free_port
from rehearsal.traffic import ShiftRefused, ShiftRolledBack
from tests.operators.test_postgres_restore_rds import RecordingTaskInstance

TTL = 1
EAST, WEST = "us-east-1", "us-west-2"
FAST = {"probe_rounds": 2, "probe_interval": 0.02, "probe_timeout": 1.0, "poll_interval": 0.05, "insync_timeout": 5}


# ---------------------------------------------------------------------------------------------------- stand-ins
class EdgeStandIn:
    """One region's edge: ``/healthz``, ``/v1/routes`` and ``/apps/<id>`` (200 with ``X-Region``), or failing with
    ``failing`` as its reason."""

    def __init__(self, region: str, address: str, apps: tuple[str, ...] = ("1", "2", "3", "4")) -> None:
        self.region, self.apps, self.failing, self.requests = region, apps, None, []
        self.healthy_for: int | None = None  # fails (healthz 503) after this many /healthz answers
        edge = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the base class's name
                edge.requests.append(self.path)
                if self.path == "/v1/routes":
                    return self._answer(200, {"region": edge.region, "apps": {a: ["agent"] for a in edge.apps}})
                if self.path == "/healthz" and edge.healthy_for is not None:
                    edge.healthy_for -= 1
                    if edge.healthy_for < 0:
                        edge.failing = edge.failing or "went down between two steps"
                if edge.failing:
                    return self._answer(503 if self.path == "/healthz" else 502, {"error": edge.failing})
                if self.path == "/healthz":
                    return self._answer(200, {"region": edge.region, "apps": len(edge.apps)})
                if self.path.startswith("/apps/") and self.path[6:] in edge.apps:
                    return self._answer(200, {"app": self.path[6:]})
                return self._answer(502, {"error": f"no live agent of {edge.region} runs app {self.path[6:]}"})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-Region", edge.region)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.address, self.url = address, f"http://{address}:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class WrappedRoute53:
    """A real client, but ``get_change`` can stay PENDING (moto says INSYNC at once), and a change can break an edge
    the moment it is sent (a target that collapses once it takes traffic)."""

    def __init__(self, client, pending: bool = False, on_change=None) -> None:
        self.client, self.pending, self.on_change = client, pending, on_change
        self.changes: list[str] = []

    def change_resource_record_sets(self, **kwargs):
        answer = self.client.change_resource_record_sets(**kwargs)
        self.changes.append(answer["ChangeInfo"]["Id"])
        if self.on_change:
            self.on_change(len(self.changes))
        return answer

    def get_change(self, Id):  # noqa: N803 - boto3's name
        if self.pending:
            return {"ChangeInfo": {"Id": Id, "Status": "PENDING"}}
        return self.client.get_change(Id=Id)

    def __getattr__(self, name):
        return getattr(self.client, name)


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def moto_url():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def world(moto_url, monkeypatch):
    """A zone of our own with the weighted records (us-east-1 100, us-west-2 0) and the failover pair, each naming its
    region's edge stand-in; the edge and AWS connections pointing at them."""
    import boto3

    block = f"127.{200 + uuid.uuid4().int % 50}"
    edges = {EAST: EdgeStandIn(EAST, f"{block}.1.1"), WEST: EdgeStandIn(WEST, f"{block}.2.1")}
    route53 = boto3.client("route53", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="testing",
                           aws_secret_access_key="testing")
    zone = f"shift-{uuid.uuid4().hex[:8]}.internal."
    zone_id = route53.create_hosted_zone(Name=zone, CallerReference=uuid.uuid4().hex)["HostedZone"]["Id"].split("/")[-1]
    record, pair = f"apps.{zone}", f"apps-failover.{zone}"
    changes = []
    for region, edge in edges.items():
        value = [{"Value": edge.address}]
        changes += [{"Action": "CREATE", "ResourceRecordSet": {"Name": record, "Type": "A", "SetIdentifier": region,
                                                               "Weight": 100 if region == EAST else 0, "TTL": TTL,
                                                               "ResourceRecords": value}},
                    {"Action": "CREATE", "ResourceRecordSet": {"Name": pair, "Type": "A", "SetIdentifier": region,
                                                               "Failover": "PRIMARY" if region == EAST else "SECONDARY",
                                                               "TTL": TTL, "ResourceRecords": value}}]
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})
    monkeypatch.setenv("AIRFLOW_CONN_EDGE", json.dumps({"conn_type": "http", "extra": {
        "regions": {r: e.url for r, e in edges.items()}, "zone": zone, "record": record, "failover_record": pair}}))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {
        "endpoint_url": moto_url, "region_name": "us-east-1", "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing"}}))

    class World:
        pass

    w = World()
    w.edges, w.route53, w.zone_id, w.record, w.pair = edges, route53, zone_id, record, pair

    def weights(name: str = record) -> dict:
        sets = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
        return {s["SetIdentifier"]: s.get("Weight", s.get("Failover")) for s in sets if s["Name"] == name}

    w.weights = weights
    yield w
    for edge in edges.values():
        edge.close()


@pytest.fixture
def client_as(monkeypatch):
    """Hand the operator and its trigger a wrapped Route 53 client."""
    import rehearsal_airflow.hooks.route53 as hook

    real = hook.route53_client

    def wrap(**kwargs) -> WrappedRoute53:
        wrapped = WrappedRoute53(real(), **kwargs)
        monkeypatch.setattr(hook, "route53_client", lambda aws_conn_id="aws_default": wrapped)
        return wrapped
    return wrap


def shift(**kwargs):
    from rehearsal_airflow.operators.traffic_shift import TrafficShiftOperator

    return TrafficShiftOperator(task_id="shift_edge_traffic", **{"failed_region": EAST, "target_region": WEST,
                                                                 "deferrable": False, **FAST, **kwargs})


def run(operator) -> tuple[object, dict, RecordingTaskInstance]:
    ti = RecordingTaskInstance()
    try:
        result = operator.execute({"ti": ti, "run_id": "manual__test", "dag": None})
    except RehearsalError as exc:
        result = exc
    return result, ti.xcom["step"], ti


# ---------------------------------------------------------------------------------------------------- the tests
def test_a_shift_in_two_steps_waits_insync_and_the_ttl_probing_before_and_after(world):
    result, step, _ = run(shift(steps=[50, 100]))
    assert step["status"] == "success", step["detail"]
    assert world.weights() == {EAST: 0, WEST: 100}
    assert result["changed"] is True
    assert result["before"] == {EAST: 100, WEST: 0} and result["after"] == {EAST: 0, WEST: 100}
    assert [s["state"] for s in result["steps"]] == [{EAST: 50, WEST: 50}, {EAST: 0, WEST: 100}]
    assert len(result["change_ids"]) == 2 and result["ttl_seconds"] == TTL  # (moto reuses one change id per zone)
    for s in result["steps"]:
        assert s["status"] == "done" and s["probe_before"]["ok"] and s["probe_after"]["ok"]
        assert s["probe_before"]["passed"] == 2 * 5  # 2 rounds of /healthz and 4 apps (from the target's routes)
        assert s["timings"]["ttl_wait"] >= TTL and s["timings"]["insync_wait"] >= 0
        assert set(s["timings"]) == {"probe_before", "insync_wait", "ttl_wait", "probe_after"}
    assert not world.edges[EAST].requests  # the failed region's edge is never asked
    assert step["detail"].startswith(f"traffic shifted from {EAST} to {WEST} (weighted {world.record}) in 2 step(s): "
                                     "{us-east-1: 100, us-west-2: 0} -> {us-east-1: 0, us-west-2: 100}; step 1 ")


def test_running_it_again_changes_nothing_and_says_so(world, client_as):
    run(shift(steps="at_once"))
    wrapped = client_as()
    result, step, _ = run(shift(steps="at_once"))
    assert step["status"] == "success" and result["changed"] is False and wrapped.changes == []
    assert step["detail"] == (f"nothing to shift: {world.record} already is the target ({{us-east-1: 0, us-west-2: 100}}, "
                              f"{WEST} takes the traffic, {EAST} none); nothing was changed")


def test_a_target_failing_its_probes_is_refused_and_nothing_is_shifted(world, client_as):
    world.edges[WEST].failing = "no agent is known in us-west-2"
    wrapped = client_as()
    error, step, ti = run(shift(steps=[50, 100], probe_apps=["3"]))
    west = world.edges[WEST].url
    assert isinstance(error, ShiftRefused) and step["kind"] == "refused"
    assert str(error) == (
        f"refusing to shift traffic onto {WEST} (step 1 of 2): {WEST}'s edge at {west} failed 4 of our 4 probes: "
        f"round 1: GET {west}/healthz: HTTP 503 (no agent is known in us-west-2); round 1: GET {west}/apps/3: HTTP 502 "
        f"(no agent is known in us-west-2); round 2: GET {west}/healthz: HTTP 503 (no agent is known in us-west-2); "
        f"round 2: GET {west}/apps/3: HTTP 502 (no agent is known in us-west-2); nothing was changed")
    assert wrapped.changes == [] and world.weights() == {EAST: 100, WEST: 0}
    assert ti.xcom["shift"]["after"] == {EAST: 100, WEST: 0}


def test_an_edge_url_that_is_not_the_records_address_is_refused(world, monkeypatch):
    extra = json.loads(__import__("os").environ["AIRFLOW_CONN_EDGE"])["extra"]
    extra["regions"][WEST] = extra["regions"][WEST].replace(world.edges[WEST].address, "127.0.0.1")
    monkeypatch.setenv("AIRFLOW_CONN_EDGE", json.dumps({"conn_type": "http", "extra": extra}))
    error, step, _ = run(shift())
    assert isinstance(error, ShiftRefused)
    assert str(error).startswith(f"record {world.record} of {WEST} names address {world.edges[WEST].address}, but "
                                 f"{WEST}'s edge is at {extra['regions'][WEST]} (host 127.0.0.1)")
    assert world.weights() == {EAST: 100, WEST: 0}


def test_a_change_never_insync_times_out_naming_the_change_id(world, client_as):
    wrapped = client_as(pending=True)
    error, step, _ = run(shift(insync_timeout=0.3))
    (change_id,) = wrapped.changes
    assert isinstance(error, RecoveryTimedOut) and step["kind"] == "timed_out"
    assert str(error).startswith(f"Route 53 change {change_id} (step 1 of the shift to {WEST}) not INSYNC after 0.3s "
                                 "(last status PENDING); the records sent ({'us-east-1': 0, 'us-west-2': 100}) may be "
                                 "partly in effect, before the shift they were {'us-east-1': 100, 'us-west-2': 0}")


def test_probes_failing_after_the_shift_roll_it_back(world, client_as):
    def break_the_target(changes: int) -> None:
        if changes == 1:  # the first step's change: the target collapses once it takes traffic
            world.edges[WEST].failing = "every instance of app 1 in us-west-2 failed"
    wrapped = client_as(on_change=break_the_target)
    error, step, ti = run(shift(steps=[50, 100], probe_apps=["1"]))
    assert isinstance(error, ShiftRolledBack) and step["kind"] == "recovery_failed"
    first, back = wrapped.changes
    west = world.edges[WEST].url
    assert str(error).startswith(
        f"traffic shift onto {WEST} failed after step 1 ({{us-east-1: 50, us-west-2: 50}}, change {first}): after the "
        f"TTL ({TTL}s) {WEST}'s edge at {west} failed 4 of our 4 probes: round 1: GET {west}/healthz: HTTP 503")
    assert str(error).endswith(f"rolled back to the records found before ({{us-east-1: 100, us-west-2: 0}}, change {back} INSYNC)")
    assert world.weights() == {EAST: 100, WEST: 0}
    record = ti.xcom["shift"]
    assert record["rolled_back"]["change_id"] == back and [s["status"] for s in record["steps"]] == ["failed", "planned"]


def test_a_target_failing_before_the_second_step_undoes_the_first(world, client_as):
    world.edges[WEST].healthy_for = 4  # step 1's probes before and after (2 rounds each), then down
    wrapped = client_as()
    error, step, ti = run(shift(steps=[50, 100], probe_apps=["1"]))
    first, back = wrapped.changes
    west = world.edges[WEST].url
    assert isinstance(error, ShiftRolledBack)
    assert str(error).startswith(
        f"traffic shift onto {WEST} failed after step 1 ({{us-east-1: 50, us-west-2: 50}}, change {first}): refusing to "
        f"shift traffic onto {WEST} (step 2 of 2): {WEST}'s edge at {west} failed 4 of our 4 probes: round 1: GET "
        f"{west}/healthz: HTTP 503 (went down between two steps)")
    assert str(error).endswith(f"change {back} INSYNC)")
    assert world.weights() == {EAST: 100, WEST: 0}
    assert [s["status"] for s in ti.xcom["shift"]["steps"]] == ["done", "failed"]


def test_the_failover_pair_is_flipped(world):
    result, step, _ = run(shift(kind="failover"))
    assert step["status"] == "success", step["detail"]
    assert world.weights(world.pair) == {EAST: "SECONDARY", WEST: "PRIMARY"}
    assert result["before"] == {EAST: "PRIMARY", WEST: "SECONDARY"} and result["after"] == {EAST: "SECONDARY", WEST: "PRIMARY"}
    error, _, _ = run(shift(kind="failover", steps=[50, 100]))
    assert isinstance(error, ShiftRefused) and "a failover pair flips at once" in str(error)
    again, step, _ = run(shift(kind="failover"))
    assert again["changed"] is False and step["detail"].startswith(f"nothing to shift: {world.pair} already is the target")


# ---------------------------------------------------------------------------------------------------- deferred
def fire(trigger) -> dict:
    """The trigger's first event, as the triggerer would get it (rebuilt from its serialized form first)."""
    from importlib import import_module

    path, kwargs = trigger.serialize()
    module, name = path.rsplit(".", 1)
    rebuilt = getattr(import_module(module), name)(**json.loads(json.dumps(kwargs)))

    async def first():
        async for event in rebuilt.run():
            return event.payload
    return asyncio.run(first())


def drive(operator) -> tuple[object, list[tuple[str, dict]], RecordingTaskInstance]:
    """Run a deferrable operator as the task runner and the triggerer would: each deferral's trigger fired, its event
    handed to the method named, with the kwargs as the metadata database keeps them (JSON)."""
    ti = RecordingTaskInstance()
    context = {"ti": ti, "run_id": "manual__test", "dag": None}
    call, events = (lambda: operator.execute(context)), []
    while True:
        try:
            return call(), events, ti
        except RehearsalError as exc:
            return exc, events, ti
        except TaskDeferred as deferred:
            assert ti.xcom["step"]["status"] == "deferred"
            kwargs = json.loads(json.dumps(deferred.kwargs))
            events.append((deferred.method_name, fire(deferred.trigger)))

            def call(deferred=deferred, kwargs=kwargs, event=events[-1][1]):
                return getattr(operator, deferred.method_name)(context, event=event, **kwargs)


def test_deferred_the_shift_waits_in_the_trigger_step_by_step(world):
    result, events, ti = drive(shift(steps=[50, 100], deferrable=True))
    assert [(m, e["status"]) for m, e in events] == [("resume_after_insync", "insync")] * 2
    assert all(e["ttl_wait"] >= TTL for _m, e in events)
    assert world.weights() == {EAST: 0, WEST: 100}
    assert ti.xcom["step"]["status"] == "success" and result["after"] == {EAST: 0, WEST: 100}
    assert [s["timings"]["ttl_wait"] for s in result["steps"]] == [e["ttl_wait"] for _m, e in events]


def test_deferred_a_failing_target_is_rolled_back_through_the_trigger_too(world, client_as):
    wrapped = client_as(on_change=lambda n: setattr(world.edges[WEST], "failing", "down") if n == 1 else None)
    error, events, ti = drive(shift(steps="at_once", deferrable=True, probe_apps=["2"]))
    assert [m for m, _e in events] == ["resume_after_insync", "resume_after_rollback"]
    assert isinstance(error, ShiftRolledBack) and ti.xcom["step"]["kind"] == "recovery_failed"
    assert str(error).endswith(f"change {wrapped.changes[1]} INSYNC)")
    assert world.weights() == {EAST: 100, WEST: 0}


def test_the_trigger_times_out_naming_the_change_id(world, client_as):
    from rehearsal_airflow.triggers.route53 import Route53ChangeInSyncTrigger

    client_as(pending=True)
    event = fire(Route53ChangeInSyncTrigger("/change/C0PENDING", timeout=0.2, poll_interval=0.05, hold_seconds=TTL,
                                            what="step 1"))
    assert event == {"status": "timeout", "change_id": "/change/C0PENDING",
                     "message": "Route 53 change /change/C0PENDING (step 1) not INSYNC after 0.2s (last status PENDING)"}
    error, step, _ = run_resumed_with(event)
    assert isinstance(error, RecoveryTimedOut) and step["kind"] == "timed_out"
    assert str(error).startswith("Route 53 change /change/C0PENDING (step 1) not INSYNC after 0.2s (last status PENDING); "
                                 "the records sent")


def run_resumed_with(event: dict):
    """Resume a deferred shift (step 1 sent) with ``event``."""
    from rehearsal.traffic import ShiftRecord, StepRecord

    record = ShiftRecord("weighted", EAST, WEST, "Z", "apps.", before={EAST: 100, WEST: 0},
                         steps=[StepRecord(1, 100, {EAST: 0, WEST: 100}, change_id="/change/C0PENDING", status="sent")])
    ti = RecordingTaskInstance()
    try:
        result = shift(deferrable=True).resume_after_insync({"ti": ti, "run_id": "manual__test", "dag": None},
                                                            event=event, shift=record.to_dict())
    except RehearsalError as exc:
        result = exc
    return result, ti.xcom["step"], ti
