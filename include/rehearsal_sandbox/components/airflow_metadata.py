"""The metadata database of the local Airflow (``make airflow``): a cluster from the same binaries. Created on
demand by ``LocalAirflow``, not by ``Sandbox.up()``; torn down with the sandbox."""
from __future__ import annotations

from rehearsal_sandbox.components.base import ClusterComponent


class AirflowMetadataDb(ClusterComponent):
    name = "airflow_metadata"
    on_demand = True
    cluster_name = "airflow-meta"
    database = "airflow"
    role = "airflow-metadata"
    settings = {"max_connections": 200, "shared_buffers": "128MB"}
