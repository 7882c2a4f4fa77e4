"""A drill's frame around the runbook it rehearses: the guard before the fault, and the environment put back
after it (always). Drill-only: runbooks never use these."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal import results
from rehearsal.capabilities import EnvironmentRestorer, capability_limitation
from rehearsal.catalog import load_catalog
from rehearsal.drills.primary_loss import check_params, heartbeat_limitation
from rehearsal.environment import Environment
from rehearsal.errors import PreconditionFailed
from rehearsal.heartbeat import LINEAGE_SQL
from rehearsal.platform import RestoreHosts, load_provisioner
from rehearsal.postgres.connection import accepts_writes, query_one
from rehearsal.postgres.failover import probe_standby, standby_limitation
from rehearsal.scratch import destroy_run_area
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.results_db import results_endpoint
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator, key_of, now_iso


class DrillGuardOperator(ControlPlaneMixin, DrillStepOperator):
    """Refuse unsafe drills before anything happens: mode and environment (a disruptive drill needs a drill
    environment and a provisioner that can inject the fault and put the environment back), heartbeat evidence, a
    healthy primary. Records the lost primary's lineage and the standbys as they were before the fault, then the run
    (in progress), and last takes the environment's lock, so a lock taken is always released by the teardown.

    As the drill's first step it first opens the run (``DrillStepOperator._open_run``): while drills are switched
    off, or when a scheduled start is late, the drill skips here, touching nothing."""

    template_fields: Sequence[str] = ("mode", "path")

    def __init__(self, *, mode: str, path: str, scenario: str, component: str = "control_plane_api",
                 fault: type | tuple[type, ...] = (), harm: str = "it kills the primary and loses its data",
                 refuse_non_disruptive: str | None = None, stop_conditions: dict | None = None,
                 harms: tuple[str, ...] = ("controlplane_db",), **kwargs) -> None:
        """:param fault: the capability (``rehearsal.capabilities``) the drill's fault needs of the provisioner, or
            several; every disruptive drill also needs ``EnvironmentRestorer`` to put the environment back
        :param harm: what the disruptive fault does, for the refusal outside drill environments
        :param refuse_non_disruptive: why this drill has no meaningful non-disruptive variant (then it refuses it)
        :param stop_conditions: production-health thresholds (``rehearsal.drills.stop_conditions``) every later step
            of a disruptive run checks before it runs
        :param harms: the kinds of target the disruptive fault harms (``rehearsal.drills.targets``): each must be
            recorded by the drill environment, and every recorded one must be what answers through the connections"""
        super().__init__(**kwargs)
        self.fault = fault
        self.harm = harm
        self.harms = tuple(harms)
        self.targets_checked: list[str] = []
        self.refuse_non_disruptive = refuse_non_disruptive
        self.stop_conditions = stop_conditions
        self.mode = mode
        self.path = path
        self.scenario = scenario
        self.component = component

    def capabilities_needed(self) -> tuple[type, ...]:
        """What a disruptive run needs of the provisioner: its fault's capabilities, then putting things back."""
        fault = self.fault if isinstance(self.fault, tuple) else (self.fault,)
        return (*fault, EnvironmentRestorer)

    def check_mode_and_environment(self) -> Environment:
        """The drill's mode may run here: a non-disruptive variant that means something, a disruptive one only in
        a drill environment whose provisioner can inject the fault and put the environment back. Returns the
        environment."""
        check_params(self.mode, self.path)
        if self.mode == "non_disruptive" and self.refuse_non_disruptive:
            raise PreconditionFailed(f"refusing a non_disruptive {self.scenario} drill: {self.refuse_non_disruptive}")
        env = current_environment()
        if self.mode == "disruptive":
            env.require_drill_environment(f"run a disruptive drill ({self.harm})")
            provisioner = load_provisioner(env.provisioner, environment=env)
            why = capability_limitation(provisioner, *self.capabilities_needed())
            if why:
                raise PreconditionFailed(f"refusing to run a disruptive drill ({self.harm}) on {env.name!r}: {why}")
            self.targets_checked = self.check_drill_targets(env)
        return env

    def check_drill_targets(self, env: Environment) -> list[str]:
        """Before anything else of a disruptive drill: its targets are the ones the drill environment recorded, by
        identity (``rehearsal_airflow.faults.targets``); refused naming both identities otherwise."""
        from rehearsal_airflow.faults.targets import check_targets
        from rehearsal_airflow.hooks.controlplane_services import ControlPlaneServicesHook
        from rehearsal_airflow.hooks.snapshot_store import SnapshotStoreHook

        return check_targets(env, self.harms, controlplane=self.controlplane,
                             services=ControlPlaneServicesHook("controlplane_services", self.aws_conn_id),
                             snapshots=SnapshotStoreHook(env, self.aws_conn_id))

    def run_step(self, context: Context) -> dict:
        env = self.check_mode_and_environment()
        reason = heartbeat_limitation(env.heartbeat_path())
        if reason:
            raise PreconditionFailed(reason)
        platform = self.controlplane.platform()
        members = platform.member_addresses()
        primary = members[0]
        writable, why = accepts_writes(platform.admin_endpoint(primary))
        if not writable:
            raise PreconditionFailed(f"production primary {primary} is not healthy before the drill: {why}")
        lineage = query_one(platform.admin_endpoint(primary), LINEAGE_SQL)[0]
        rpo = load_catalog().target(self.component).rpo.total_seconds()
        standbys = {a: self._standby_before_fault(platform, a, rpo) for a in members[1:]}
        baseline = self._rpo_baseline(env, primary, rpo)
        started_at = now_iso()
        results.record_start(results_endpoint(), context["dag"].dag_id, context["run_id"], self.scenario, self.mode,
                             env.name, self.component, started_at)
        lock_note = self._take_lock(context, env)
        if self.mode == "disruptive" and self.stop_conditions:
            results.set_stop_conditions(results_endpoint(), env.name, context["dag"].dag_id, context["run_id"],
                                        self.stop_conditions)
        return {"mode": self.mode, "path": self.path, "environment": env.name, "run_key": key_of(context),
                "primary": primary, "lineage": lineage, "standbys_before_fault": standbys, "started_at": started_at,
                "lock": lock_note, "stop_conditions": self.stop_conditions, "targets_checked": self.targets_checked,
                "rpo_baseline": baseline,
                "detail": f"{self.mode} drill on {env.name}: primary {primary} (lineage {lineage}), standbys "
                          f"{', '.join(standbys) or 'none'}" + (f"; {lock_note}" if lock_note else "")
                          + (f"; {len(baseline['missing'])} acknowledged write(s) of the last {baseline['window_seconds']:.0f}s "
                             "were already missing (an earlier fault's: not this drill's to answer for)"
                             if baseline and baseline["missing"] else "")}

    def _rpo_baseline(self, env: Environment, primary: str, rpo: float) -> dict | None:
        """The synthetic load's acknowledged writes already missing now, before any fault (``rpo_baseline``): a later
        RPO answers only for writes present now or acknowledged after."""
        import time
        from pathlib import Path

        from rehearsal.drills.control_plane import read_load_log
        from rehearsal.platform import split_address
        from rehearsal.postgres.connection import connect
        from rehearsal.runbooks.corruption import present_request_ids, rpo_baseline

        if not env.load_log or not Path(env.load_log).exists():
            return None
        now, window = time.time(), max(2 * rpo, 60)
        acks = [a for a in read_load_log(Path(env.load_log), since=now - window) if a.get("t_ack")
                and 200 <= int(a.get("status") or 0) < 300]
        with connect(self.controlplane.endpoint(*split_address(primary)), statement_timeout_ms=30_000) as conn:
            present = present_request_ids(conn, [a["request_id"] for a in acks if a["t_ack"] < now])
        return rpo_baseline(acks, present, now, window)

    @staticmethod
    def _standby_before_fault(platform, address: str, rpo: float) -> dict:
        from dataclasses import asdict

        try:
            state = probe_standby(platform.admin_endpoint(address))
        except Exception as exc:  # noqa: BLE001 - an unreachable standby is a finding, not a guard failure
            return {"state": None, "limitation": f"standby {address} is unreachable: {exc}"}
        return {"state": asdict(state), "limitation": standby_limitation(state, rpo, primary_alive=True)}

    def _take_lock(self, context: Context, env: Environment) -> str | None:
        """One disruptive drill per environment at a time; other drills refuse to overlap one. A lock whose run
        no longer exists (killed before its teardown) is broken, and the report says so."""
        ours = (context["dag"].dag_id, context["run_id"])
        endpoint = results_endpoint()
        disruptive = self.mode == "disruptive"
        lock = results.acquire_drill_lock(endpoint, env.name, *ours) if disruptive else results.drill_lock_holder(endpoint, env.name)
        if lock is None or lock.holder() == ours:
            return None
        active = context["ti"].get_dr_count(dag_id=lock.dag_id, run_ids=[lock.run_id], states=["queued", "running"])
        if active:
            raise PreconditionFailed(
                f"a disruptive drill ({lock.describe()}) is in progress on {env.name!r}; if that run no longer exists, "
                f"break its lock with `{results.BREAK_COMMAND.format(environment=env.name)}`")
        results.release_drill_lock(endpoint, env.name, *lock.holder())
        note = f"broke a stale drill lock ({lock.describe()}): that run is not queued or running"
        self.log.warning("%s", note)
        if disruptive:
            again = results.acquire_drill_lock(endpoint, env.name, *ours)
            if again.holder() != ours:
                raise PreconditionFailed(f"a disruptive drill ({again.describe()}) took the lock on {env.name!r} first")
        return note


class RestoreDrillEnvironmentOperator(DrillStepOperator):
    """Always runs once the guard let the drill start (the guard's teardown; ``all_done``). Releases the lock; after
    a disruptive drill the provisioner makes the environment whole (lost disks deleted, the inventory following what
    runs, a streaming standby and a base backup); every scratch cluster of the run that did not become the primary
    is destroyed. When the guard never let the drill start (it skipped or refused), it skips: nothing was touched,
    and nothing is put back."""

    template_fields: Sequence[str] = ("guard",)
    runs_after_abort = True

    def __init__(self, *, guard: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.guard = guard

    def run_step(self, context: Context) -> dict:
        if not self.guard:  # the guard skipped (drills off, a late start) or refused: the drill never started
            raise AirflowSkipException("nothing to put back: the guard never let the drill start")
        guard = self.guard
        env = current_environment()
        created: list[str] = []
        keep: set[str] = set()
        provisioner = load_provisioner(env.provisioner, environment=env)
        disruptive = guard.get("mode") == "disruptive"
        try:
            if disruptive and env.drill_environment:
                why = capability_limitation(provisioner, EnvironmentRestorer)
                if why:
                    raise PreconditionFailed(f"cannot put {env.name!r} back after a disruptive drill: {why}")
                created += provisioner.restore_environment()
            cleaned = []
            if isinstance(provisioner, RestoreHosts):  # the run's copies on provisioned hosts production did not adopt
                cleaned += provisioner.release_run(key_of(context))
            if isinstance(provisioner, EnvironmentRestorer):
                keep = provisioner.inventory_data_dirs()
            cleaned += destroy_run_area(Path(env.scratch_root) / key_of(context), keep) if env.scratch_root else []
        finally:  # only once the environment is whole may the next disruptive drill start
            if disruptive:
                results.release_drill_lock(results_endpoint(), env.name, context["dag"].dag_id, context["run_id"])
        return {"resources_cleaned": cleaned, "resources_created": created,
                "detail": f"cleaned {len(cleaned)} resource(s)" + ("; environment whole again: " + "; ".join(created)
                                                                   if created else "")}
