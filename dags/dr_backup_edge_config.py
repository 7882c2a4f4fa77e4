"""
### Edge configuration export (every 15 minutes)

Exports the edge configuration, the plan's critical asset, to the backup bucket under `edge-config/<export id>/`:
the endpoint mappings (every app instance and its host, from the control-plane database), the IPv4 allocation state
(`ipv4_allocations`) and the DNS routing configuration (the edge's record sets in Route 53), each object with its
size and SHA-256 in a manifest written last. What it finds wrong in the configuration (an address allocated twice,
an endpoint on a host whose agent no longer reports) is recorded in the run, not raised: the export is the truth at
that moment. `dr_backup_freshness` watches the newest export that verifies against the full-region RPO; Scenario C
restores from it.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from rehearsal_airflow.deadlines import rpo_deadline
from rehearsal_airflow.operators.edge_config import ExportEdgeConfigurationOperator

with DAG(
    dag_id="dr_backup_edge_config",
    description="Edge configuration export: endpoint mappings, IPv4 allocations, DNS routing, with a manifest",
    doc_md=__doc__,
    schedule="*/15 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=10),
    deadline=rpo_deadline("full_region", "dr_backup_edge_config"),
    tags=["dr", "backups", "edge"],
    default_args={"owner": "sre", "retries": 1, "retry_delay": timedelta(seconds=30)},
) as dag:
    ExportEdgeConfigurationOperator(task_id="export_edge_configuration")
