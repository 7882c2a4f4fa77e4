"""The results database: the ``rehearsal`` database on a cluster of its own (neither Airflow's metadata database
nor a cluster the drills break).

Slice: ``{"cluster": {"name": "results", "data_dir": ..., "port": ..., "role": "results"}}``.
"""
from __future__ import annotations

from rehearsal.postgres.cluster import LocalCluster, free_port
from rehearsal.postgres.connection import Endpoint, connect
from rehearsal_sandbox.components.base import Component, cluster_of, cluster_record, cluster_status, ok, progress

CLUSTER = "results"
DATABASE = "rehearsal"


class ResultsDb(Component):
    name = "results_db"

    def cluster(self) -> LocalCluster:
        record = self.state["cluster"]
        return cluster_of(record["name"], record)

    def clusters(self) -> dict[str, dict]:
        """Its cluster in the inventory's form, ``{name: {data_dir, port, role}}``."""
        if "cluster" not in self.state:
            return {}
        record = dict(self.state["cluster"])
        return {record.pop("name"): record}

    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.cluster().port, DATABASE, "postgres", self.sandbox.passwords["postgres"])

    def up(self) -> None:
        progress("creating the results database")
        results = LocalCluster(CLUSTER, self.sandbox.runtime / "clusters" / CLUSTER, free_port())
        self.state["cluster"] = {"name": CLUSTER, **cluster_record(results, "results")}
        self.sandbox.save()  # recorded before it exists: a failed start is still torn down
        password = self.sandbox.passwords["postgres"]
        results.initdb(password)
        results.start()
        with connect(Endpoint("127.0.0.1", results.port, "postgres", "postgres", password)) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        self.sandbox.save()

    def status(self) -> dict[str, dict]:
        if "cluster" not in self.state:
            return {self.name: ok(False, "no cluster")}
        running, detail = cluster_status(self.cluster())
        return {self.name: ok(running, f"{detail}, data {self.cluster().data_dir}")}

    def down(self) -> None:
        if "cluster" in self.state:
            self.cluster().destroy()
            del self.state["cluster"]
