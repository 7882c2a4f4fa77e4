"""PostgresFailoverOperator: promote the standby when healthy and within RPO; refuse while the old
primary still accepts writes (not fenced)."""
from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import Context

from rehearsal.catalog import load_catalog
from rehearsal.postgres.failover import promote
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host, int(port)


class PostgresFailoverOperator(ControlPlaneMixin, DrillStepOperator):
    """:param standby_address: host:port of the standby to promote
    :param old_primary_address: host:port of the old primary (checked for fencing); default: where discovery points
    :param component: catalog component whose RPO bounds the allowed replay lag
    """

    template_fields: Sequence[str] = ("standby_address", "old_primary_address")

    def __init__(self, *, standby_address: str, old_primary_address: str | None = None,
                 component: str = "control_plane_api", controlplane_conn_id: str = "controlplane_admin",
                 aws_conn_id: str = "aws_default", promote_timeout: int = 60, **kwargs) -> None:
        super().__init__(**kwargs)
        self.standby_address = standby_address
        self.old_primary_address = old_primary_address
        self.component = component
        self.controlplane_conn_id = controlplane_conn_id
        self.aws_conn_id = aws_conn_id
        self.promote_timeout = promote_timeout

    def run_step(self, context: Context) -> dict:
        rpo = load_catalog().target(self.component).rpo.total_seconds()
        standby = self.controlplane.endpoint(*split_address(self.standby_address))
        old = self.controlplane.endpoint(*split_address(self.old_primary_address)) if self.old_primary_address \
            else self.controlplane.endpoint()
        outcome = promote(standby.with_(dbname="postgres"), old.with_(dbname="postgres"), max_lag_seconds=rpo,
                          timeout=self.promote_timeout)
        outcome["address"] = self.standby_address
        outcome["method"] = "promote_standby"
        outcome["detail"] = (f"promoted {self.standby_address} in {outcome['seconds']:.1f}s (timeline {outcome.get('timeline')})"
                             if outcome["promoted"] else f"{self.standby_address} was already primary")
        return outcome
