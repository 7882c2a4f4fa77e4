"""Service discovery: point the control-plane record at the new primary (idempotent; the service's A record, when
the connection names one, moves with it in the same change), then confirm that clients followed: sessions of the
application role committing there."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, RestoreError
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

        from rehearsal.runbooks.postgres_failover import switch_limitation

        address = self.recovery["address"]
        platform = self.controlplane.platform()
        why = switch_limitation(address, known_database_hosts(platform), worker_addresses())
        if why:
            raise PreconditionFailed(why)
        switched_at = time.time()
        changed = platform.switch_discovery(address)
        record = self.controlplane.record
        a_record = record.a_fqdn if record is not None else None
        also = f" and A record {a_record} at {address.rsplit(':', 1)[0]}" if a_record else ""
        already = "" if changed else " (they already did)" if also else " (it already did)"
        return {"address": address, "switched": changed, "switched_at": switched_at, "a_record": a_record,
                "detail": f"record points at {address}{also}{already}"}


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


def worker_addresses() -> list[str]:
    """This worker's own names and addresses (loopback, its hostname and what that resolves to)."""
    import socket

    names = ["127.0.0.1", "localhost", "::1", "0.0.0.0", socket.gethostname(), socket.getfqdn()]
    try:
        names += [info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)]
    except OSError:
        pass
    return sorted(set(names))


def known_database_hosts(platform) -> list[str]:
    """The platform's members (discovery, the replica record, the connection's list, replication) and the database
    hosts the environment's provisioner placed."""
    from rehearsal.platform import RestoreHosts, load_provisioner
    from rehearsal_airflow.environment import current_environment

    known = list(platform.member_addresses())
    env = current_environment()
    provisioner = load_provisioner(env.provisioner, environment=env)
    if isinstance(provisioner, RestoreHosts):
        known += [a for a in provisioner.database_hosts() if a not in known]
    return known


def _followed(address: str, seen: dict) -> dict:
    return {**seen, "address": address,
            "detail": f"{seen['sessions']} client session(s) committing on {address} ({seen['commits_seen']} commit(s) seen "
                      f"within {seen['seconds']:.1f}s)"}
