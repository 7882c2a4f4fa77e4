"""The metadata database of the local Airflow (``make airflow``): a cluster from the same binaries. Created on
demand by ``LocalAirflow``, not by ``Sandbox.up()``; torn down with the sandbox.

Slice: ``{"cluster": {"name": "airflow-meta", "data_dir": ..., "port": ..., "role": "airflow-metadata"}}``.
"""
from __future__ import annotations

from rehearsal.postgres.cluster import LocalCluster, free_port
from rehearsal.postgres.connection import Endpoint, connect
from rehearsal_sandbox.components.base import Component, cluster_of, cluster_record, cluster_status, ok, progress

CLUSTER = "airflow-meta"
DATABASE = "airflow"


class AirflowMetadataDb(Component):
    name = "airflow_metadata"
    on_demand = True

    def cluster(self) -> LocalCluster:
        record = self.state["cluster"]
        return cluster_of(record["name"], record)

    def clusters(self) -> dict[str, dict]:
        if "cluster" not in self.state:
            return {}
        record = dict(self.state["cluster"])
        return {record.pop("name"): record}

    def up(self) -> None:
        """The cluster and its ``airflow`` database, unless it exists already."""
        if "cluster" in self.state:
            return
        cluster = LocalCluster(CLUSTER, self.sandbox.runtime / "clusters" / CLUSTER, free_port())
        progress("creating the Airflow metadata database (PostgreSQL)")
        password = self.sandbox.passwords["postgres"]
        cluster.initdb(password)
        cluster.configure({"max_connections": 200, "shared_buffers": "128MB"})
        cluster.start()
        with connect(Endpoint("127.0.0.1", cluster.port, "postgres", "postgres", password)) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        self.state["cluster"] = {"name": CLUSTER, **cluster_record(cluster, "airflow-metadata")}
        self.sandbox.save()

    def status(self) -> dict[str, dict]:
        if "cluster" not in self.state:
            return {}  # not asked for: nothing to report
        running, detail = cluster_status(self.cluster())
        return {self.name: ok(running, f"{detail}, data {self.cluster().data_dir}")}

    def down(self) -> None:
        if "cluster" in self.state:
            self.cluster().destroy()
            del self.state["cluster"]
