"""The results database: the ``rehearsal`` database on a cluster of its own (neither Airflow's metadata database
nor a cluster the drills break)."""
from __future__ import annotations

from rehearsal_sandbox.components.base import ClusterComponent


class ResultsDb(ClusterComponent):
    name = "results_db"
    cluster_name = "results"
    database = "rehearsal"
    role = "results"
    host_name = "results-db"
