"""ResultsDbHook: the results database (drill and runbook reports, RTO breaches, drill locks)."""
from __future__ import annotations

from airflow.sdk import BaseHook

from rehearsal.postgres.connection import Endpoint


class ResultsDbHook(BaseHook):
    conn_name_attr = "results_conn_id"
    default_conn_name = "rehearsal_results"

    def __init__(self, results_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.results_conn_id = results_conn_id

    def get_conn(self) -> Endpoint:
        c = self.get_connection(self.results_conn_id)
        return Endpoint(host=c.host, port=int(c.port or 5432), dbname=c.schema or "rehearsal", user=c.login or "postgres",
                        password=c.password or "")


def results_endpoint(conn_id: str = ResultsDbHook.default_conn_name) -> Endpoint:
    return ResultsDbHook(conn_id).get_conn()
