from __future__ import annotations

import pytest

from rehearsal.drills.primary_loss import check_params, run_key
from rehearsal.environment import Environment
from rehearsal.errors import PreconditionFailed
from rehearsal.postgres.restore import RecoveryTarget
from rehearsal.report import DrillReport, Step, render_markdown, write_report


@pytest.mark.parametrize(("mode", "path", "message"), [
    ("chaos", "auto", "unknown mode 'chaos'"),
    ("disruptive", "'; DROP TABLE orgs; --", "unknown path \"'; DROP TABLE orgs; --\""),
    ("non_disruptive", "promote_standby", "path promote_standby changes production"),
])
def test_bad_parameters_are_refused(mode, path, message):
    with pytest.raises(PreconditionFailed) as err:
        check_params(mode, path)
    assert message in str(err.value)


def test_production_is_not_a_drill_environment_by_default():
    env = Environment.from_mapping(None)
    assert env.name == "production" and not env.drill_environment
    with pytest.raises(PreconditionFailed, match="environment 'production' is not marked as a drill environment"):
        env.require_drill_environment("run a disruptive drill")
    assert Environment.from_mapping({"drill_environment": "true"}).drill_environment
    assert not Environment.from_mapping({"drill_environment": "maybe"}).drill_environment


def test_run_keys_are_unique_and_safe():
    a, b = run_key("d", "manual__2026-11-28T05:01:54+00:00"), run_key("d", "manual__2026-11-28T05:01:55+00:00")
    assert a != b and a.startswith("drill-") and a.replace("-", "").isalnum()


def test_recovery_targets():
    assert RecoveryTarget.parse("latest").kind == "latest"
    assert RecoveryTarget.parse("0/3000060") == RecoveryTarget("lsn", "0/3000060")
    assert RecoveryTarget.parse("2026-11-28T05:00:00+00:00").kind == "time"
    with pytest.raises(PreconditionFailed, match="needs a timezone"):
        RecoveryTarget.parse("2026-11-28T05:00:00")
    with pytest.raises(PreconditionFailed, match="neither 'latest', an LSN"):
        RecoveryTarget.parse("yesterday; rm -rf /")


def test_report_is_written_as_json_and_markdown(tmp_path):
    report = DrillReport(dag_id="dr_x", run_id="manual__1", scenario="S", mode="drill", environment="sandbox",
                         status="passed", started_at="a", finished_at="b", component="control_plane_api",
                         target_rto_seconds=7200, measured_rto_seconds=4.2, rto_met=True, target_rpo_seconds=900,
                         measured_rpo_seconds=0.0, rpo_met=True, recovery_path="pitr",
                         steps=[Step("guard", "success", "a", "b", "ok")])
    json_path, md_path = write_report(report, tmp_path)
    assert json_path == tmp_path / "dr_x" / "manual__1.json" and md_path.exists()
    assert "| RTO (control_plane_api) | 7200 s | 4.20 s | met |" in render_markdown(report)


def test_a_target_is_harmed_only_when_it_is_the_one_the_drill_environment_recorded():
    from rehearsal.drills.targets import target_limitation

    recorded = {"system_identifier": "7715", "marker": "m1"}
    assert target_limitation("controlplane_db", "db:5432", recorded, {"system_identifier": "7715", "marker": "m1"},
                             "sandbox") is None
    assert target_limitation("controlplane_db", "db:5432", recorded, {"system_identifier": "7715", "marker": None},
                             "sandbox") == ("refusing to harm the control-plane database at db:5432: it is not the drill "
                                            "environment's recorded target (marker none, system identifier 7715 found; "
                                            "marker m1, system identifier 7715 recorded by 'sandbox')")
    assert "it is not the drill environment's recorded target" in target_limitation(
        "controlplane_db", "db:5432", recorded, {"system_identifier": "9999", "marker": "m1"}, "sandbox")
    assert target_limitation("snapshot_store", "s3://b", None, {"bucket": "b"}, "staging").startswith(
        "refusing to harm the snapshot store at s3://b: drill environment 'staging' records no identity for it "
        "(drill_targets.snapshot_store in the rehearsal_environment Variable)")
    assert target_limitation("control_plane_api", "http://api", {"identity": None}, {"identity": None}, "x") is not None


def test_a_prober_that_falls_silent_during_a_long_wait_stops_the_wait(tmp_path):
    """A PITR catch-up wait polls the drill's stop conditions: the prober's last round is older than the window (it
    stopped), so production's health is unknown and the wait ends, saying why, long before its timeout."""
    import json
    import time

    from rehearsal.drills.stop_conditions import StopConditions, stop_check
    from rehearsal.postgres.connection import Endpoint
    from rehearsal.postgres.restore import wait_recovered

    log = tmp_path / "probe-log.jsonl"
    log.write_text(json.dumps({"t": time.time() - 60, "endpoints": 10, "ok": 10, "failed": [], "api": "ok",
                               "api_mode": "read-write"}) + "\n")

    class Stopped(Exception):
        pass

    def on_trip(why: str) -> None:
        raise Stopped(why)

    check = stop_check(StopConditions(), log, on_trip)
    never = Endpoint("127.0.0.1", 9, "postgres", "postgres")  # nothing answers: the copy is still "starting"
    started = time.monotonic()
    with pytest.raises(Stopped, match=r"no probe round in the last 5s in .*production health unknown"):
        wait_recovered(never, timeout=60, interval=0.1, check=check)
    assert time.monotonic() - started < 5
    with pytest.raises(Stopped, match="no prober log is named"):
        stop_check(StopConditions(), None, on_trip)()
    stop_check(None, None, on_trip)()  # no conditions (not a drill): nothing to check
