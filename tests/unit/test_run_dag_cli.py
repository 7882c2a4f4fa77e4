"""scripts/run_dag.py (make drill, make run): bad --conf is refused before anything starts."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "run_dag.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "dr_drill_postgres_primary_loss", *args],
                          capture_output=True, text=True, timeout=60)


def test_a_conf_that_is_not_json_exits_2_and_says_so():
    out = run("--conf", "{mode: disruptive}")
    assert out.returncode == 2
    assert "[rehearsal] --conf is not JSON" in out.stdout


def test_every_repeated_conf_is_checked_before_the_first_run():
    out = run("--conf", '{"mode": "non_disruptive"}', "--conf", "not json")
    assert out.returncode == 2
    assert "[rehearsal] --conf is not JSON" in out.stdout
    assert "running" not in out.stdout
