"""Scenario A/B decisions and the control-plane drills' measurements, without Airflow or a sandbox: each can fail,
and fails for the named reason."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rehearsal.dataplane import DataPlaneProbe, availability, production_health
from rehearsal.drills.control_plane import measure_outage
from rehearsal.errors import EvidenceError, PreconditionFailed
from rehearsal.runbooks.control_plane import (
    DataPlaneDown,
    FreezeNotConfirmed,
    RampPolicy,
    ReconcilerUnstable,
    confirm_refused,
    convergence,
    ramp,
    require_data_plane,
    severity,
)
from rehearsal.runbooks.corruption import (
    AuditEntry,
    DriftNotRepaired,
    check_items,
    corruption_point,
    damage_gone,
    last_good_backup,
    measure_corruption_rpo,
)
from rehearsal.services import Answer, Health

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)


def probe(ok: int, total: int = 200, hosts: int = 24) -> DataPlaneProbe:
    return DataPlaneProbe(hosts=hosts, hosts_unreachable=[], endpoints=total, endpoints_ok=ok)


API_DOWN = Health("api", False, "control-plane API at http://x did not answer", {})


# ---------------------------------------------------------------- severity, data plane, freeze
def test_severity_is_sev1_when_apps_serve_and_sev0_when_customers_are_hit():
    assert severity(probe(200), API_DOWN).level == "Sev1"
    sev0 = severity(probe(150), API_DOWN)
    assert sev0.level == "Sev0" and "75.00% < 99%" in sev0.why
    assert severity(probe(0, total=0), API_DOWN).level == "Sev0"


def test_a_dead_data_plane_is_not_scenario_a():
    with pytest.raises(DataPlaneDown, match="not Scenario A"):
        require_data_plane(probe(0))
    with pytest.raises(DataPlaneDown, match="lists no host agent"):
        require_data_plane(probe(0, total=0, hosts=0))
    require_data_plane(probe(1))


def test_freeze_is_confirmed_only_by_a_503_naming_the_mode():
    assert "refused" in confirm_refused(Answer(503, {"error": "mutations refused: API is frozen", "mode": "frozen"}), "frozen")
    with pytest.raises(FreezeNotConfirmed, match="ACCEPTED"):
        confirm_refused(Answer(200, {"generation": 4}), "frozen")
    with pytest.raises(FreezeNotConfirmed, match="instead of a 503 naming mode frozen"):
        confirm_refused(Answer(503, {"mode": "read-only"}), "frozen")


# ---------------------------------------------------------------- the reconciler's ramp
class FakeReconciler:
    """Error rate rises above ``breaking_rate``; a clock that advances with sleep."""

    def __init__(self, breaking_rate: float) -> None:
        self.breaking_rate, self.rate, self.now, self.rates = breaking_rate, 0.0, 0.0, []

    def set_rate(self, rate: float) -> float:
        self.rate = rate
        self.rates.append(rate)
        return rate

    def metrics(self) -> dict:
        over = self.rate > self.breaking_rate
        return {"error_rate": 0.5 if over else 0.0, "queue_depth": 3}

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_ramp_climbs_every_step_when_the_thresholds_hold():
    fake = FakeReconciler(breaking_rate=100)
    result = ramp(fake.set_rate, fake.metrics, RampPolicy(), fake.sleep, fake.clock)
    assert fake.rates == [0.5, 1.0, 2.0, 5.0] and result.final_rate == 5.0 and result.backoffs == 0
    assert all(s.outcome == "held" and s.samples >= 5 for s in result.steps)


def test_ramp_backs_off_instead_of_storming_and_fails_naming_the_rate():
    fake = FakeReconciler(breaking_rate=1.5)
    with pytest.raises(ReconcilerUnstable, match=r"never held 2 pushes/s: error rate 0.50 > 0.20 .*left at 1/s"):
        ramp(fake.set_rate, fake.metrics, RampPolicy(max_backoffs=2), fake.sleep, fake.clock)
    assert fake.rates == [0.5, 1.0, 2.0, 1.0, 2.0, 1.0]  # back to the last good rate after each try
    assert fake.rate == 1.0


def test_ramp_steps_must_increase():
    with pytest.raises(PreconditionFailed):
        RampPolicy(steps=(2.0, 1.0))


def test_convergence_needs_an_unpaused_reconciler_and_nothing_waiting_longer_than_the_threshold():
    ok = {"rate": 5, "paused": False, "time_to_converge_seconds": 4.0, "oldest_unconverged_seconds": None, "queue_depth": 0}
    assert convergence(ok, 30)[0]
    assert not convergence({**ok, "paused": True, "rate": 0}, 30)[0]
    done, why = convergence({**ok, "time_to_converge_seconds": 45.0}, 30)
    assert not done and "time-to-converge 45.0s" in why
    assert not convergence({**ok, "oldest_unconverged_seconds": 31.0}, 30)[0]
    assert not convergence({**ok, "converged_changes_last_300s": 0, "time_to_converge_seconds": None}, 30, True)[0]
    assert convergence({**ok, "converged_changes_last_300s": 1}, 30, True)[0]
    young_only = {**ok, "oldest_unconverged_seconds": 1.2, "queue_depth": 3, "converged_changes_last_300s": 0}
    assert convergence(young_only, 30) == (False, "time-to-converge 4.0s, oldest unconverged change 1.2s, queue depth 3 "
                                                  "(no change made since has converged yet)")


# ---------------------------------------------------------------- Scenario B
def audit(id_: int, action: str, at: datetime, **detail) -> AuditEntry:
    return AuditEntry(id_, "postgres", action, detail, at)


def test_corruption_time_is_found_in_the_audit_log_as_the_earliest_damaging_statement():
    entries = [audit(1, "deploy", NOW - timedelta(minutes=9), request_id="r1"),
               audit(2, "bulk_update", NOW - timedelta(minutes=5), table="envs", rows=40000),
               audit(3, "drop_table", NOW - timedelta(minutes=4), table="endpoints")]
    point = corruption_point(None, entries, NOW)
    assert point.time == NOW - timedelta(minutes=5)
    assert point.recovery_target == point.time - timedelta(milliseconds=1)
    assert "found in the audit log" in point.how and "bulk_update envs (40000 rows)" in point.how
    assert [d["action"] for d in point.damage] == ["bulk_update", "drop_table"]


def test_corruption_time_given_or_refused():
    given = corruption_point("2026-11-29T02:58:00+00:00", [], NOW)
    assert given.time == NOW - timedelta(minutes=2) and "given" in given.how
    with pytest.raises(PreconditionFailed, match="in the future"):
        corruption_point("2026-11-29T04:00:00+00:00", [], NOW)
    with pytest.raises(PreconditionFailed, match="needs a timezone"):
        corruption_point("2026-11-29T02:00:00", [], NOW)
    with pytest.raises(PreconditionFailed, match="records no damaging statement"):
        corruption_point("", [audit(1, "deploy", NOW)], NOW)


def test_last_good_backup_is_the_newest_before_the_damage_that_verifies():
    backups = [("b1", NOW - timedelta(hours=5)), ("b2", NOW - timedelta(hours=2)), ("b3", NOW + timedelta(minutes=1))]
    choice = last_good_backup(backups, NOW, lambda b: "sha256:base.tar: mismatch" if b == "b2" else None)
    assert choice.backup_id == "b1"
    assert choice.rejected == [{"backup_id": "b2", "stop_time": backups[1][1].isoformat(), "why": "sha256:base.tar: mismatch"}]
    assert "1 newer one(s) failed verification" in choice.why and "1 backup(s) finished after the damage" in choice.why


def test_a_corruption_older_than_the_oldest_backup_is_refused_naming_it():
    with pytest.raises(PreconditionFailed, match=r"older than the oldest base backup, b1, finished"):
        last_good_backup([("b1", NOW)], NOW - timedelta(days=3), lambda b: None)
    with pytest.raises(PreconditionFailed, match="no base backup before the damage verifies: b1: bad"):
        last_good_backup([("b1", NOW - timedelta(hours=1))], NOW, lambda b: "bad")


def test_damage_gone_names_a_table_still_missing_and_a_replayed_statement():
    point = corruption_point(None, [audit(2, "bulk_update", NOW, table="envs", rows=9),
                                    audit(3, "drop_table", NOW, table="endpoints")], NOW + timedelta(seconds=1))
    assert damage_gone(point, {"envs", "endpoints"}, []) == []
    problems = damage_gone(point, {"envs"}, [audit(2, "bulk_update", NOW, table="envs", rows=9)])
    assert problems[0].startswith("table endpoints (dropped at") and "replayed bulk_update envs" in problems[1]


def test_rpo_counts_only_acknowledged_writes_before_the_corruption_that_are_missing():
    t = 1000.0
    acks = [{"request_id": f"r{i}", "t_ack": t - 10 + i} for i in range(10)] + [{"request_id": "late", "t_ack": t + 1}]
    clean = measure_corruption_rpo(acks, t, {f"r{i}" for i in range(10)}, window=60)
    assert clean.rpo_seconds == 0 and clean.after_corruption == 1 and clean.acks_considered == 10
    lossy = measure_corruption_rpo(acks, t, {f"r{i}" for i in range(7)}, window=60)
    assert lossy.rpo_seconds == pytest.approx(3.0) and [a["request_id"] for a in lossy.lost_before] == ["r7", "r8", "r9"]


def test_a_drift_item_that_cannot_be_repaired_fails_by_name():
    check_items([{"subject": "deploy app 3 (r1)", "outcome": "repaired"}, {"subject": "x", "outcome": "already_present"}])
    with pytest.raises(DriftNotRepaired, match=r"update_config app 999999 \(r9\): failed \(HTTP 404 app 999999 not found\)"):
        check_items([{"subject": "update_config app 999999 (r9)", "outcome": "failed", "why": "HTTP 404 app 999999 not found"}])


# ---------------------------------------------------------------- evidence logs
def write_lines(path, entries):
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))


def test_outage_measurement_from_the_logs(tmp_path):
    probes, load = tmp_path / "probes.log", tmp_path / "load.log"
    write_lines(probes, [{"t": 100 + i, "endpoints": 10, "ok": 10, "api": "ok" if i >= 4 else "down",
                          "api_mode": "read-only" if i >= 4 else None} for i in range(12)])
    write_lines(load, [{"t_sent": 101, "t_ack": None, "status": 0, "request_id": "a"},
                       {"t_sent": 108, "t_ack": 108.2, "status": 200, "request_id": "b"}])
    m = measure_outage(probes, load, fault_at=100.0, until=120)
    assert m.rto_read_only_seconds == 4 and m.rto_read_write_seconds == pytest.approx(8.2)
    assert m.dataplane_availability == 1.0 and m.dataplane_rounds == 9


def test_availability_below_100_percent_and_a_silent_prober_are_seen(tmp_path):
    probes = tmp_path / "probes.log"
    write_lines(probes, [{"t": 100 + i, "endpoints": 10, "ok": 10 if i != 3 else 4, "api": "ok"} for i in range(6)])
    span = availability(probes, 100, 105)
    assert span.ratio == pytest.approx(54 / 60) and span.worst_round["ok"] == 4
    write_lines(probes, [{"t": 100, "endpoints": 10, "ok": 10, "api": "ok"}, {"t": 120, "endpoints": 10, "ok": 10, "api": "ok"}])
    with pytest.raises(EvidenceError, match="silent for 20.0s"):
        availability(probes, 100, 120)
    assert production_health(probes, 120.5, 5) == (1.0, 0.0, 1)


def test_no_write_after_the_fault_is_no_read_write_rto(tmp_path):
    probes, load = tmp_path / "probes.log", tmp_path / "load.log"
    write_lines(probes, [{"t": 100 + i, "endpoints": 10, "ok": 10, "api": "ok"} for i in range(5)])
    write_lines(load, [{"t_sent": 99, "t_ack": 99.1, "status": 200, "request_id": "before"},
                       {"t_sent": 101, "t_ack": None, "status": 503, "request_id": "refused"}])
    with pytest.raises(EvidenceError, match="no write of the synthetic load was acknowledged"):
        measure_outage(probes, load, fault_at=100.0, until=104)


def test_read_only_counts_only_when_the_api_answered_in_read_only_mode(tmp_path):
    probes, load = tmp_path / "probes.log", tmp_path / "load.log"
    # The API came straight back read-write: no read-only phase happened, and the measurement says so.
    write_lines(probes, [{"t": 100 + i, "endpoints": 10, "ok": 10, "api": "ok" if i >= 4 else "down",
                          "api_mode": "read-write" if i >= 4 else None} for i in range(8)])
    write_lines(load, [{"t_sent": 105, "t_ack": 105.1, "status": 200, "request_id": "b"}])
    m = measure_outage(probes, load, fault_at=100.0, until=110)
    assert m.read_only_at is None and m.rto_read_only_seconds is None


def test_stop_conditions_trip_on_silence_as_well_as_on_failing_probes(tmp_path):
    from rehearsal.drills.stop_conditions import StopConditions, tripped

    probes = tmp_path / "probes.log"
    write_lines(probes, [{"t": 100 + i, "endpoints": 10, "ok": 10, "api": "ok"} for i in range(5)])
    assert tripped(StopConditions(), probes, 104.5) is None
    assert tripped(StopConditions(), probes, 120.0).startswith("no probe round in the last 5s")
    write_lines(probes, [{"t": 100 + i, "endpoints": 10, "ok": 10 if i < 3 else 0, "api": "ok"} for i in range(5)])
    assert tripped(StopConditions(), probes, 104.5).startswith("data-plane probe success 60.00% < 95%")


def test_the_app_runtime_promise_fails_on_a_round_with_endpoints_down_and_on_silence():
    from rehearsal.catalog import Asset
    from rehearsal.freshness import evaluate_probes

    asset = Asset("app_runtime_availability", "app_runtime", "data_plane_probe", timedelta(minutes=1))
    now = datetime.fromtimestamp(1000, UTC)
    rounds = [{"t": 950 + i, "endpoints": 10, "ok": 10, "failed": []} for i in range(5)]
    assert evaluate_probes(asset, rounds, now).ok
    rounds[2] = {"t": 952, "endpoints": 10, "ok": 7, "failed": ["agent-03/apps/7/0"]}
    bad = evaluate_probes(asset, rounds, now)
    assert not bad.ok and "1 of 5 probe round(s) in the last 60s had endpoints down; worst 7/10" in bad.detail
    assert bad.detail.endswith("agent-03/apps/7/0")
    silent = evaluate_probes(asset, [], now)
    assert not silent.ok and "no probe round in the last 60s" in silent.detail


def test_the_ramp_ends_at_the_rate_found_before_and_says_what_it_left_undone():
    from rehearsal.runbooks.control_plane import RampPolicy, ramp, ramp_degraded, ramp_steps_to

    assert ramp_steps_to((0.5, 1.0, 2.0, 5.0), 3.0) == (0.5, 1.0, 2.0, 3.0)
    assert ramp_steps_to((0.5, 1.0, 2.0, 5.0), 10.0) == (0.5, 1.0, 2.0, 5.0, 10.0)
    assert ramp_steps_to((0.5, 1.0), None) == (0.5, 1.0)
    rates, clock = [], iter(range(0, 10_000))
    policy = RampPolicy(steps=ramp_steps_to((0.5, 1.0), 2.0), hold_seconds=2, sample_every=1)
    # A reconciler that reports neither error rate nor queue depth: every step is held blind.
    blind = ramp(rates.append, lambda: {"rate": rates[-1]}, policy, sleep=lambda s: None, clock=lambda: next(clock))
    assert rates == [0.5, 1.0, 2.0] and blind.final_rate == 2.0 and blind.unmeasured_rates() == [0.5, 1.0, 2.0]
    assert [d["item"] for d in ramp_degraded(blind, 2.0)] == ["ramp judged without metrics"]
    seen = ramp(rates.append, lambda: {"error_rate": 0.0, "queue_depth": 0}, policy, sleep=lambda s: None,
                clock=lambda: next(clock))
    assert ramp_degraded(seen, 2.0) == []
    left = ramp_degraded(seen, 5.0)
    assert left == [{"item": "reconciler rate not restored",
                     "what_to_do": "it runs at 2 pushes/s, it ran at 5 before: set it back once the platform is stable"}]
    assert ramp_degraded(seen, None)[0]["item"] == "reconciler rate before the incident unknown"


def test_a_drill_answers_only_for_its_own_fault_and_drift_repair_does_not_hide_a_restore_that_stopped_early():
    from rehearsal.runbooks.corruption import measure_corruption_rpo, rpo_baseline

    fault = 10_000.0
    acks = [{"request_id": f"w{i}", "t_ack": fault - 60 + i * 0.5, "status": 200} for i in range(120)]
    earlier_loss = {"w3", "w4"}  # lost by an earlier drill, 58 s before this fault
    present_at_guard = {a["request_id"] for a in acks} - earlier_loss
    baseline = rpo_baseline(acks, present_at_guard, fault - 1, 1800)
    assert baseline["missing"] == ["w3", "w4"] and baseline["acks_checked"] == 118
    # The restore stopped 30 s early: the last 60 writes were missing from the restored copy; drift repair then
    # re-applied them all, so the database holds them now.
    stopped_early = {f"w{i}" for i in range(60, 120)}
    present_now = {a["request_id"] for a in acks} - earlier_loss
    rpo = measure_corruption_rpo(acks, fault, present_now, 1800, history=set(baseline["missing"]), reapplied=stopped_early)
    assert rpo.rpo_seconds >= 30 and rpo.lost_count == 60 and rpo.reapplied_by_drift_repair == 60
    assert rpo.history_count == 2 and {a["request_id"] for a in rpo.history} == earlier_loss
    assert not {a["request_id"] for a in rpo.lost_before} & earlier_loss
    clean = measure_corruption_rpo(acks, fault, present_now, 1800, history=set(baseline["missing"]))
    assert (clean.rpo_seconds, clean.lost_count) == (0.0, 0)  # without this drill's losses: nothing of the past counts
