"""Scenario C's judgement, plain: is the region out, which path, what the approval says, what a rebuild brought
back, and what the drill measures from customers' traffic."""
from __future__ import annotations

import pytest

from rehearsal.drills.region import measure_customers
from rehearsal.errors import EvidenceError, PreconditionFailed
from rehearsal.runbooks.region_outage import (
    Check,
    RebuildItem,
    RegionProbe,
    approval_request,
    choose_region_path,
    confirm_region_outage,
    rebuild_summary,
    region_of,
    severity,
)

NETWORKS = {"us-east-1": ["127.42.1.0/24"], "us-west-2": ["127.42.2.0/24"]}


def out(region="us-east-1", weight=100) -> RegionProbe:
    return RegionProbe(region=region, edge=Check(False, "http://127.42.1.20:8080 did not answer: refused"),
                       services={"api": Check(False, "refused"), "scheduler": Check(False, "refused")},
                       primary=Check(False, "127.42.1.10:5432: unreachable"), traffic_weight=weight)


def healthy(region="us-west-2", lag=0.4, standby=True) -> RegionProbe:
    return RegionProbe(region=region, edge=Check(True, "http://127.42.2.20:8080 answers (200 apps routable)"),
                       services={"api": Check(False, "installed, stopped")},
                       standby=Check(True, "streaming") if standby else Check(False, "127.42.2.10:5432: unreachable"),
                       standby_address="127.42.2.10:5432" if standby else None,
                       standby_lag_seconds=lag if standby else None, traffic_weight=0)


def test_a_region_is_out_only_when_its_edge_fails_and_nothing_of_it_answers():
    c = confirm_region_outage("us-east-1", {"us-east-1": out(), "us-west-2": healthy()})
    assert c.happening and "us-east-1 edge fails" in c.evidence[0] and "primary database cannot commit" in c.evidence[-1]


def test_a_serving_edge_or_a_database_still_answering_is_no_region_outage():
    serving = out()
    serving.edge = Check(True, "http://127.42.1.20:8080 answers (200 apps routable)")
    c = confirm_region_outage("us-east-1", {"us-east-1": serving, "us-west-2": healthy()})
    assert not c.happening and "its edge serves customers" in c.why and "Scenario A" in c.why
    partial = out()
    partial.primary = Check(True, "127.42.1.10:5432: committed")
    c = confirm_region_outage("us-east-1", {"us-east-1": partial, "us-west-2": healthy()})
    assert not c.happening and "partial outage is not a region outage" in c.why and "primary database" in c.why


def test_an_unknown_region_is_refused_by_name():
    with pytest.raises(PreconditionFailed, match="region 'eu-west-1' is not a region of this platform"):
        confirm_region_outage("eu-west-1", {"us-east-1": out()})


def test_auto_fails_over_to_a_serving_region_with_a_standby_control_plane():
    d = choose_region_path("auto", "us-east-1", {"us-east-1": out(), "us-west-2": healthy()}, rpo_seconds=900)
    assert (d.path, d.target_region, d.standby, d.risk) == ("multi_region", "us-west-2", "127.42.2.10:5432", None)


def test_auto_rebuilds_when_no_other_region_can_take_over_and_multi_region_is_then_refused():
    probes = {"us-east-1": out(), "us-west-2": healthy(standby=False)}
    d = choose_region_path("auto", "us-east-1", probes, rpo_seconds=900)
    assert d.path == "single_region" and "no standby control plane reachable" in d.why
    with pytest.raises(PreconditionFailed, match="refusing the multi-region path: no region but us-east-1 can take over"):
        choose_region_path("multi_region", "us-east-1", probes, rpo_seconds=900)
    failing_edge = healthy()
    failing_edge.edge = Check(False, "http://127.42.2.20:8080 answered 503")
    with pytest.raises(PreconditionFailed, match="us-west-2: edge fails: http://127.42.2.20:8080 answered 503"):
        choose_region_path("multi_region", "us-east-1", {"us-east-1": out(), "us-west-2": failing_edge}, 900)


def test_single_region_is_taken_as_asked_saying_a_second_region_could_have_served():
    d = choose_region_path("single_region", "us-east-1", {"us-east-1": out(), "us-west-2": healthy()}, 900)
    assert d.path == "single_region" and "a second region could have served (us-west-2)" in d.why


def test_a_standby_lagging_beyond_the_rpo_is_named_as_the_risk_the_approval_carries():
    d = choose_region_path("auto", "us-east-1", {"us-east-1": out(), "us-west-2": healthy(lag=1200.0)}, 900)
    assert d.path == "multi_region" and "lags 1200.0s, beyond the RPO of 900s" in d.risk
    subject, body = approval_request(d, out())
    assert subject == "Scenario C: fail over from us-east-1 to us-west-2"
    assert "**Risk you accept:**" in body and "lags 1200.0s" in body and "stays fenced" in body


def test_severity_comes_from_what_the_region_carried():
    assert severity(out())[0] == "Sev0"
    idle = healthy(region="us-west-2")
    idle.edge, idle.standby = Check(False, "x"), Check(None, "no standby")
    idle.services = {}
    assert severity(idle) == ("Sev1", "us-west-2 is out; it carried no customer traffic and held no control-plane "
                                      "primary")


def test_region_of_an_address_comes_from_the_networks():
    assert region_of("127.42.2.10:5432", NETWORKS) == "us-west-2"
    assert region_of("127.0.0.1:5432", NETWORKS) is None
    assert region_of("db.example:5432", NETWORKS) is None


def test_a_rebuild_that_left_anything_out_is_not_complete_and_says_what():
    s = rebuild_summary([RebuildItem("control_plane_database", "control_plane", True, "restored", "t2", 1),
                         RebuildItem("api", "control_plane", True, "read-only", "t3", 2),
                         RebuildItem("critical_volumes", "volume", False, "its step did not finish", None, 6)])
    assert not s["complete"] and s["detail"] == "2 of 3 back; not back: critical_volumes"
    assert s["timeline"][-1] == "NOT back: volume critical_volumes (its step did not finish)"


def _line(at, ok, region="us-east-1"):
    return {"at": at, "ok": ok, "region": region if ok else None, "app": 1, "status": 200 if ok else None}


def test_customers_measure_rto_through_the_surviving_region_and_availability_before_during_after():
    lines = ([_line(90 + i * 0.5, True) for i in range(20)] + [_line(100 + i * 0.5, False) for i in range(10)]
             + [_line(105 + i * 0.5, True, "us-west-2") for i in range(10)])
    m = measure_customers(lines, fault_at=100.0, now=111.0, surviving_region="us-west-2")
    assert (m.rto_seconds, m.availability_before, m.availability_during, m.availability_after) == (5.0, 1.0, 0.0, 1.0)
    assert m.served_by_after == {"us-west-2": 10}


def test_customers_never_answered_again_has_no_rto_and_no_traffic_before_is_missing_evidence():
    lines = [_line(95, True)] + [_line(100 + i, False) for i in range(5)]
    m = measure_customers(lines, fault_at=100.0, now=106.0, surviving_region="us-west-2")
    assert m.rto_seconds is None and m.availability_during == 0.0 and m.availability_after is None
    with pytest.raises(EvidenceError, match="no customer request in the 60s before the fault"):
        measure_customers([_line(101, True)], fault_at=100.0, now=106.0, surviving_region=None)


def test_an_answer_from_the_failed_region_is_not_recovery_through_the_surviving_one():
    lines = [_line(95, True)] + [_line(101, True, "us-east-1")]
    assert measure_customers(lines, 100.0, 102.0, "us-west-2").rto_seconds is None


def test_an_incidents_outage_start_is_the_first_failure_still_going_on_when_declared():
    from rehearsal.drills.region import outage_start

    lines = [_line(1, True), _line(2, False), _line(3, True), _line(4, False), _line(5, False), _line(7, True)]
    assert outage_start(lines, declared_at=6.0) == 4.0
    assert outage_start(lines, declared_at=3.5) == 4.0  # declared from the first alarms, customers failing just after
    assert outage_start(lines, declared_at=3.5, grace=0.1) is None  # served around the declaration: no outage start
