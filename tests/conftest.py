"""Test session setup: an isolated sandbox (own state dir, runtime dir, ports) and Airflow home.

Environment variables are set here, before anything imports Airflow or the sandbox.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SESSION = Path(tempfile.mkdtemp(prefix="rehearsal-tests-"))
os.environ["REHEARSAL_SANDBOX_DIR"] = str(SESSION / "sandbox")
os.environ["REHEARSAL_RUNTIME"] = f"/var/tmp/rehearsal-test-{uuid.uuid4().hex[:8]}"
os.environ["REHEARSAL_REPORTS_DIR"] = str(SESSION / "reports")
os.environ["AIRFLOW_HOME"] = str(SESSION / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("SANDBOX_SCALE", "0.05")
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "include"), str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")])
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def load_env_file(path: Path) -> None:
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            os.environ[key] = shlex.split(value)[0] if value else ""


@pytest.fixture(scope="session")
def sandbox_session():
    """The sandbox platform, up for the whole session and torn down (and checked for leaks) at the end."""
    from rehearsal.sandbox.platform import Sandbox

    sb = Sandbox(Path(os.environ["REHEARSAL_SANDBOX_DIR"]))
    sb.up(scale=float(os.environ["SANDBOX_SCALE"]), archive_timeout=5)
    load_env_file(sb.dir / "env")
    yield sb
    sb = Sandbox(sb.dir)  # drills changed the topology: re-read it
    sb.down()
    from tests.helpers import server_processes

    assert server_processes(os.environ["REHEARSAL_RUNTIME"]) == [], "postgres processes left after sandbox down"
    import shutil

    shutil.rmtree(os.environ["REHEARSAL_RUNTIME"], ignore_errors=True)
    shutil.rmtree(SESSION, ignore_errors=True)


@pytest.fixture
def sandbox(sandbox_session):
    """The sandbox as it is now: drills change its topology, so its inventory is re-read for every test."""
    from rehearsal.sandbox.platform import Sandbox

    return Sandbox(sandbox_session.dir)


@pytest.fixture(scope="session")
def airflow_db():
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "airflow", "pools", "set", "restores", "2", "Concurrent restores"],
                   check=True, capture_output=True)
    return home


from tests.backup_fixtures import (  # noqa: E402,F401 - fixtures shared by integration and fault tests
    nothing_lost_nothing_left,
    originals,
    scratch,
    scratch_objects,
    store,
)
