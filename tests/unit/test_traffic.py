"""The traffic shift's decisions, as plain functions: the record set read from Route 53's answer, the plan in steps
or at once, what refuses a shift, our probes' verdicts, the wait for INSYNC, and the record handed between steps."""
from __future__ import annotations

import pytest

from rehearsal.errors import RecoveryTimedOut
from rehearsal.traffic import (
    ProbeVerdict,
    ShiftRecord,
    ShiftRefused,
    StepRecord,
    parse_routing,
    parse_steps,
    probe_edge,
    rolled_back_message,
    sample_apps,
    shift_limitation,
    shift_plan,
    wait_insync,
)

NAME = "apps.rehearsal.internal."
FAILOVER = "apps-failover.rehearsal.internal."
EDGES = {"us-east-1": "http://127.9.1.1:8443", "us-west-2": "http://127.9.2.1:8443"}


def weighted(east: int = 100, west: int = 0, ttl: int = 5) -> list[dict]:
    return [{"Name": NAME, "Type": "A", "SetIdentifier": region, "Weight": weight, "TTL": ttl,
             "ResourceRecords": [{"Value": EDGES[region].split("//")[1].split(":")[0]}]}
            for region, weight in (("us-east-1", east), ("us-west-2", west))]


def failover(primary: str = "us-east-1", suffix: str = "") -> list[dict]:
    return [{"Name": FAILOVER, "Type": "A", "SetIdentifier": region + suffix, "TTL": 5, "HealthCheckId": f"hc-{region}",
             "Failover": "PRIMARY" if region == primary else "SECONDARY",
             "ResourceRecords": [{"Value": EDGES[region].split("//")[1].split(":")[0]}]}
            for region in ("us-east-1", "us-west-2")]


def routing(records: list[dict], kind: str = "weighted"):
    name = NAME if kind == "weighted" else FAILOVER
    other = [{"Name": "controlplane-db.rehearsal.internal.", "Type": "A", "TTL": 1, "ResourceRecords": [{"Value": "127.9.1.5"}]}]
    return parse_routing(records + other, "Z1", name, kind)


# ---------------------------------------------------------------------------------------------------- steps and plans
def test_steps_at_once_or_rising_to_100():
    assert parse_steps("at_once") == [100]
    assert parse_steps([50, 100]) == [50, 100]
    assert parse_steps("25, 50,100") == [25, 50, 100]
    assert parse_steps("[50, 100]") == [50, 100]  # a list rendered by a template
    for bad in ([50, 80], [50, 50, 100], [0, 100], "half"):
        with pytest.raises(ShiftRefused, match="traffic shift steps"):
            parse_steps(bad)
    with pytest.raises(ShiftRefused, match="a failover pair flips at once"):
        parse_steps([50, 100], kind="failover")


def test_a_weighted_shift_in_two_steps_then_nothing_left_to_do():
    current = routing(weighted(100, 0))
    plan = shift_plan(current, "us-east-1", "us-west-2", [50, 100])
    assert [(s.share, s.state) for s in plan] == [(50, {"us-east-1": 50, "us-west-2": 50}),
                                                 (100, {"us-east-1": 0, "us-west-2": 100})]
    assert shift_plan(routing(weighted(0, 100)), "us-east-1", "us-west-2", [50, 100]) == []


def test_a_half_done_shift_goes_on_from_where_the_records_are():
    plan = shift_plan(routing(weighted(50, 50)), "us-east-1", "us-west-2", [50, 100])
    assert [s.state for s in plan] == [{"us-east-1": 0, "us-west-2": 100}]


def test_every_weight_zero_gives_the_target_everything():
    plan = shift_plan(routing(weighted(0, 0)), "us-east-1", "us-west-2", [100])
    assert [s.state for s in plan] == [{"us-east-1": 0, "us-west-2": 100}]


def test_a_failover_pair_flips_once_and_then_is_left_alone():
    pair = routing(failover("us-east-1", suffix="-failover"), "failover")
    assert pair.state() == {"us-east-1": "PRIMARY", "us-west-2": "SECONDARY"}
    plan = shift_plan(pair, "us-east-1", "us-west-2", [100])
    assert [s.state for s in plan] == [{"us-east-1": "SECONDARY", "us-west-2": "PRIMARY"}]
    assert shift_plan(routing(failover("us-west-2"), "failover"), "us-east-1", "us-west-2", [100]) == []


def test_an_upsert_keeps_the_record_as_found_but_its_weight_or_role():
    pair = routing(failover(), "failover")
    changes = pair.changes_to({"us-east-1": "SECONDARY", "us-west-2": "PRIMARY"})
    assert [c["ResourceRecordSet"]["Failover"] for c in changes] == ["SECONDARY", "PRIMARY"]
    assert all(c["Action"] == "UPSERT" and c["ResourceRecordSet"]["HealthCheckId"].startswith("hc-") for c in changes)
    assert routing(weighted(50, 50)).changes_to({"us-east-1": 50, "us-west-2": 50}) == []


# ---------------------------------------------------------------------------------------------------- refusals
def test_a_missing_record_set_or_a_broken_pair_is_named():
    with pytest.raises(ShiftRefused, match=r"no weighted record set apps.rehearsal.internal. in zone Z1"):
        parse_routing([], "Z1", NAME, "weighted")
    both_primary = failover()
    both_primary[1]["Failover"] = "PRIMARY"
    with pytest.raises(ShiftRefused, match=r"is not one PRIMARY and one SECONDARY: \{\"us-east-1\": \"PRIMARY\", "
                                           r"\"us-west-2\": \"PRIMARY\"\}"):
        routing(both_primary, "failover")


def test_shift_limitations_name_region_record_and_address():
    current = routing(weighted())
    assert shift_limitation(current, "us-east-1", "us-west-2", EDGES) is None
    assert shift_limitation(current, "us-east-1", "us-east-1", EDGES) == (
        "the failed region and the target region are both 'us-east-1': traffic cannot be shifted onto the region it leaves")
    assert shift_limitation(current, "us-east-1", "eu-west-1", EDGES) == (
        "region 'eu-west-1' has no record in the weighted set apps.rehearsal.internal. of zone Z1 "
        "(its regions: us-east-1, us-west-2)")
    assert shift_limitation(current, "us-east-1", "us-west-2", {"us-east-1": EDGES["us-east-1"]}) == (
        "the edge connection names no edge URL for the target region 'us-west-2' (it names: us-east-1)")
    elsewhere = {**EDGES, "us-west-2": "http://127.9.2.77:8443"}
    assert shift_limitation(current, "us-east-1", "us-west-2", elsewhere) == (
        "record apps.rehearsal.internal. of us-west-2 names address 127.9.2.1, but us-west-2's edge is at "
        "http://127.9.2.77:8443 (host 127.9.2.77): our probes would prove one address and customers be sent to another")


# ---------------------------------------------------------------------------------------------------- probes
def fake_edge(answers: dict):
    def get(url: str, timeout: float):
        path = "/" + url.split("/", 3)[3]
        answer = answers.get(path, (200, {}, {"X-Region": "us-west-2"}))
        if isinstance(answer, Exception):
            raise answer
        return answer
    return get


def test_every_probe_must_pass_and_each_failure_is_named():
    url = EDGES["us-west-2"]
    good = probe_edge("us-west-2", url, ["1", "2"], rounds=2, get=fake_edge({}), sleep=lambda s: None)
    assert good.ok and good.passed == 6
    assert good.describe() == (f"us-west-2's edge at {url} answered all 6 of our probes (2 round(s) of /healthz, "
                               "/apps/1, /apps/2)")
    bad = probe_edge("us-west-2", url, ["1", "2"], rounds=1, sleep=lambda s: None, get=fake_edge({
        "/healthz": (503, {"error": "no agent is known in us-west-2"}, {"X-Region": "us-west-2"}),
        "/apps/1": (200, {}, {"X-Region": "us-east-1"}),
        "/apps/2": OSError("Connection refused")}))
    assert not bad.ok
    assert bad.describe() == (
        f"us-west-2's edge at {url} failed 3 of our 3 probes: round 1: GET {url}/healthz: HTTP 503 (no agent is known in "
        f"us-west-2); round 1: GET {url}/apps/1: answered as region 'us-east-1', not 'us-west-2'; round 1: GET "
        f"{url}/apps/2: no answer within 2s (Connection refused)")
    assert ProbeVerdict.from_dict(bad.to_dict()) == bad


def test_the_probe_sample_spreads_over_the_routing_table():
    routes = {"apps": {str(i): ["agent"] for i in range(1, 21)}}
    assert sample_apps(routes, 3) == ["1", "11", "20"]
    assert sample_apps({"apps": {"7": []}}, 5) == ["7"]
    assert sample_apps({}, 5) == []


# ---------------------------------------------------------------------------------------------------- waits and records
class PendingForever:
    def get_change(self, Id):  # noqa: N803 - boto3's name
        return {"ChangeInfo": {"Id": Id, "Status": "PENDING"}}


def test_a_change_never_insync_times_out_naming_its_id():
    ticks = iter(range(100))
    with pytest.raises(RecoveryTimedOut) as caught:
        wait_insync(PendingForever(), "/change/C123", timeout=5, interval=1, what="step 1",
                    sleep=lambda s: None, clock=lambda: float(next(ticks)))
    assert str(caught.value) == "Route 53 change /change/C123 (step 1) not INSYNC after 5s (last status PENDING)"


def test_the_record_survives_a_deferral_and_says_what_was_rolled_back():
    record = ShiftRecord("weighted", "us-east-1", "us-west-2", "Z1", NAME, before={"us-east-1": 100, "us-west-2": 0},
                         steps=[StepRecord(1, 50, {"us-east-1": 50, "us-west-2": 50}, change_id="C1", status="done"),
                                StepRecord(2, 100, {"us-east-1": 0, "us-west-2": 100}, change_id="C2", status="sent")])
    again = ShiftRecord.from_dict(record.to_dict())
    assert again == record and again.next_step.number == 2
    assert record.to_dict()["change_ids"] == ["C1", "C2"]
    assert rolled_back_message(record, record.steps[1], "it broke", "C3") == (
        "traffic shift onto us-west-2 failed after step 2 ({us-east-1: 0, us-west-2: 100}, change C2): it broke; "
        "rolled back to the records found before ({us-east-1: 100, us-west-2: 0}, change C3 INSYNC)")
