"""ServiceDiscoverySwitchOperator: point the control-plane DB record at the new primary (idempotent)
and confirm that clients followed: the first acknowledged heartbeat on the new primary."""
from __future__ import annotations

import time
from collections.abc import Sequence

from airflow.sdk import Context

from rehearsal.drills.primary_loss import wait_for_first_ack
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator
from rehearsal_airflow.operators.postgres_failover import split_address


class ServiceDiscoverySwitchOperator(ControlPlaneMixin, DrillStepOperator):
    template_fields: Sequence[str] = ("address",)

    def __init__(self, *, address: str, confirm_timeout: float = 60, controlplane_conn_id: str = "controlplane_db",
                 aws_conn_id: str = "aws_default", **kwargs) -> None:
        super().__init__(**kwargs)
        self.address = address
        self.confirm_timeout = confirm_timeout
        self.controlplane_conn_id = controlplane_conn_id
        self.aws_conn_id = aws_conn_id

    def run_step(self, context: Context) -> dict:
        host, port = split_address(self.address)
        switched_at = time.time()
        changed = self.controlplane.switch(host, port)
        self.log.info("discovery record %s -> %s (%s)", self.controlplane.record.fqdn, self.address,
                      "switched" if changed else "already pointed there")
        result = {"address": self.address, "switched": changed, "switched_at": switched_at}
        log_path = current_environment().heartbeat_path()
        if log_path is not None:
            ack = wait_for_first_ack(log_path, switched_at - 5, self.address, self.confirm_timeout)
            result["first_ack"] = {"seq": ack.seq, "acked_at": ack.acked_at, "endpoint": ack.endpoint}
            result["detail"] = f"record points at {self.address}; first acknowledged heartbeat seq {ack.seq}"
        else:
            result["detail"] = f"record points at {self.address}; no heartbeat log to confirm clients"
        return result
