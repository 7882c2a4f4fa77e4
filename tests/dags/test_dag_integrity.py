"""DAG integrity: imports, no network or connection lookups while parsing, docs, tags, retries, deadlines."""
from __future__ import annotations

import socket
from datetime import timedelta
from pathlib import Path
from unittest import mock

import pytest
import yaml

from rehearsal.catalog import DEFAULT_CATALOG

REPO = Path(__file__).resolve().parents[2]
EXPECTED = {"dr_drill_postgres_primary_loss", "dr_backup_freshness", "dr_backup_verify", "dr_backup_postgres"}
NOT_IDEMPOTENT = {"inject_primary_loss"}  # killing the primary twice is not a retry


def load_dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.sdk import BaseHook, Connection, Variable

    def no_network(*args, **kwargs):
        raise AssertionError(f"network call while parsing DAGs: {args}")

    with mock.patch.object(BaseHook, "get_connection") as get_connection, \
            mock.patch.object(Connection, "get") as connection_get, \
            mock.patch.object(Variable, "get") as variable_get, \
            mock.patch.object(socket.socket, "connect", no_network):
        bag = load_dagbag()
    assert get_connection.call_count == 0, "a connection was looked up while parsing"
    assert connection_get.call_count == 0, "a connection was looked up while parsing"
    assert variable_get.call_count == 0, "a Variable was read while parsing"
    return bag


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert EXPECTED <= set(dagbag.dag_ids)


def test_one_dag_per_file_named_after_it(dagbag):
    for dag_id in dagbag.dag_ids:
        assert Path(dagbag.dags[dag_id].fileloc).stem == dag_id


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_every_dr_dag_has_tags_doc_retries_and_a_catalog_deadline(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert "dr" in dag.tags and len(dag.tags) >= 2
    assert dag.doc_md and dag.doc_md.strip().startswith("###")
    for task in dag.tasks:
        if task.task_id in NOT_IDEMPOTENT:
            assert task.retries == 0, f"{dag_id}.{task.task_id} must not be retried"
        else:
            assert task.retries >= 1, f"{dag_id}.{task.task_id} is idempotent and should retry"
    deadlines = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert deadlines and deadlines[0] is not None, f"{dag_id} has no deadline"
    assert deadlines[0].callback.path == "rehearsal_airflow.callbacks.deadline.record_rto_breach"


def test_drill_deadline_is_the_control_plane_rto_and_follows_the_catalog(dagbag, tmp_path, monkeypatch):
    assert dagbag.dags["dr_drill_postgres_primary_loss"].deadline[0].interval == timedelta(hours=2)
    data = yaml.safe_load(DEFAULT_CATALOG.read_text())
    data["components"]["control_plane_api"]["rto"] = "45m"
    data["components"]["control_plane_api"]["rpo"] = "7m"
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("REHEARSAL_TARGETS_FILE", str(path))
    bag = load_dagbag()
    assert bag.dags["dr_drill_postgres_primary_loss"].deadline[0].interval == timedelta(minutes=45)
    assert bag.dags["dr_backup_freshness"].deadline[0].interval == timedelta(minutes=7)


def test_drill_steps_read_like_the_playbook(dagbag):
    dag = dagbag.dags["dr_drill_postgres_primary_loss"]
    order = [t for t in dag.topological_sort()]
    ids = [t.task_id for t in order]
    for earlier, later in [("guard_drill_environment", "inject_primary_loss"), ("inject_primary_loss", "detect_primary_loss"),
                           ("detect_primary_loss", "choose_recovery_path"), ("choose_recovery_path", "restore_pitr"),
                           ("validate_recovered_database", "switch_service_discovery"),
                           ("switch_service_discovery", "confirm_writes_resumed"), ("confirm_writes_resumed", "measure_rto_rpo"),
                           ("measure_rto_rpo", "tear_down_drill_resources"), ("tear_down_drill_resources", "write_drill_report")]:
        assert ids.index(earlier) < ids.index(later)
    assert dag.get_task("tear_down_drill_resources").is_teardown
    assert dag.params["mode"] == "non_disruptive"  # the safe default; disruptive must be asked for


def test_freshness_runs_at_least_every_five_minutes(dagbag):
    assert dagbag.dags["dr_backup_freshness"].schedule == "*/5 * * * *"
