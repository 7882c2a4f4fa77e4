"""Service discovery: point the control-plane record at the new primary (idempotent), then confirm that clients
followed: sessions of the application role committing there."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.errors import RecoveryTimedOut, RestoreError
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator
from rehearsal_airflow.operators.postgres_recovery import _deferrable_default


class ServiceDiscoverySwitchOperator(ControlPlaneMixin, DrillStepOperator):
    """:param recovery: the recovered primary (``{"address": ...}``); skipped for a scratch target."""

    template_fields: Sequence[str] = ("recovery", "target")

    def __init__(self, *, recovery: Any, target: str = "production", **kwargs) -> None:
        super().__init__(**kwargs)
        self.recovery = recovery
        self.target = target

    def run_step(self, context: Context) -> dict:
        if self.target == "scratch":
            raise AirflowSkipException("target scratch: production's service discovery is not touched")
        import time

        address = self.recovery["address"]
        switched_at = time.time()
        changed = self.controlplane.platform().switch_discovery(address)
        return {"address": address, "switched": changed, "switched_at": switched_at,
                "detail": f"record points at {address}" + ("" if changed else " (it already did)")}


class ConfirmClientsFollowedOperator(ControlPlaneMixin, DrillStepOperator):
    """Clients of the application role hold sessions on the new primary and commit there (deferrable)."""

    template_fields: Sequence[str] = ("recovery", "target")

    def __init__(self, *, recovery: Any, target: str = "production", app_conn_id: str = "controlplane_db",
                 timeout: float = 120, deferrable: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.recovery = recovery
        self.target = target
        self.app_conn_id = app_conn_id
        self.timeout = timeout
        self.deferrable = _deferrable_default() if deferrable is None else deferrable

    def run_step(self, context: Context) -> dict:
        if self.target == "scratch":
            raise AirflowSkipException("target scratch: no client uses the copy")
        address = self.recovery["address"]
        if self.deferrable:
            from rehearsal_airflow.triggers.postgres import ClientsFollowedTrigger

            self.defer(trigger=ClientsFollowedTrigger(address, self.controlplane_conn_id, self.app_conn_id, self.aws_conn_id,
                                                      self.timeout), method_name="resume_with_clients",
                       timeout=timedelta(seconds=self.timeout + 60))
        from rehearsal.postgres.clients import clients_followed

        platform = self.controlplane.platform()
        return _followed(address, clients_followed(platform.admin_endpoint(address), platform.app.user, timeout=self.timeout))

    def resume_with_clients(self, context: Context, event: dict) -> dict:
        def finish() -> dict:
            if event.get("status") != "done":
                message = event.get("message", str(event))
                raise RecoveryTimedOut(message) if message.startswith("no client") else RestoreError(message)
            return _followed(self.recovery["address"], event["result"])
        return self.execute_resumed(context, finish)


def _followed(address: str, seen: dict) -> dict:
    return {**seen, "address": address,
            "detail": f"{seen['sessions']} client session(s) committing on {address} ({seen['commits_seen']} commit(s) seen "
                      f"within {seen['seconds']:.1f}s)"}
