"""Drill-only faults on the control plane, through the environment's provisioner or the admin connection:
the control-plane services killed while the data plane runs, and a realistic corruption of its database.
Runbook operators never import this module."""
from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Context

from rehearsal.errors import PreconditionFailed
from rehearsal.platform import load_provisioner, split_address
from rehearsal.postgres.connection import connect
from rehearsal.services import SERVICES
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator
from rehearsal_airflow.operators.control_plane import ServicesMixin

# The damage: a bulk UPDATE without a WHERE (every env's config wiped) and a dropped table.
CORRUPTION = ("UPDATE envs SET config = jsonb_build_object('replicas', 0)",
              "DROP TABLE endpoints")


class InjectControlPlaneOutageOperator(ServicesMixin, ControlPlaneMixin, DrillStepOperator):
    """SIGKILL the API, the scheduler and the reconciler (and, with ``kill_database``, the Postgres primary, its
    disks kept) while the data plane runs; every service must have been healthy just before."""

    template_fields: Sequence[str] = ("guard", "kill_database")

    def __init__(self, *, guard: Any, kill_database: Any = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.guard, self.kill_database = guard, kill_database

    def run_step(self, context: Context) -> dict:
        env = current_environment()
        env.require_drill_environment("kill the control plane's services")
        provisioner = load_provisioner(env.provisioner, environment=env)
        from rehearsal.services import health

        unhealthy = [h.detail for h in (health(s, self.services.addresses.url(s)) for s in SERVICES) if not h.ok]
        if unhealthy:
            raise PreconditionFailed("the control plane is not healthy before the drill: " + "; ".join(unhealthy))
        from rehearsal_airflow.faults.targets import check_api, check_database

        check_api(env, self.services)  # the recorded API, by identity, or nothing
        kill_database = str(self.kill_database).lower() in ("true", "1", "yes")
        primary = self.controlplane.platform().primary_address() if kill_database else None
        if kill_database:
            check_database(env, self.controlplane, primary)
        killed = provisioner.kill_services(list(SERVICES))
        database = None
        if kill_database:
            database = provisioner.kill_primary(primary, lose_disks=False)
        fault_at = killed["killed_at"]
        return {"fault_at": fault_at, "killed": killed, "database": database,
                "detail": f"killed {', '.join(killed['killed'])} at "
                          f"{datetime.fromtimestamp(fault_at, UTC).isoformat()}"
                          + (f"; and the Postgres primary {database['cluster']} (disks kept)" if database else "")
                          + "; the data plane keeps running"}


class InjectCorruptionOperator(ControlPlaneMixin, DrillStepOperator):
    """A realistic corruption of the control-plane database, at a recorded time: a bulk UPDATE without a WHERE
    (every env's config wiped) and a dropped table, each committed on its own, as a bad migration would."""

    template_fields: Sequence[str] = ("guard",)

    def __init__(self, *, guard: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.guard = guard

    def run_step(self, context: Context) -> dict:
        env = current_environment()
        env.require_drill_environment("corrupt the control-plane database")
        from rehearsal_airflow.faults.targets import check_database

        check_database(env, self.controlplane, self.guard["primary"])  # the recorded database, by identity, or nothing
        endpoint = self.controlplane.endpoint(*split_address(self.guard["primary"]))  # the database, as superuser
        done = []
        with connect(endpoint, statement_timeout_ms=120_000) as conn:
            fault_at = time.time()
            corrupted_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
            for statement in CORRUPTION:
                rows = conn.execute(statement).rowcount
                done.append(f"{statement} ({rows} rows)" if rows >= 0 else statement)
        return {"fault_at": fault_at, "corrupted_at": corrupted_at.isoformat(), "statements": done,
                "detail": f"corrupted {self.guard['primary']} at {corrupted_at.isoformat()}: " + "; ".join(done)}
