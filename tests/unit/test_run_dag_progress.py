"""scripts/run_dag.py: progress lines as the run goes, Airflow's raw log in a named file, approvals answered.

A throwaway DAG (an ApprovalOperator, then a PythonOperator) in a temporary dags folder, run by the script as a
subprocess on a temporary SQLite metadata database (no sandbox). Each run pays Airflow's start-up (~15 s).
"""
from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_dag.py"
sys.path.insert(0, str(REPO / "scripts"))

from run_progress import approve_setting, seconds, summary_line, task_line  # noqa: E402

DAG_ID = "rehearsal_approval_probe"
DAG_FILE = f'''
from datetime import datetime

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG


def after(ti):
    payload = ti.xcom_pull(task_ids="gate.approve")
    print("DOWNSTREAM RAN, responder:", payload["responded_by_user"])


with DAG("{DAG_ID}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    gate = ApprovalOperator(task_id="gate.approve", subject="Fail over to the standby?",
                            body="**Path**: promote_standby\\n\\n- replay lag 0.2 s")
    gate >> PythonOperator(task_id="after", python_callable=after)
'''
PROGRESS_LINE = re.compile(r"^\[rehearsal\] +\d+\.\ds  (\S+) +(\S+)(?:: (.*))?$")
ANSWER_FROM_OUTSIDE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from airflow.models.hitl import HITLDetail
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from run_progress import respond

    with create_session() as session:
        ti_id = session.scalar(select(HITLDetail.ti_id).where(HITLDetail.responded_at.is_(None)))
    print(respond(ti_id, "Approve", "someone-in-the-ui"))
""")


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """The environment of a run: its own dags folder, Airflow home and SQLite DB, and log folder."""
    root = tmp_path_factory.mktemp("run-dag-progress")
    (root / "dags").mkdir()
    (root / "dags" / "approval_probe.py").write_text(DAG_FILE)
    env = {k: v for k, v in os.environ.items() if k not in ("APPROVE", "REHEARSAL_RAW_LOG")}
    env.update({
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{root / 'airflow' / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "REHEARSAL_SANDBOX_DIR": str(root / "sandbox"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "include"), str(REPO / "plugins")]),
    })
    return root, env


def run(probe, **extra) -> subprocess.CompletedProcess:
    root, env = probe
    return subprocess.run([sys.executable, str(SCRIPT), DAG_ID], env={**env, **extra}, cwd=root,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def task_lines(stdout: str) -> dict[str, tuple[str, str]]:
    """task -> (state, detail) of its last progress line."""
    out = {}
    for line in stdout.splitlines():
        if m := PROGRESS_LINE.match(line):
            out[m.group(2)] = (m.group(1), m.group(3) or "")
    return out


def full_log(stdout: str) -> str:
    path = Path(next(ln for ln in stdout.splitlines() if ln.startswith("[rehearsal] full log: ")).split(": ", 1)[1])
    assert path.is_file()
    return path.read_text()


class Lines:
    """A running process's stdout, read by a thread, so a test can wait for a line with a timeout."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.seen, self.chunks = proc, "", queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while chunk := os.read(self.proc.stdout.fileno(), 4096):
            self.chunks.put(chunk.decode())
        self.chunks.put(None)

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            chunk = self.chunks.get(timeout=max(0.1, deadline - time.monotonic()))
            assert chunk is not None, f"exited before {text!r}:\n{self.seen}"
            self.seen += chunk

    def rest(self) -> str:
        self.proc.wait(timeout=120)
        while (chunk := self.chunks.get(timeout=10)) is not None:
            self.seen += chunk
        return self.seen


def test_approve_yes_runs_downstream_with_a_line_per_task_and_the_raw_log_in_a_file(probe):
    out = run(probe, APPROVE="yes")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = task_lines(out.stdout)
    assert lines["gate.approve"] == ("success", "Approve by APPROVE=yes")
    assert lines["after"][0] == "success"
    assert "[rehearsal]   subject: Fail over to the standby?" in out.stdout
    assert "[rehearsal]   | **Path**: promote_standby" in out.stdout
    assert "[rehearsal]   options: Approve / Reject" in out.stdout
    assert re.search(r"^\[rehearsal\] run manual__\S+: success in \d+\.\ds$", out.stdout, re.M)
    # Airflow's own output is in the named file, not on the terminal
    log = full_log(out.stdout)
    assert "DOWNSTREAM RAN, responder: {'id': 'APPROVE=yes', 'name': 'APPROVE=yes'}" in log
    assert "Waiting for Human-in-the-loop input" in log and "[DAG TEST]" in log
    assert "DOWNSTREAM RAN" not in out.stdout and "[DAG TEST]" not in out.stdout and out.stderr == ""
    assert all(ln.startswith("[rehearsal] ") for ln in out.stdout.splitlines()), out.stdout


def test_approve_no_rejects_and_the_downstream_task_is_skipped(probe):
    out = run(probe, APPROVE="no")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = task_lines(out.stdout)
    assert lines["gate.approve"] == ("success", "Reject by APPROVE=no")
    assert lines["after"] == ("skipped", "")
    assert "[rehearsal]   approval gate.approve: Reject by APPROVE=no" in out.stdout
    assert "DOWNSTREAM RAN" not in full_log(out.stdout)


def test_a_terminal_is_asked_and_its_answer_recorded_as_terminal(probe):
    root, env = probe
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, str(SCRIPT), DAG_ID], env=env, cwd=root, stdin=slave,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    os.close(slave)
    try:
        lines = Lines(proc)
        lines.wait_for("Approve? [y/N] ")
        os.write(master, b"maybe\n")
        lines.wait_for("answer y (approve) or n (reject)")
        os.write(master, b"y\n")
        stdout = lines.rest()
    finally:
        proc.kill() if proc.poll() is None else None
        os.close(master)
    assert proc.returncode == 0, stdout
    assert task_lines(stdout)["gate.approve"] == ("success", "Approve by terminal")
    assert "DOWNSTREAM RAN, responder: {'id': 'terminal', 'name': 'terminal'}" in full_log(stdout)


def test_without_a_terminal_or_approve_it_says_how_to_answer_and_waits_for_an_answer_from_outside(probe):
    root, env = probe
    proc = subprocess.Popen([sys.executable, str(SCRIPT), DAG_ID], env=env, cwd=root, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        lines = Lines(proc)
        lines.wait_for("waiting for an answer: answer it on the Required Actions page")
        assert "APPROVE=yes" in lines.seen
        time.sleep(2)
        assert proc.poll() is None, "it stopped waiting"
        answer = subprocess.run([sys.executable, "-c", ANSWER_FROM_OUTSIDE, str(REPO / "scripts")], env=env,
                                cwd=root, capture_output=True, text=True, timeout=120)
        assert answer.stdout.strip().endswith("None"), answer.stdout + answer.stderr
        stdout = lines.rest()
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, stdout
    assert task_lines(stdout)["gate.approve"] == ("success", "Approve by someone-in-the-ui")
    assert task_lines(stdout)["after"][0] == "success"


def test_figures_are_rounded_for_people():
    assert [seconds(v) for v in (None, 0, 0.04, 0.31, 4.44, 99.96, 312.4, 7200.0)] == [
        "not measured", "0 s", "< 0.1 s", "0.3 s", "4.4 s", "100 s", "312 s", "7200 s"]
    report = {"status": "passed", "recovery_path": "promote_standby", "measured_rto_seconds": 4.4412,
              "target_rto_seconds": 7200.0, "measured_rpo_seconds": 0.3141, "target_rpo_seconds": 900.0,
              "evidence": {"rpo_is_lower_bound": False}}
    assert summary_line(report) == ("status passed; path promote_standby; RTO 4.4 s (target 7200 s); "
                                    "RPO 0.3 s (target 900 s)")
    lower = {**report, "status": "failed", "measured_rpo_seconds": 1800.0, "evidence": {"rpo_is_lower_bound": True}}
    assert summary_line(lower).endswith("RPO at least 1800 s (target 900 s)")
    unmeasured = {**report, "status": "aborted", "measured_rto_seconds": None, "measured_rpo_seconds": None}
    assert "RTO not measured (target 7200 s); RPO not measured (target 900 s)" in summary_line(unmeasured)
    assert task_line(4.23, "success", "postgres_failover.assess_cluster", "ok") == \
        "  4.2s  success  postgres_failover.assess_cluster: ok"


def test_approve_is_yes_or_no():
    assert approve_setting({}) is None
    assert [approve_setting({"APPROVE": v}) for v in ("yes", "Y", "1", "no", "N", "0")] == ["Approve"] * 3 + ["Reject"] * 3
    with pytest.raises(ValueError):
        approve_setting({"APPROVE": "maybe"})
