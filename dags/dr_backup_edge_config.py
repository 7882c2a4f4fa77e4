"""
### Edge configuration export

The plan's critical asset "edge configuration" (endpoint mappings, IPv4 allocation state, DNS routing
configuration), exported every hour to the backup store beside a manifest of sha256 checksums, and read back and
checked as stored. Scenario C restores from the newest export that verifies; `dr_backup_freshness` watches its age.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from rehearsal_airflow.deadlines import rpo_deadline
from rehearsal_airflow.operators.edge_config import ExportEdgeConfigurationOperator

with DAG(
    dag_id="dr_backup_edge_config",
    description="Export the edge configuration (endpoints, IPv4 allocations, DNS routing) with checksums",
    doc_md=__doc__,
    schedule="@hourly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["dr", "backup", "edge"],
    default_args={"owner": "sre", "retries": 2, "retry_delay": timedelta(minutes=1)},
    deadline=rpo_deadline("full_region", "dr_backup_edge_config"),  # an export older than the region's RPO is late
) as dag:
    ExportEdgeConfigurationOperator(task_id="export_edge_configuration")
