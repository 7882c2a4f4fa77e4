"""When a drill may start: a run is a drill by its mode; never while drills are switched off (the results database's
switch or the Airflow Variable); never a scheduled run that starts more than an hour after its logical date."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from rehearsal.drills.start_rules import (
    DrillSwitch,
    human_duration,
    incident_switch_reason,
    is_drill_run,
    is_incident_run,
    lateness_reason,
    start_limitation,
    switched_off_reason,
)
from rehearsal.report import STATUSES, decide_status

TICK = datetime(2026, 11, 15, 6, 0, tzinfo=UTC)  # dr_drill_control_plane_outage's latest quarter


@pytest.mark.parametrize(("params", "drill", "incident"), [
    ({"mode": "disruptive"}, True, False),
    ({"mode": "non_disruptive"}, True, False),
    ({"mode": "drill"}, True, False),  # a runbook or scenario rehearsed
    ({"mode": "incident"}, False, True),
    ({}, False, False),  # a backup DAG
    (None, False, False),
])
def test_a_run_is_a_drill_by_its_mode_not_its_dag_id(params, drill, incident):
    assert is_drill_run(params) is drill
    assert is_incident_run(params) is incident


def test_a_quarterly_drill_unpaused_weeks_late_is_late_and_says_why():
    started = TICK + timedelta(days=20, hours=3, minutes=12)
    assert lateness_reason("scheduled", TICK, started) == (
        "scheduled for 2026-11-15T06:00 UTC but started 20 days 3 h later (more than 1 h): a late drill would surprise "
        "people; trigger it by hand to run it now")


@pytest.mark.parametrize(("run_type", "late", "is_late"), [
    ("scheduled", timedelta(minutes=59), False),  # a scheduler a little behind is not a surprise
    ("scheduled", timedelta(hours=1), False),
    ("scheduled", timedelta(hours=1, seconds=1), True),
    ("manual", timedelta(days=90), False),  # triggered by hand: it runs when it was asked to
    ("operator_triggered", timedelta(days=90), False),
    ("backfill", timedelta(days=90), False),
])
def test_only_a_scheduled_run_more_than_an_hour_after_its_logical_date_is_late(run_type, late, is_late):
    assert (lateness_reason(run_type, TICK, TICK + late) is not None) is is_late


def test_a_run_without_a_logical_date_is_never_late():
    assert lateness_reason("scheduled", None, TICK) is None


def test_human_durations():
    assert [human_duration(s) for s in (45, 61 * 60, 2 * 3600 + 5 * 60, 86400, 20 * 86400 + 3 * 3600 + 700)] == \
        ["45 s", "1 h 1 min", "2 h 5 min", "1 day", "20 days 3 h"]


def test_a_switch_set_in_the_results_database_says_who_when_why_and_how_to_turn_drills_back_on():
    switch = DrillSwitch("sandbox", "game day freeze (INC-42)", "alice@ops (command line)",
                         datetime(2026, 12, 5, 1, 2, 3, tzinfo=UTC))
    assert switched_off_reason([None, switch]) == (
        "drills are switched off for environment 'sandbox': game day freeze (INC-42) (set by alice@ops (command line) "
        "since 2026-12-05T01:02:03 UTC); `make drills-on ENV=sandbox` turns them back on")


@pytest.mark.parametrize("value", [None, "", "   ", "\n"])
def test_an_empty_variable_leaves_drills_on(value):
    assert DrillSwitch.from_variable("sandbox", value) is None
    assert switched_off_reason([DrillSwitch.from_variable("sandbox", value), None]) is None


def test_any_text_in_the_variable_switches_drills_off_with_that_text_as_the_reason():
    switch = DrillSwitch.from_variable("prod-eu", "  region outage, all hands  ")
    assert switch.reason == "region outage, all hands"
    assert switched_off_reason([switch]) == (
        "drills are switched off for environment 'prod-eu': region outage, all hands (set by the Airflow Variable "
        "rehearsal_drills_off); delete or empty the Variable rehearsal_drills_off turns them back on")


def test_the_kill_switch_holds_back_manual_and_scheduled_drills_alike_and_comes_before_lateness():
    switch = DrillSwitch("sandbox", "incident", "someone")
    for run_type in ("manual", "scheduled"):
        why = start_limitation(run_type=run_type, logical_date=TICK, now=TICK + timedelta(days=20), switches=[switch])
        assert why.startswith("drills are switched off for environment 'sandbox': incident")
    late = start_limitation(run_type="scheduled", logical_date=TICK, now=TICK + timedelta(days=20), switches=[None, None])
    assert late.startswith("scheduled for 2026-11-15T06:00 UTC but started 20 days later")
    assert start_limitation(run_type="manual", logical_date=TICK, now=TICK + timedelta(days=20), switches=[None]) is None
    assert start_limitation(run_type="scheduled", logical_date=TICK, now=TICK + timedelta(minutes=2), switches=[]) is None


def test_an_incident_names_itself_in_the_switch():
    assert incident_switch_reason("dr_scenario_a_control_plane_down", "manual__x", TICK) == (
        "incident declared by dr_scenario_a_control_plane_down run manual__x at 2026-11-15T06:00:00 UTC: no drill while "
        "it lasts")


def test_a_drill_called_off_is_skipped_not_failed_or_aborted():
    assert "skipped" in STATUSES
    assert decide_status(started=False, failures=[], measures_recovery=True, rto_met=None, rpo_met=None,
                         called_off=True) == "skipped"
    # whatever else the steps say: every later step skipped, nothing was measured
    assert decide_status(started=False, failures=["measure_rto_rpo: no evidence"], measures_recovery=True,
                         rto_met=None, rpo_met=None, called_off=True) == "skipped"
    assert decide_status(started=False, failures=[], measures_recovery=True, rto_met=None, rpo_met=None) == "aborted"
