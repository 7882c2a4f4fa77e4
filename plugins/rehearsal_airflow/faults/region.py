"""Drill-only: a whole region lost. Every process of the region's hosts killed at once through the provisioner's
``RegionFaults``, after the control plane it holds was checked, by identity, to be the one the drill environment
recorded. Runbook operators never import this module."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from airflow.sdk import Context

from rehearsal.capabilities import RegionFaults, capability_limitation
from rehearsal.errors import PreconditionFailed
from rehearsal.platform import load_provisioner
from rehearsal.runbooks.region_outage import region_of
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator
from rehearsal_airflow.operators.control_plane import ServicesMixin


class InjectRegionOutageOperator(ServicesMixin, ControlPlaneMixin, DrillStepOperator):
    """Take ``region`` down whole (``auto``: the region holding the control plane) (databases, services, agents, its edge): the fault of ``dr_drill_region_outage``.
    Refuses outside a drill environment, when the region is not one of the environment's, and when the database or
    API it is about to kill is not the recorded drill target."""

    template_fields: Sequence[str] = ("guard", "region")

    def __init__(self, *, guard: Any, region: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.guard, self.region = guard, region

    def run_step(self, context: Context) -> dict:
        env = current_environment()
        env.require_drill_environment(f"take region {self.region} down")
        networks = env.region_networks()
        primary = self.controlplane.platform().primary_address()
        if self.region in ("", "auto", None):
            # The region holding the control plane: after a drill the environment is whole the other way round
            # (the control plane where it failed over to, a new standby control plane where it was).
            self.region = region_of(primary, networks)
            if self.region is None:
                raise PreconditionFailed(f"the control-plane primary {primary} is in none of {env.name!r}'s regions "
                                         f"({networks}): name the region to take down")
        if self.region not in networks:
            raise PreconditionFailed(f"region {self.region!r} is not a region of {env.name!r} (its regions: "
                                     f"{', '.join(sorted(networks)) or 'none named'})")
        provisioner = load_provisioner(env.provisioner, environment=env)
        why = capability_limitation(provisioner, RegionFaults)
        if why:
            raise PreconditionFailed(f"cannot take {self.region} down on {env.name!r}: {why}")
        adopted = self._own_earlier_try(context, provisioner)
        if adopted is not None:
            return adopted
        from rehearsal_airflow.faults.targets import check_api, check_database

        if region_of(primary, networks) == self.region:
            check_database(env, self.controlplane, primary)  # the recorded database, by identity, or nothing
        check_api(env, self.services)
        down = provisioner.region_down(self.region)
        context["ti"].xcom_push(key="region", value=self.region)
        return {"fault_at": down["at"], "region": self.region, "killed": down.get("killed", []),
                "primary_before": primary,
                "detail": f"region {self.region} taken down at {down['at']}: killed {len(down.get('killed', []))} "
                          f"process(es) ({', '.join(map(str, down.get('killed', [])[:8]))}"
                          f"{', ...' if len(down.get('killed', [])) > 8 else ''})"}

    def _own_earlier_try(self, context: Context, provisioner) -> dict | None:
        """None on the first try. On a retry, the fault its first try injected before dying with the region (its
        Airflow worker ran there): the region down since this run started, and the drill lock lets no other drill
        inject one here, so it is this run's. Anything else is refused, never injected again: a fault twice is no
        retry (the region up, or down since before this run, which the guard's health checks would have refused)."""
        ti = context["ti"]
        if ti.try_number <= 1:
            return None
        since = provisioner.region_down_since(self.region)
        started = context["dag_run"].start_date
        if since is None or started is None or datetime.fromisoformat(since) < started:
            state = "up" if since is None else f"down since {since}, before this run started ({started.isoformat()})"
            raise PreconditionFailed(f"try {ti.try_number} of {self.task_id}: region {self.region} is {state}, so no "
                                     "earlier try of this run took it down; a retry never injects the fault (trigger "
                                     "a new drill)")
        ti.xcom_push(key="region", value=self.region)
        return {"fault_at": since, "region": self.region, "killed": [], "primary_before": None,
                "adopted_from_try": ti.try_number - 1,
                "detail": f"region {self.region} taken down at {since} by try {ti.try_number - 1} of this task, "
                          f"which died with the region (its worker ran there); try {ti.try_number} took over on "
                          "a worker outside it"}
