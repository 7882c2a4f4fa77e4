"""A real Airflow (api-server, scheduler, dag-processor, triggerer; LocalExecutor, PostgreSQL metadata DB) beside
the session's sandbox, started once for every module that drives it through the REST API. It runs with a
drill-only RTO override of 3 s, so every run misses its Deadline Alert and the breach path is exercised."""
from __future__ import annotations

import pytest

from rehearsal.postgres.cluster import free_port
from rehearsal_sandbox.airflow_deployment import USERNAME, LocalAirflow
from rehearsal_sandbox.platform import Sandbox
from tests.airflow_api import AirflowApi

DAG_IDS = ("dr_drill_postgres_primary_loss", "dr_runbook_postgres_failover", "dr_backup_freshness", "dr_backup_verify",
           "dr_backup_postgres", "dr_drill_control_plane_outage", "dr_runbook_volume_restore")


@pytest.fixture(autouse=True)
def drills_back_on(request):
    """Declaring an incident switches drills off for its environment until a person turns them back on; between
    tests, the test harness is that person (a test that switched them off, or ran an incident, leaves them on)."""
    yield
    if "sandbox_session" not in request.fixturenames:
        return
    import json
    import os

    from rehearsal import results

    sandbox = Sandbox(request.getfixturevalue("sandbox_session").dir)
    names = {"sandbox", json.loads(os.environ.get("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", "{}")).get("name", "sandbox")}
    for name in names:
        results.drills_on(sandbox.results_endpoint(), name)


@pytest.fixture(scope="session")
def deployment(sandbox_session):
    airflow = LocalAirflow(Sandbox(sandbox_session.dir), port=free_port())
    # Deferrable operators on: the long waits (a PITR's catch-up, clients reaching a new primary) run in the real
    # triggerer, as on a real deployment.
    airflow.up(extra_env={"REHEARSAL_RTO_OVERRIDE": "control_plane_api=3s", "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True"})
    yield airflow
    airflow.down()


@pytest.fixture(scope="session")
def api(deployment) -> AirflowApi:
    client = AirflowApi(deployment.url, USERNAME, deployment.password)
    for dag_id in DAG_IDS:
        client.wait_for_dag(dag_id)
    return client
