"""Run one DAG once against the sandbox, in-process (``dag.test``), and exit with the run's outcome.

Used by ``make drill`` and ``make run``. While the run goes, it prints one line per task as it starts and ends
(elapsed time since the run started, state, the step's detail) and any approval a task is waiting for; Airflow's
raw log goes to a file, named at the end (``REHEARSAL_RAW_LOG=1`` or ``--raw-log`` prints it instead). A pending
approval is answered by ``APPROVE=yes`` (or ``no``), else on the terminal, else it waits for an answer from the
Required Actions page of an api-server on the same metadata database (see ``run_progress.py``). A failure prints
the failed task and its reason; a drill that skipped (drills switched off, or a late scheduled start) prints why.
Exit codes: 0 success/passed, a drill skipped or a scenario not applicable (nothing was touched: not a failure),
3 degraded (service recovered, something left undone, each item printed), 1 failed, 2 bad
``--conf``/``APPROVE``/params or DAG import errors; with several ``--conf``, the worst (2, then 1, then 3).

The DAG's Deadline Alert is cleared on this in-process copy (upstream bug apache/airflow#73428 crashes
``dag.test()`` for DAGs with ``deadline=``; deadlines are proven on a real scheduler instead).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "plugins")]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run_progress import (  # noqa: E402 - after sys.path
    Approver,
    Progress,
    RawLog,
    RunWatcher,
    approve_setting,
    newest_run_id,
    one_line,
    raw_log_path,
    step_value,
    summary_line,
)

PROGRESS = Progress()


def say(message: str) -> None:
    PROGRESS.say(message)


def ensure_sandbox() -> None:
    from rehearsal_sandbox.platform import Sandbox, read_env_file

    sandbox = Sandbox()
    if not sandbox.exists:
        say(f"bringing the sandbox up (SANDBOX_SCALE={os.environ.get('SANDBOX_SCALE', '1')})")
        with contextlib.redirect_stdout(PROGRESS.stream or sys.stdout):  # its [sandbox] lines are progress too
            sandbox.up()
    else:
        # A sandbox with a dead member is what a runbook is for: use it as it is, never rebuild it underneath.
        down = [f"{name} ({item['detail']})" for name, item in sandbox.status().items() if not item["ok"]]
        if down:
            say("the sandbox is not whole: " + "; ".join(down) + " (`make sandbox-down sandbox-up` rebuilds it)")
    os.environ.update(read_env_file(sandbox.dir / "env"))


def ensure_airflow_db() -> None:
    home = Path(os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".sandbox" / "airflow")))
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".migrated"
    if not marker.exists():
        say("initialising the Airflow metadata database")
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "airflow", "pools", "set", "restores", "2", "Concurrent restores"],
                       check=True, capture_output=True)
        marker.touch()


def step_records(dag_id: str, run_id: str) -> dict[str, dict]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(select(XComModel.task_id, XComModel.value).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == "step")).all()
    return {task_id: step_value(value) for task_id, value in rows}


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "y", "on")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_id")
    parser.add_argument("--conf", action="append", default=None,
                        help="run conf as JSON; repeat it to run the DAG once per conf, in order, in this one process")
    parser.add_argument("--sandbox", action="store_true", help="bring the sandbox up first and use its environment")
    parser.add_argument("--quiet", action="store_true", help="only print a line when a task ends, not when it starts")
    parser.add_argument("--raw-log", action="store_true", default=truthy(os.environ.get("REHEARSAL_RAW_LOG")),
                        help="print Airflow's raw log here too, instead of into a file (or REHEARSAL_RAW_LOG=1)")
    args = parser.parse_args()
    try:
        confs = [json.loads(c or "{}") for c in (args.conf or ["{}"])]
    except ValueError as exc:
        say(f"--conf is not JSON: {exc}")
        return 2
    if not all(isinstance(conf, dict) for conf in confs):
        say("--conf must be a JSON object")
        return 2
    try:
        automatic = approve_setting()
    except ValueError as exc:
        say(f"{exc}: use APPROVE=yes or APPROVE=no, or leave it unset to be asked")
        return 2
    raw = None if args.raw_log else RawLog(raw_log_path(args.dag_id, REPO), PROGRESS)
    if raw is not None:
        raw.start()
        say(f"Airflow's log goes to {raw.path}")
    try:
        return run(args, confs, automatic)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as exc:
        traceback.print_exc()
        say(f"error: {type(exc).__name__}: {exc}")
        return 1
    finally:
        if raw is not None:
            say(f"full log: {raw.path}")
            raw.stop()


def run(args, confs: list[dict], automatic: str | None) -> int:
    if args.sandbox:
        ensure_sandbox()
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
    ensure_airflow_db()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    if bag.import_errors:
        for path, err in bag.import_errors.items():
            say(f"import error in {path}: {err}")
        return 2
    dag = bag.get_dag(args.dag_id)
    if dag is None:
        say(f"no DAG {args.dag_id!r}; known: {', '.join(sorted(bag.dag_ids))}")
        return 2
    dag.deadline = None  # see module docstring
    approver = Approver(
        PROGRESS, automatic=automatic, stdin=sys.stdin if sys.stdin is not None and sys.stdin.isatty() else None,
        how_to_answer=("answer it on the Required Actions page of an Airflow api-server using this metadata database "
                       f"(AIRFLOW_HOME={os.environ['AIRFLOW_HOME']}), or stop this run (Ctrl-C) and run it again "
                       "with APPROVE=yes (APPROVE=no rejects)"))
    outcome = 0
    for conf in confs:  # one process: Airflow's in-process execution API is built once (about 10 s)
        outcome = max(outcome, run_once(dag, args.dag_id, conf, approver, show_starts=not args.quiet), key=SEVERITY.get)
    return outcome


SEVERITY = {0: 0, 3: 1, 1: 2, 2: 3}  # exit codes, least to most severe

def run_once(dag, dag_id: str, conf: dict, approver: Approver, show_starts: bool = True) -> int:
    from airflow.sdk.exceptions import ParamValidationError

    say(f"running {dag_id} with conf {json.dumps(conf)}")
    watcher = RunWatcher(dag_id, newest_run_id(dag_id), approver, PROGRESS, show_starts=show_starts)
    started = time.monotonic()
    watcher.start()
    try:
        dag_run = dag.test(run_conf=conf)
    except ParamValidationError as exc:
        watcher.finish()
        say(f"--conf {json.dumps(conf)} refused: {exc}")
        return 2
    except BaseException:
        watcher.finish()
        raise
    watcher.finish(dag_run.run_id)
    elapsed = time.monotonic() - started
    state = str(dag_run.state)
    steps = step_records(dag_id, dag_run.run_id)
    from rehearsal.environment import Environment
    from rehearsal.report import report_paths

    env = Environment.from_mapping(json.loads(os.environ.get("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", "{}")))
    json_path, _ = report_paths(env.reports_dir, dag_id, dag_run.run_id)
    report = json.loads(json_path.read_text()) if json_path.exists() else {}
    if report:
        say(f"report: {json_path}")
        say(f"  {summary_line(report)}")
    if report.get("status") == "skipped":
        say(f"SKIPPED, nothing was touched: {one_line(report.get('failure') or 'no reason recorded')}")
    if report.get("status") == "not_applicable":
        say(f"NOT APPLICABLE, nothing was changed: {one_line(report.get('failure') or 'no reason recorded')}")
    if report.get("status") == "degraded":
        for item in report.get("degraded", []):
            say(f"DEGRADED {item.get('item')}: {one_line(item.get('what_to_do', ''))}")
    for task, answer in watcher.approvals.items():
        say(f"  approval {task}: {answer}")
    say(f"run {dag_run.run_id}: {state} in {elapsed:.1f}s")
    if report.get("status") == "degraded":
        return 3  # service recovered, something left undone: not a failure, not a pass
    if state != "success":
        failed = {t for t, r in steps.items() if r.get("status") == "failed"}
        failed |= {task_id for (task_id, _), (_, ti_state) in watcher.seen.items() if ti_state == "failed"}
        for task_id in sorted(failed):
            say(f"FAILED task {task_id}: {one_line(steps.get(task_id, {}).get('detail') or 'see the full log')}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
