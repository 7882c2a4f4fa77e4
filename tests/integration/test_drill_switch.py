"""The drills' kill switch in the results database (where the command line and every worker reach it), the
documented commands, a run called off before it started, and the migration that lets a report say ``skipped``."""
from __future__ import annotations

import uuid

import psycopg
import pytest

from rehearsal import results
from rehearsal.postgres.connection import connect

pytestmark = [pytest.mark.sandbox]
ENV = "switch-test"


@pytest.fixture
def endpoint(sandbox):
    endpoint = sandbox.results_endpoint()
    results.drills_on(endpoint, ENV)
    yield endpoint
    results.drills_on(endpoint, ENV)


def test_drills_off_then_on_through_the_documented_commands(endpoint, capsys):
    dsn = endpoint.conninfo()
    assert results.main(["drills-status", "--environment", ENV, "--dsn", dsn]) == 0
    assert capsys.readouterr().out.startswith(f"{ENV}: drills ON\n")
    assert results.main(["drills-off", "--environment", ENV, "--reason", "game day: INC-7", "--dsn", dsn]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{ENV}: drills OFF: game day: INC-7 (set by ") and "(command line) since " in out
    switch = results.drill_switch(endpoint, ENV)
    assert switch.reason == "game day: INC-7" and switch.set_at is not None
    assert results.main(["drills-status", "--environment", ENV, "--dsn", dsn]) == 0
    assert capsys.readouterr().out.startswith(f"{ENV}: drills OFF: game day: INC-7 (set by ")
    assert results.main(["drills-on", "--environment", ENV, "--dsn", dsn]) == 0
    assert capsys.readouterr().out.startswith(f"{ENV}: drills ON (they were off: game day: INC-7 (set by ")
    assert results.drill_switch(endpoint, ENV) is None
    assert results.main(["drills-on", "--environment", ENV, "--dsn", dsn]) == 0
    assert capsys.readouterr().out.startswith(f"{ENV}: drills ON (they were on)")


def test_drills_off_needs_a_reason(endpoint, capsys):
    with pytest.raises(SystemExit) as exit_:
        results.main(["drills-off", "--environment", ENV, "--reason", "  ", "--dsn", endpoint.conninfo()])
    assert exit_.value.code == 2
    assert "drills-off needs --reason: people who find drills off need to know why" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs a reason"):
        results.drills_off(endpoint, ENV, "", "someone")
    assert results.drill_switch(endpoint, ENV) is None


def test_an_incident_leaves_a_switch_a_person_set_as_it_is_and_a_person_replaces_it(endpoint):
    assert results.drills_off(endpoint, ENV, "incident declared by dr_x run r1", "dr_x run r1", keep_existing=True) is None
    before = results.drills_off(endpoint, ENV, "incident declared by dr_y run r2", "dr_y run r2", keep_existing=True)
    assert before.reason == "incident declared by dr_x run r1"
    assert results.drill_switch(endpoint, ENV).set_by == "dr_x run r1"  # the first one stays
    replaced = results.drills_off(endpoint, ENV, "audit freeze", "bob")
    assert replaced.set_by == "dr_x run r1" and results.drill_switch(endpoint, ENV).reason == "audit freeze"
    assert results.drills_on(endpoint, ENV).reason == "audit freeze"


def test_a_run_called_off_tells_its_later_steps_and_its_report_says_skipped(endpoint):
    dag_id, run_id = "dr_drill_switch_test", f"manual__{uuid.uuid4()}"
    assert results.drill_run_control(endpoint, dag_id, run_id) == results.RunControl()
    results.record_called_off(endpoint, dag_id, run_id, "Switch test", "disruptive", ENV, "unknown",
                              "2026-12-05T00:00:00+00:00", "drills are switched off for environment 'switch-test': x")
    control = results.drill_run_control(endpoint, dag_id, run_id)
    assert control.called_off == "drills are switched off for environment 'switch-test': x"
    assert control.abort_reason is None and control.stop_conditions is None
    row = results.fetch_result(endpoint, dag_id, run_id)
    assert (row["status"], row["mode"], row["component"]) == ("skipped", "disruptive", "unknown")


def test_a_results_database_made_before_skipped_existed_is_migrated_once(sandbox):
    """The status check of an old ``drill_results`` refuses 'skipped'; ``ensure_schema`` widens it, and running it
    again changes nothing."""
    admin = sandbox.results_endpoint()
    name = f"results_migration_{uuid.uuid4().hex[:8]}"
    with connect(admin.with_(dbname="postgres")) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    old = admin.with_(dbname=name)
    try:
        with connect(old) as conn:  # the table as the first schema made it
            conn.execute("CREATE TABLE drill_results (dag_id text NOT NULL, run_id text NOT NULL, scenario text NOT NULL, "
                         "mode text NOT NULL, environment text NOT NULL, status text NOT NULL CHECK (status IN "
                         "('in_progress', 'passed', 'failed', 'aborted')), component text NOT NULL, started_at timestamptz, "
                         "finished_at timestamptz, target_rto_seconds double precision, measured_rto_seconds double "
                         "precision, rto_met boolean, target_rpo_seconds double precision, measured_rpo_seconds double "
                         "precision, rpo_met boolean, recovery_path text, report_path text, report jsonb NOT NULL, "
                         "PRIMARY KEY (dag_id, run_id))")
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute("INSERT INTO drill_results (dag_id, run_id, scenario, mode, environment, status, component, "
                             "report) VALUES ('d', 'r0', 's', 'm', 'e', 'skipped', 'c', '{}')")
        results.ensure_schema(old)
        results.ensure_schema(old)  # idempotent
        results.record_called_off(old, "d", "r1", "s", "disruptive", "e", "c", "2026-12-05T00:00:00+00:00", "why")
        with connect(old) as conn:
            checks = conn.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                                  "'drill_results'::regclass AND contype = 'c'").fetchall()
            assert conn.execute("SELECT status FROM drill_results WHERE run_id = 'r1'").fetchone() == ("skipped",)
        assert len(checks) == 1 and "'skipped'" in checks[0][0]
    finally:
        with connect(admin.with_(dbname="postgres")) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
