"""scripts/run_dag.py (make drill, make run): bad --conf or APPROVE is refused before anything starts."""
from __future__ import annotations

import os
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


def test_a_conf_that_is_not_an_object_exits_2():
    out = run("--conf", "[1, 2]")
    assert out.returncode == 2
    assert "[rehearsal] --conf must be a JSON object" in out.stdout


def test_approve_other_than_yes_or_no_exits_2_before_anything_starts():
    out = subprocess.run([sys.executable, str(SCRIPT), "dr_drill_postgres_primary_loss"], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "APPROVE": "maybe"})
    assert out.returncode == 2
    assert "[rehearsal] APPROVE='maybe' is neither yes nor no" in out.stdout
    assert "running" not in out.stdout
