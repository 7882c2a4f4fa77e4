"""The results database: one row per drill or scenario run, one per RTO breach, the disruptive-drill lock and the
drills' kill switch, per environment.

It is a Postgres database of ours: not Airflow's metadata DB and not the cluster drills break. Every worker and
the command line reach it (``python -m rehearsal.results``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC

from rehearsal.drills.start_rules import DrillSwitch
from rehearsal.postgres.connection import Endpoint, connect
from rehearsal.report import DrillReport

SCHEMA = """
CREATE TABLE IF NOT EXISTS drill_results (
    dag_id text NOT NULL, run_id text NOT NULL, scenario text NOT NULL, mode text NOT NULL,
    environment text NOT NULL,
    status text NOT NULL CONSTRAINT drill_results_status_check
        CHECK (status IN ('in_progress', 'passed', 'degraded', 'failed', 'aborted', 'skipped', 'not_applicable')),
    component text NOT NULL, started_at timestamptz, finished_at timestamptz,
    target_rto_seconds double precision, measured_rto_seconds double precision, rto_met boolean,
    target_rpo_seconds double precision, measured_rpo_seconds double precision, rpo_met boolean,
    recovery_path text, report_path text, report jsonb NOT NULL,
    PRIMARY KEY (dag_id, run_id));
CREATE TABLE IF NOT EXISTS rto_breaches (
    id bigserial PRIMARY KEY, dag_id text NOT NULL, run_id text NOT NULL, component text NOT NULL,
    deadline_time timestamptz, detected_at timestamptz NOT NULL DEFAULT now(), late_seconds double precision,
    detail jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS drill_locks (
    environment text PRIMARY KEY, dag_id text NOT NULL, run_id text NOT NULL, acquired_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE drill_locks ADD COLUMN IF NOT EXISTS abort_reason text;
ALTER TABLE drill_locks ADD COLUMN IF NOT EXISTS stop_conditions jsonb;
CREATE TABLE IF NOT EXISTS drill_switch (
    environment text PRIMARY KEY, reason text NOT NULL, set_by text NOT NULL, set_at timestamptz NOT NULL DEFAULT now());
DO $$
BEGIN  -- a database made before 'degraded' and 'not_applicable' existed: widen its status check, once
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'drill_results'::regclass AND contype = 'c'
                   AND pg_get_constraintdef(oid) LIKE '%''not_applicable''%') THEN
        ALTER TABLE drill_results DROP CONSTRAINT IF EXISTS drill_results_status_check;
        ALTER TABLE drill_results ADD CONSTRAINT drill_results_status_check
            CHECK (status IN ('in_progress', 'passed', 'degraded', 'failed', 'aborted', 'skipped', 'not_applicable'));
    END IF;
END $$;
"""


def ensure_schema(endpoint: Endpoint) -> None:
    with connect(endpoint) as conn:
        conn.execute(SCHEMA)


def record_start(endpoint: Endpoint, dag_id: str, run_id: str, scenario: str, mode: str, environment: str,
                 component: str, started_at: str) -> None:
    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        conn.execute(
            "INSERT INTO drill_results (dag_id, run_id, scenario, mode, environment, status, component, started_at, report) "
            "VALUES (%s, %s, %s, %s, %s, 'in_progress', %s, %s, '{}') ON CONFLICT (dag_id, run_id) DO NOTHING",
            (dag_id, run_id, scenario, mode, environment, component, started_at))


def record_called_off(endpoint: Endpoint, dag_id: str, run_id: str, scenario: str, mode: str, environment: str,
                      component: str, started_at: str, reason: str) -> None:
    """The run was called off before it touched anything (the kill switch, or a late scheduled start): its row says
    ``skipped`` with the reason, so every later step of the run skips too (``drill_run_control``). The run's report
    fills in the rest."""
    from psycopg.types.json import Jsonb

    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        conn.execute(
            "INSERT INTO drill_results (dag_id, run_id, scenario, mode, environment, status, component, started_at, report) "
            "VALUES (%s, %s, %s, %s, %s, 'skipped', %s, %s, %s) ON CONFLICT (dag_id, run_id) DO UPDATE "
            "SET status = 'skipped', report = EXCLUDED.report",
            (dag_id, run_id, scenario, mode, environment, component, started_at, Jsonb({"status": "skipped", "failure": reason})))


def record_result(endpoint: Endpoint, report: DrillReport, report_path: str) -> None:
    from psycopg.types.json import Jsonb

    ensure_schema(endpoint)
    r = report
    with connect(endpoint) as conn:
        conn.execute(
            "INSERT INTO drill_results (dag_id, run_id, scenario, mode, environment, status, component, started_at, "
            "finished_at, target_rto_seconds, measured_rto_seconds, rto_met, target_rpo_seconds, measured_rpo_seconds, "
            "rpo_met, recovery_path, report_path, report) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
            "ON CONFLICT (dag_id, run_id) DO UPDATE SET status = EXCLUDED.status, finished_at = EXCLUDED.finished_at, "
            "scenario = EXCLUDED.scenario, mode = EXCLUDED.mode, environment = EXCLUDED.environment, "
            "component = EXCLUDED.component, "
            "started_at = COALESCE(drill_results.started_at, EXCLUDED.started_at), "
            "measured_rto_seconds = EXCLUDED.measured_rto_seconds, rto_met = EXCLUDED.rto_met, "
            "measured_rpo_seconds = EXCLUDED.measured_rpo_seconds, rpo_met = EXCLUDED.rpo_met, "
            "target_rto_seconds = EXCLUDED.target_rto_seconds, target_rpo_seconds = EXCLUDED.target_rpo_seconds, "
            "recovery_path = EXCLUDED.recovery_path, report_path = EXCLUDED.report_path, report = EXCLUDED.report",
            (r.dag_id, r.run_id, r.scenario, r.mode, r.environment, r.status, r.component, r.started_at, r.finished_at,
             r.target_rto_seconds, r.measured_rto_seconds, r.rto_met, r.target_rpo_seconds, r.measured_rpo_seconds,
             r.rpo_met, r.recovery_path, report_path, Jsonb(json.loads(json.dumps(r.to_dict(), default=str)))))


def record_breach(endpoint: Endpoint, dag_id: str, run_id: str, component: str, deadline_time: str | None,
                  late_seconds: float | None, detail: dict) -> None:
    from psycopg.types.json import Jsonb

    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        conn.execute("INSERT INTO rto_breaches (dag_id, run_id, component, deadline_time, late_seconds, detail) "
                     "VALUES (%s, %s, %s, %s, %s, %s)",
                     (dag_id, run_id, component, deadline_time, late_seconds, Jsonb(detail)))


def fetch_result(endpoint: Endpoint, dag_id: str, run_id: str) -> dict | None:
    with connect(endpoint) as conn:
        cur = conn.execute("SELECT * FROM drill_results WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
        row = cur.fetchone()
        return dict(zip([c.name for c in cur.description], row, strict=True)) if row else None


@dataclass(frozen=True)
class DrillLock:
    """Who holds an environment's disruptive-drill lock, and for how long."""

    environment: str
    dag_id: str
    run_id: str
    age_seconds: float

    def describe(self) -> str:
        return f"{self.dag_id} run {self.run_id}, held for {_duration(self.age_seconds)}"

    def holder(self) -> tuple[str, str]:
        return self.dag_id, self.run_id


BREAK_COMMAND = "make break-drill-lock ENV={environment}"  # python -m rehearsal.results break-lock --environment ...


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


_LOCK_SELECT = ("SELECT environment, dag_id, run_id, extract(epoch FROM now() - acquired_at)::float8 "
                "FROM drill_locks WHERE environment = %s")


def acquire_drill_lock(endpoint: Endpoint, environment: str, dag_id: str, run_id: str) -> DrillLock:
    """Take the environment's disruptive-drill lock; returns the holder (ours when acquired)."""
    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        conn.execute("INSERT INTO drill_locks (environment, dag_id, run_id) VALUES (%s, %s, %s) "
                     "ON CONFLICT (environment) DO NOTHING", (environment, dag_id, run_id))
        return DrillLock(*conn.execute(_LOCK_SELECT, (environment,)).fetchone())


def drill_lock_holder(endpoint: Endpoint, environment: str) -> DrillLock | None:
    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        row = conn.execute(_LOCK_SELECT, (environment,)).fetchone()
    return DrillLock(*row) if row else None


def release_drill_lock(endpoint: Endpoint, environment: str, dag_id: str, run_id: str) -> bool:
    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        return conn.execute("DELETE FROM drill_locks WHERE environment = %s AND dag_id = %s AND run_id = %s",
                            (environment, dag_id, run_id)).rowcount == 1


def abort_drill(endpoint: Endpoint, environment: str, dag_id: str, run_id: str, reason: str) -> bool:
    """A stop condition tripped: the drill holding the lock is to stop (its next steps refuse, naming ``reason``)."""
    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        return conn.execute("UPDATE drill_locks SET abort_reason = %s WHERE environment = %s AND dag_id = %s AND run_id = %s",
                            (reason, environment, dag_id, run_id)).rowcount == 1


def set_stop_conditions(endpoint: Endpoint, environment: str, dag_id: str, run_id: str, conditions: dict) -> bool:
    """What every later step of the drill holding the lock checks before it runs."""
    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        return conn.execute("UPDATE drill_locks SET stop_conditions = %s WHERE environment = %s AND dag_id = %s AND run_id = %s",
                            (json.dumps(conditions), environment, dag_id, run_id)).rowcount == 1


@dataclass(frozen=True)
class RunControl:
    """What a drill run's next step must know before it runs: whether the run was called off before it started
    (its reason), told to stop (its reason), and the stop conditions it checks."""

    called_off: str | None = None
    abort_reason: str | None = None
    stop_conditions: dict | None = None


def drill_run_control(endpoint: Endpoint, dag_id: str, run_id: str) -> RunControl:
    """The run's control record; empty for a run that was neither called off nor holds the lock."""
    with connect(endpoint, connect_timeout=2) as conn:
        row = conn.execute(
            "SELECT (SELECT report->>'failure' FROM drill_results WHERE dag_id = %s AND run_id = %s AND status = 'skipped'), "
            "l.abort_reason, l.stop_conditions FROM (SELECT 1) one "
            "LEFT JOIN drill_locks l ON l.dag_id = %s AND l.run_id = %s",
            (dag_id, run_id, dag_id, run_id)).fetchone()
    return RunControl(*row) if row else RunControl()


def break_drill_lock(endpoint: Endpoint, environment: str) -> DrillLock | None:
    """Remove whatever holds the environment's lock (a run that no longer exists); returns what was removed."""
    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        row = conn.execute("DELETE FROM drill_locks WHERE environment = %s RETURNING environment, dag_id, run_id, "
                           "extract(epoch FROM now() - acquired_at)::float8", (environment,)).fetchone()
    return DrillLock(*row) if row else None


# ---------------------------------------------------------------------------------------------- the kill switch
def _switch(row) -> DrillSwitch | None:
    if not row:
        return None
    environment, reason, set_by, set_at = row
    return DrillSwitch(environment, reason, set_by, set_at.astimezone(UTC) if set_at else None)


_SWITCH_SELECT = "SELECT environment, reason, set_by, set_at FROM drill_switch WHERE environment = %s"


def drills_off(endpoint: Endpoint, environment: str, reason: str, set_by: str, *, keep_existing: bool = False) -> DrillSwitch | None:
    """Switch drills off for ``environment``: every drill then skips, naming ``reason``. Returns the switch that was
    set before (None if drills were on). ``keep_existing``: a switch already set stays as it is (an incident does not
    overwrite the reason a person gave)."""
    if not str(reason).strip():
        raise ValueError("switching drills off needs a reason: people who find them off need to know why")
    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        before = _switch(conn.execute(_SWITCH_SELECT, (environment,)).fetchone())
        if keep_existing and before is not None:
            return before
        conn.execute("INSERT INTO drill_switch (environment, reason, set_by) VALUES (%s, %s, %s) ON CONFLICT (environment) "
                     "DO UPDATE SET reason = EXCLUDED.reason, set_by = EXCLUDED.set_by, set_at = now()",
                     (environment, reason.strip(), set_by))
    return before


def drills_on(endpoint: Endpoint, environment: str) -> DrillSwitch | None:
    """Switch drills back on for ``environment``; returns the switch that was removed (None: they were on)."""
    ensure_schema(endpoint)
    with connect(endpoint) as conn:
        return _switch(conn.execute("DELETE FROM drill_switch WHERE environment = %s "
                                    "RETURNING environment, reason, set_by, set_at", (environment,)).fetchone())


def drill_switch(endpoint: Endpoint, environment: str) -> DrillSwitch | None:
    """Drills are off for ``environment`` while this returns a switch."""
    ensure_schema(endpoint)
    with connect(endpoint, connect_timeout=3) as conn:
        return _switch(conn.execute(_SWITCH_SELECT, (environment,)).fetchone())


def main(argv: list[str] | None = None) -> int:
    """``python -m rehearsal.results show-lock|break-lock|drills-off|drills-on|drills-status --environment NAME``
    against ``RESULTS_DSN`` (``drills-off`` needs ``--reason``)."""
    import argparse
    import os

    parser = argparse.ArgumentParser(prog="python -m rehearsal.results")
    parser.add_argument("command", choices=["show-lock", "break-lock", "drills-off", "drills-on", "drills-status"])
    parser.add_argument("--environment", required=True)
    parser.add_argument("--reason", default="", help="drills-off: why (shown to everyone whose drill skips)")
    parser.add_argument("--dsn", default=os.environ.get("RESULTS_DSN"), help="the results database (default: $RESULTS_DSN)")
    args = parser.parse_args(argv)
    if not args.dsn:
        parser.error("no results database: pass --dsn or set RESULTS_DSN (the sandbox writes it to .sandbox/env)")
    endpoint = Endpoint.from_conninfo(args.dsn)
    if args.command.startswith("drills-"):
        return _switch_command(parser, args, endpoint)
    lock = drill_lock_holder(endpoint, args.environment) if args.command == "show-lock" \
        else break_drill_lock(endpoint, args.environment)
    verb = "held by" if args.command == "show-lock" else "broke the lock held by"
    print(f"{args.environment}: {verb} {lock.describe()}" if lock else f"{args.environment}: no drill lock")
    return 0


def _switch_command(parser, args, endpoint: Endpoint) -> int:
    import getpass
    import os
    import socket

    from rehearsal.drills.start_rules import SWITCH_VARIABLE

    env = args.environment
    if args.command == "drills-off":
        if not args.reason.strip():
            parser.error("drills-off needs --reason: people who find drills off need to know why")
        before = drills_off(endpoint, env, args.reason, f"{getpass.getuser()}@{socket.gethostname()} (command line)")
        now = drill_switch(endpoint, env)
        print(f"{env}: drills OFF: {now.describe()}" + (f" (replacing: {before.describe()})" if before else ""))
    elif args.command == "drills-on":
        removed = drills_on(endpoint, env)
        print(f"{env}: drills ON" + (f" (they were off: {removed.describe()})" if removed else " (they were on)"))
    else:
        switch = drill_switch(endpoint, env)
        print(f"{env}: drills OFF: {switch.describe()}" if switch else f"{env}: drills ON")
    variable = os.environ.get(f"AIRFLOW_VAR_{SWITCH_VARIABLE.upper()}", "").strip()
    if variable:
        print(f"{env}: note: AIRFLOW_VAR_{SWITCH_VARIABLE.upper()} is set here ({variable!r}): drills run from this "
              "environment are off whatever the database says")
    print(f"(the Airflow Variable {SWITCH_VARIABLE} switches drills off too; it is set in the Airflow UI, not here)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
