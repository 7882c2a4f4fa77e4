"""Test session setup: an isolated sandbox (own state dir, runtime dir, address block) and Airflow home.

Environment variables are set here, before anything imports Airflow or the sandbox.
"""
from __future__ import annotations

import os
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
# The session's hosts take a block of their own (a developer's sandbox derives one in 127.20-99).
os.environ["REHEARSAL_ADDRESS_BLOCK"] = f"127.{100 + uuid.uuid4().int % 150}"
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
    from rehearsal_sandbox.platform import read_env_file

    os.environ.update(read_env_file(path))


@pytest.fixture(scope="session")
def sandbox_session():
    """The sandbox platform, up for the whole session and torn down (and checked for leaks) at the end."""
    sb = Sandbox(Path(os.environ["REHEARSAL_SANDBOX_DIR"]))
    sb.up(scale=float(os.environ["SANDBOX_SCALE"]), archive_timeout=5)
    load_env_file(sb.dir / "env")
    yield sb
    sb = Sandbox(sb.dir)  # drills changed the topology: re-read it
    sb.down()
    assert server_processes(os.environ["REHEARSAL_RUNTIME"]) == [], "postgres processes left after sandbox down"
    import shutil

    shutil.rmtree(os.environ["REHEARSAL_RUNTIME"], ignore_errors=True)
    shutil.rmtree(SESSION, ignore_errors=True)


@pytest.fixture
def sandbox(sandbox_session):
    """The sandbox as it is now: drills change its topology, so its inventory is re-read for every test."""
    return Sandbox(sandbox_session.dir)


@pytest.fixture
def platform(sandbox, airflow_db):
    """The sandbox before a drill, and proof afterwards that it is whole, nothing leaked and no source backup changed."""
    before = Sandbox(sandbox.dir)
    fingerprint = source_fingerprint(before.store())
    yield before
    after = Sandbox(sandbox.dir)
    assert after.is_up(), after.status()
    assert leftovers(after) == {"processes": [], "scratch": []}
    now = source_fingerprint(after.store())
    assert {k: now.get(k) for k in fingerprint} == fingerprint, "a source backup changed"
    with connect(after.results_endpoint()) as conn:
        assert conn.execute("SELECT run_id FROM drill_results WHERE status = 'in_progress'").fetchall() == []
        assert conn.execute("SELECT run_id FROM drill_locks").fetchall() == []
    assert resolve(after.aws("route53"), after.discovery()) == (after.primary.host, after.primary.port)
    assert accepts_writes(after.endpoint(after.primary, "admin").with_(dbname="postgres"))[0]


@pytest.fixture(scope="session")
def airflow_db():
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "airflow", "pools", "set", "restores", "2", "Concurrent restores"],
                   check=True, capture_output=True)
    return home


from rehearsal.discovery import resolve  # noqa: E402 - after the environment above is set
from rehearsal.postgres.connection import accepts_writes, connect  # noqa: E402
from rehearsal_sandbox.platform import Sandbox  # noqa: E402
from tests.backup_fixtures import (  # noqa: E402,F401 - fixtures shared by integration and fault tests
    nothing_lost_nothing_left,
    originals,
    scratch,
    scratch_objects,
    store,
)
from tests.helpers import leftovers, server_processes, source_fingerprint  # noqa: E402
