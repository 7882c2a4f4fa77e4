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
EXPECTED = {"dr_drill_postgres_primary_loss", "dr_runbook_postgres_failover", "dr_backup_freshness", "dr_backup_verify",
            "dr_backup_postgres", "dr_scenario_a_control_plane_down", "dr_scenario_b_postgres_corruption",
            "dr_drill_control_plane_outage", "dr_drill_postgres_corruption", "dr_runbook_volume_restore",
            "dr_drill_volume_restore", "dr_scenario_d_snapshot_store_loss", "dr_drill_snapshot_store_loss",
            "dr_scenario_c_region_outage", "dr_drill_region_outage", "dr_backup_edge_config",
            "dr_snapshot_store_scrub"}
SCENARIO_A_STEPS = ["declare_incident", "approve_degrading_steps", "verify_hosts_running_workloads", "restore_api_read_only", "restore_scheduler",
                    "restore_reconciler_paused", "validate_postgres_health", "resume_writes", "resume_reconciler_gradually",
                    "confirm_time_to_converge"]
SCENARIO_B_STEPS = ["declare_incident", "establish_corruption_time", "pick_last_good_backup", "approve_freeze_and_restore",
                    "freeze_mutations", "keep_writes_since_corruption", "archive_wal_past_corruption",
                    "postgres_failover.assess_cluster",
                    "postgres_failover.recover_database", "postgres_failover.validate_damage_gone",
                    "postgres_failover.switch_service_discovery", "postgres_failover.rebuild_redundancy", "repair_drift",
                    "resume_writes", "resume_reconciler_gradually", "confirm_time_to_converge"]
RUNBOOK_STEPS = ["assess_cluster", "choose_recovery_path", "approve_recovery", "fence_old_primary", "recover_database",
                 "validate_recovered_database", "reenable_wal_archiving", "switch_service_discovery",
                 "confirm_clients_followed", "rebuild_redundancy"]
NOT_IDEMPOTENT = {"inject_primary_loss", "inject_control_plane_outage", "inject_corruption", "inject_snapshot_store_loss"}
# A fault twice is no retry. The region fault may die with the region it takes down (its worker ran there): its one
# retry only adopts that fault, and refuses to inject one (tests/unit/test_region_fault_retry.py).
ADOPTS_ON_RETRY = {"inject_region_outage"}


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
        elif task.task_id in ADOPTS_ON_RETRY:
            assert task.retries == 1 and hasattr(task, "_own_earlier_try"), f"{dag_id}.{task.task_id} retries only to adopt"
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


def _in_order(dag, ids: list[str]) -> None:
    order = [t.task_id for t in dag.topological_sort()]
    assert [i for i in order if i in ids] == ids, order


def test_the_runbook_reads_like_the_playbook_and_demands_a_mode(dagbag):
    dag = dagbag.dags["dr_runbook_postgres_failover"]
    _in_order(dag, [f"postgres_failover.{step}" for step in RUNBOOK_STEPS] + ["write_runbook_report"])
    assert dag.schedule is None  # triggered by people (UI, REST) or other DAGs
    assert not dag.params.get_param("mode").has_value  # required: no default
    assert dag.params["approve"] == "wait" and dag.params["target"] == "production" and dag.params["path"] == "auto"


def test_the_drill_runs_the_runbooks_own_tasks_between_its_fault_and_its_measurement(dagbag):
    drill, runbook = dagbag.dags["dr_drill_postgres_primary_loss"], dagbag.dags["dr_runbook_postgres_failover"]
    in_runbook = {t.task_id: type(t) for t in runbook.tasks if t.task_id.startswith("postgres_failover.")}
    in_drill = {t.task_id: type(t) for t in drill.tasks if t.task_id.startswith("postgres_failover.")}
    assert in_drill == in_runbook  # the same steps, the same operators: the drill cannot drift from the runbook
    _in_order(drill, ["guard_drill_environment", "inject_primary_loss", "postgres_failover.assess_cluster",
                      "postgres_failover.rebuild_redundancy", "measure_rto_rpo", "restore_drill_environment",
                      "write_drill_report"])
    assert drill.get_task("restore_drill_environment").trigger_rule == "all_done"
    assert drill.get_task("write_drill_report").trigger_rule == "all_done"
    assert drill.params["mode"] == "non_disruptive"  # the safe default; disruptive must be asked for


def test_runbook_operators_import_nothing_from_the_sandbox():
    runbook_modules = [*(REPO / "plugins/rehearsal_airflow/runbooks").glob("*.py"),
                       *(REPO / "plugins/rehearsal_airflow/operators").glob("*.py"), *(REPO / "plugins/rehearsal_airflow/hooks").glob("*.py"),
                       *(REPO / "include/rehearsal").rglob("*.py")]
    offenders = [str(p.relative_to(REPO)) for p in runbook_modules if "rehearsal_sandbox" in p.read_text()]
    assert offenders == []


def test_freshness_runs_at_least_every_five_minutes(dagbag):
    assert dagbag.dags["dr_backup_freshness"].schedule == "*/5 * * * *"


@pytest.mark.parametrize(("dag_id", "group", "steps"), [("dr_scenario_a_control_plane_down", "scenario_a", SCENARIO_A_STEPS),
                                                        ("dr_scenario_b_postgres_corruption", "scenario_b", SCENARIO_B_STEPS)])
def test_the_scenarios_read_like_the_plan_and_demand_a_mode(dagbag, dag_id, group, steps):
    dag = dagbag.dags[dag_id]
    _in_order(dag, [f"{group}.{step}" for step in steps] + ["write_scenario_report"])
    assert dag.schedule is None and not dag.params.get_param("mode").has_value
    assert dag.params["approve"] == "wait"


@pytest.mark.parametrize(("drill_id", "scenario_id", "group", "fault"), [
    ("dr_drill_control_plane_outage", "dr_scenario_a_control_plane_down", "scenario_a", "inject_control_plane_outage"),
    ("dr_drill_postgres_corruption", "dr_scenario_b_postgres_corruption", "scenario_b", "inject_corruption")])
def test_the_control_plane_drills_run_their_scenarios_own_tasks(dagbag, drill_id, scenario_id, group, fault):
    drill, scenario = dagbag.dags[drill_id], dagbag.dags[scenario_id]
    in_scenario = {t.task_id: type(t) for t in scenario.tasks if t.task_id.startswith(f"{group}.")}
    assert {t.task_id: type(t) for t in drill.tasks if t.task_id.startswith(f"{group}.")} == in_scenario
    _in_order(drill, ["guard_drill_environment", fault, f"{group}.declare_incident", f"{group}.confirm_time_to_converge",
                      "restore_drill_environment", "write_drill_report"])
    assert drill.get_task("guard_drill_environment").stop_conditions["min_dataplane_success"] == 0.95
    assert drill.get_task("restore_drill_environment").trigger_rule == "all_done"
    assert drill.schedule and drill.params["mode"] == "disruptive"


SCENARIO_C_MULTI = ["approve_region_failover", "shift_edge_traffic", "promote_standby_control_plane.choose_recovery_path",
                    "promote_standby_control_plane.recover_database",
                    "promote_standby_control_plane.switch_service_discovery", "start_api_read_only", "start_scheduler",
                    "start_reconciler_paused", "resume_writes", "reconcile_into_available_hosts",
                    "confirm_time_to_converge", "verify_endpoint_availability", "verify_keys_and_secrets",
                    "verify_edge_configuration"]
SCENARIO_C_SINGLE = ["approve_rebuild", "restore_control_plane_database.recover_database", "start_api_read_only",
                     "start_scheduler", "start_reconciler_paused", "resume_writes", "bring_up_minimal_fleet",
                     "choose_critical_volumes", "restore_critical_volumes.restore_volumes", "restore_edge_configuration",
                     "report_what_is_back"]


def test_scenario_c_reads_like_the_plan_on_both_paths_and_its_drill_runs_its_own_tasks(dagbag):
    scenario = dagbag.dags["dr_scenario_c_region_outage"]
    head = ["scenario_c.declare_region_outage", "scenario_c.choose_region_path"]
    _in_order(scenario, head + [f"scenario_c.multi_region.{s}" for s in SCENARIO_C_MULTI] + ["write_scenario_report"])
    _in_order(scenario, head + [f"scenario_c.single_region.{s}" for s in SCENARIO_C_SINGLE] + ["write_scenario_report"])
    assert scenario.schedule is None and not scenario.params.get_param("mode").has_value
    assert not scenario.params.get_param("failed_region").has_value and scenario.params["approve"] == "wait"
    assert {t.queue for t in scenario.tasks} == {"recovery"}  # the runbooks' workers in every region serve it
    drill = dagbag.dags["dr_drill_region_outage"]
    steps = {t.task_id: type(t) for t in scenario.tasks if t.task_id.startswith("scenario_c.")}
    assert {t.task_id: type(t) for t in drill.tasks if t.task_id.startswith("scenario_c.")} == steps
    _in_order(drill, ["guard_drill_environment", "inject_region_outage", "scenario_c.declare_region_outage",
                      "measure_region_outage", "restore_drill_environment", "write_drill_report"])
    assert drill.params["mode"] == "disruptive" and drill.params["path"] == "multi_region"


def test_the_volume_drills_run_their_runbooks_own_tasks(dagbag):
    runbook = dagbag.dags["dr_runbook_volume_restore"]
    steps = {t.task_id: type(t) for t in runbook.tasks if t.task_id.startswith("volume_restore.")}
    _in_order(runbook, ["volume_restore.choose_restore_points", "volume_restore.approve_restore",
                        "volume_restore.restore_volumes", "volume_restore.verify_restored_volumes", "write_runbook_report"])
    assert not runbook.params.get_param("mode").has_value and not runbook.params.get_param("volume_id").has_value
    drill = dagbag.dags["dr_drill_volume_restore"]
    assert {t.task_id: type(t) for t in drill.tasks if t.task_id.startswith("volume_restore.")} == steps
    assert drill.params["mode"] == "non_disruptive"  # it restores into scratch
    scenario = dagbag.dags["dr_scenario_d_snapshot_store_loss"]
    _in_order(scenario, ["scenario_d.confirm_blast_radius", "scenario_d.find_backups_elsewhere",
                         "scenario_d.raise_snapshot_frequency_if_healthy", "scenario_d.restore_snapshot_store",
                         "scenario_d.volume_restore.restore_volumes", "scenario_d.report_restore_points",
                         "scenario_d.put_snapshot_frequency_back"])
    in_scenario = {t.task_id.removeprefix("scenario_d."): type(t) for t in scenario.tasks if ".volume_restore." in t.task_id}
    assert in_scenario == steps
    store_drill = dagbag.dags["dr_drill_snapshot_store_loss"]
    assert {t.task_id: type(t) for t in store_drill.tasks if t.task_id.startswith("scenario_d.")} == \
        {t.task_id: type(t) for t in scenario.tasks if t.task_id.startswith("scenario_d.")}


DRILLS = sorted(d for d in EXPECTED if d.startswith("dr_drill_"))


@pytest.mark.parametrize("dag_id", DRILLS)
def test_every_drill_is_made_by_the_drill_frame(dagbag, dag_id):
    """guard -> fault -> the runbook's tasks -> measure -> restore the environment (always) -> report (always): the
    guard is the one first step, and the environment is put back and the report written whatever happened."""
    dag = dagbag.dags[dag_id]
    assert [t.task_id for t in dag.tasks if not t.upstream_task_ids] == ["guard_drill_environment"]
    assert [t.task_id for t in dag.tasks if not t.downstream_task_ids] == ["write_drill_report"]
    assert "restore_drill_environment" in dag.get_task("write_drill_report").upstream_task_ids
    assert dag.get_task("restore_drill_environment").trigger_rule == "all_done"
    assert dag.get_task("write_drill_report").trigger_rule == "all_done"
    assert dag.get_task("write_drill_report").runbook["dag_id"] in dagbag.dag_ids  # the runbook it rehearses
    for measure in ("measure_rto_rpo", "measure_outage"):
        if dag.has_task(measure):
            assert dag.get_task(measure).trigger_rule == "none_failed"


@pytest.mark.parametrize("dag_id", sorted(d for d in EXPECTED if d.startswith(("dr_drill_", "dr_runbook_", "dr_scenario_"))))
def test_every_drill_runbook_and_scenario_opens_its_run_with_a_step_that_checks_the_kill_switch(dagbag, dag_id):
    """The run's first step applies the kill switch and lateness to a drill (by its mode) and switches drills off
    for an incident: it must be a DrillStepOperator, whatever the DAG."""
    from rehearsal_airflow.operators.base import DrillStepOperator

    roots = [t for t in dagbag.dags[dag_id].tasks if not t.upstream_task_ids]
    assert roots and all(isinstance(t, DrillStepOperator) for t in roots), [type(t).__name__ for t in roots]


def test_no_decision_is_keyed_on_a_dag_id_prefix():
    """A run is a drill by its mode (``rehearsal.drills.start_rules.is_drill_run``), never by its DAG's name."""
    sources = [*(REPO / "plugins").rglob("*.py"), *(REPO / "include").rglob("*.py")]
    offenders = [str(p.relative_to(REPO)) for p in sources
                 if any(f'startswith("dr_{kind}' in p.read_text() for kind in ("drill", "runbook", "scenario"))]
    assert offenders == []
