"""Run one DAG once against the sandbox, in-process (``dag.test``), and exit with the run's outcome.

Used by ``make drill`` and ``make run``. A failure prints the failed task and its reason. The DAG's
Deadline Alert is cleared on this in-process copy (upstream bug apache/airflow#73428 crashes
``dag.test()`` for DAGs with ``deadline=``; deadlines are proven on a real scheduler instead).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "include"), str(REPO / "plugins")]


def say(message: str) -> None:
    print(f"[rehearsal] {message}", flush=True)


def ensure_sandbox() -> None:
    from rehearsal.sandbox.platform import Sandbox, read_env_file

    sandbox = Sandbox()
    if not sandbox.is_up():
        say(f"bringing the sandbox up (SANDBOX_SCALE={os.environ.get('SANDBOX_SCALE', '1')})")
        sandbox.up()
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
    out = {}
    for task_id, value in rows:
        out[task_id] = json.loads(value) if isinstance(value, str) else value
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_id")
    parser.add_argument("--conf", action="append", default=None,
                        help="run conf as JSON; repeat it to run the DAG once per conf, in order, in this one process")
    parser.add_argument("--sandbox", action="store_true", help="bring the sandbox up first and use its environment")
    parser.add_argument("--quiet", action="store_true", help="only print progress lines, not task logs")
    args = parser.parse_args()
    try:
        confs = [json.loads(c or "{}") for c in (args.conf or ["{}"])]
    except ValueError as exc:
        say(f"--conf is not JSON: {exc}")
        return 2
    if args.sandbox:
        ensure_sandbox()
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
    ensure_airflow_db()
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        for path, err in bag.import_errors.items():
            say(f"import error in {path}: {err}")
        return 2
    dag = bag.get_dag(args.dag_id)
    if dag is None:
        say(f"no DAG {args.dag_id!r}; known: {', '.join(sorted(bag.dag_ids))}")
        return 2
    dag.deadline = None  # see module docstring
    if args.quiet:
        logging.getLogger("airflow").setLevel(logging.WARNING)
    outcome = 0
    for conf in confs:  # one process: Airflow's in-process execution API is built once (about 10 s)
        outcome = max(outcome, run_once(dag, args.dag_id, conf))
    return outcome


def run_once(dag, dag_id: str, conf: dict) -> int:
    say(f"running {dag_id} with conf {json.dumps(conf)}")
    started = time.monotonic()
    dag_run = dag.test(run_conf=conf)
    elapsed = time.monotonic() - started
    state = str(dag_run.state)
    steps = step_records(dag_id, dag_run.run_id)
    for task_id, record in sorted(steps.items(), key=lambda kv: kv[1].get("started_at") or ""):
        say(f"  {record.get('status', '?'):8} {task_id}: {record.get('detail', '')}")
    from rehearsal.environment import Environment
    from rehearsal.report import report_paths

    env = Environment.from_mapping(json.loads(os.environ.get("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", "{}")))
    json_path, md_path = report_paths(env.reports_dir, dag_id, dag_run.run_id)
    if json_path.exists():
        report = json.loads(json_path.read_text())
        say(f"report: {json_path}")
        say(f"  status {report['status']}; path {report['recovery_path']}; "
            f"RTO {report['measured_rto_seconds']} s (target {report['target_rto_seconds']:.0f} s); "
            f"RPO {report['measured_rpo_seconds']} s (target {report['target_rpo_seconds']:.0f} s)")
    say(f"run {dag_run.run_id}: {state} in {elapsed:.1f}s")
    if state != "success":
        failed = [(t, r) for t, r in steps.items() if r.get("status") == "failed"]
        for task_id, record in failed:
            say(f"FAILED task {task_id}: {record.get('detail')}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
