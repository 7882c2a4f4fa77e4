"""Drill-only fault injection: the loss of the control-plane primary, through the environment's provisioner.
Runbook operators never import this module."""
from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Context

from rehearsal.drills.primary_loss import wait_for_loss
from rehearsal.platform import load_provisioner
from rehearsal.postgres.connection import accepts_writes
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator


class InjectPrimaryLossOperator(ControlPlaneMixin, DrillStepOperator):
    """Disruptive: SIGKILL the primary and lose its disks (data directory, WAL spool), then confirm it stopped
    accepting writes (bounded). Non-disruptive: mark the moment of a simulated loss; the recovery may use only what
    the archive held then. Production is not touched."""

    template_fields: Sequence[str] = ("guard",)

    def __init__(self, *, guard: Any, confirm_timeout: float = 60, **kwargs) -> None:
        super().__init__(**kwargs)
        self.guard = guard
        self.confirm_timeout = confirm_timeout

    def run_step(self, context: Context) -> dict:
        guard = self.guard
        if guard["mode"] == "non_disruptive":
            fault_at = time.time()
            archived_before = datetime.fromtimestamp(fault_at, UTC).isoformat()
            # Its own key, so the runbook's restore takes it as ``inject.output["archived_before"]``.
            context["ti"].xcom_push(key="archived_before", value=archived_before)
            return {"fault_at": fault_at, "simulated": True, "archived_before": archived_before,
                    "detail": f"simulated loss at {archived_before}: production untouched, recovery goes to a scratch "
                              "target from what the archive held then"}
        env = current_environment()
        env.require_drill_environment("inject a primary loss")
        provisioner = load_provisioner(env.provisioner, environment=env)
        platform = self.controlplane.platform()
        if platform.primary_address() != guard["primary"]:
            raise ValueError(f"the primary changed since the guard ran ({guard['primary']}); not injecting")
        from rehearsal_airflow.faults.targets import check_database

        check_database(env, self.controlplane, guard["primary"])  # the recorded database, by identity, or nothing
        context["ti"].xcom_push(key="archived_before", value="")
        fault_at = time.time()
        killed = provisioner.kill_primary(guard["primary"], lose_disks=True)
        primary = platform.admin_endpoint(guard["primary"])
        detected_at, reason, attempts = wait_for_loss(lambda: accepts_writes(primary, timeout=1), self.confirm_timeout)
        return {"fault_at": fault_at, "simulated": False, "archived_before": "", **killed, "detected_at": detected_at,
                "detail": f"killed {killed['cluster']} (pid {killed['pid']}, port {killed['port']}) "
                          f"{(killed['killed_at'] - fault_at) * 1000:.0f} ms after the fault began; its data directory "
                          f"and WAL spool are lost ({len(killed['unshipped_wal_lost'])} unshipped segment(s)); "
                          f"{reason}"}
