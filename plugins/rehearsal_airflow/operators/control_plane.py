"""The control plane's recovery steps (Scenario A, and Scenario B's freeze and resume), thin over
``rehearsal.runbooks.control_plane``: declare, verify the data plane, freeze, restore services in the plan's
order, resume writes with a canary, ramp the reconciler, wait for convergence."""
from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.capabilities import ServiceControl, capability_limitation
from rehearsal.dataplane import DataPlaneProbe, probe_data_plane
from rehearsal.errors import PreconditionFailed, RecoveryTimedOut
from rehearsal.platform import load_provisioner
from rehearsal.runbooks.control_plane import (
    RampPolicy,
    confirm_refused,
    control_plane_down_evidence,
    convergence,
    degrading_steps,
    ramp,
    require_data_plane,
    severity,
    wait_until,
)
from rehearsal.services import SERVICES, Api, Health
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator, now_iso, push_step


class ServicesMixin:
    services_conn_id = "controlplane_services"
    aws_conn_id = "aws_default"

    @cached_property
    def services(self):
        from rehearsal_airflow.hooks.controlplane_services import ControlPlaneServicesHook

        return ControlPlaneServicesHook(self.services_conn_id, self.aws_conn_id)


NO_CANARY = ("no canary app is configured: set canary_app (an app id) in the controlplane_services connection's extra, "
             "an app of the platform's own that runbooks may write to; a probe never writes to a customer's app (on a "
             "real platform that would roll out a customer's app in the middle of an incident)")


def mutation_probe(api: Api, canary_app: str | int | None, request_id: str,
                   maintenance: str | None = None) -> tuple[dict, Any]:
    """A harmless mutation on the canary app only: one key of our own merged into its config. (app, answer)

    :raises PreconditionFailed: no canary app configured, or the API does not know it (named)"""
    if canary_app in (None, ""):
        raise PreconditionFailed(NO_CANARY)
    read = api.app(int(canary_app))
    if read.status == 404:
        raise PreconditionFailed(f"the canary app {canary_app} (canary_app in the controlplane_services connection) is not "
                                 f"an app of the control-plane API at {api.url}")
    app = read.body if read.ok and isinstance(read.body, dict) else {"id": int(canary_app)}
    return app, api.mutate("update_config", int(canary_app), {"config": {"rehearsal_probe": request_id}},
                           request_id=request_id, maintenance=maintenance)


class DeclareIncidentOperator(ControlPlaneMixin, ServicesMixin, DrillStepOperator):
    """Declare the incident from measured impact: Sev0 when customers are hit (data-plane availability, probed
    here), Sev1 when only the control plane is; drill or real, with the time, for the report and the status page.

    With ``confirms="control_plane"`` (Scenario A) it first confirms the scenario is happening: a control-plane
    service down or failing, or its database unable to commit. When none is, it is a false alarm: the run ends
    ``not_applicable`` here, every later step skipped and nothing changed. Its record also names what the next
    steps would degrade because it still runs (``degrades``), for the approval that comes before them."""

    template_fields: Sequence[str] = ("mode", "scenario")

    def __init__(self, *, mode: str, scenario: str, confirms: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode, self.scenario, self.confirms = mode, scenario, confirms

    def run_step(self, context: Context) -> dict:
        declared_at = now_iso()
        if self.mode == "drill":  # a rehearsal changes the control plane: only where drills may
            current_environment().require_drill_environment(f"rehearse {self.scenario} in drill mode")
        try:
            probe = probe_data_plane(self.services.agents())
        except Exception as exc:  # noqa: BLE001 - an unknown data plane is declared the worst case, and we go on
            probe = DataPlaneProbe(hosts=0, hosts_unreachable=[f"inventory unreadable: {exc}"], endpoints=0, endpoints_ok=0)
        api = self.services.api().health()
        record: dict = {"declared_at": declared_at, "mode": self.mode, "scenario": self.scenario,
                        "dataplane": probe.to_dict(), "api": api.to_dict()}
        happening = True
        if self.confirms == "control_plane":
            wrong, services = self._control_plane_evidence(api)
            happening = bool(wrong)
            record.update({"evidence": wrong, "degrades": degrading_steps(services),
                           "services": {n: h.to_dict() for n, h in services.items()}})
        sev = severity(probe, api, happening=happening)
        record.update({"severity": sev.level, "why": sev.why})
        if not happening:
            why = (f"{self.scenario} is not happening: {sev.why}. Nothing was changed (no mode set, nothing paused). "
                   "To rehearse it, run its drill, which injects the fault in a drill environment")
            record.update({"not_applicable": why, "detail": f"NOT APPLICABLE: {why}"})
            context["ti"].xcom_push(key="return_value", value=record)
            raise AirflowSkipException(record["detail"])
        kind = "DRILL" if self.mode == "drill" else "REAL INCIDENT"
        record["detail"] = (f"{kind} declared {sev.level} at {declared_at}: {self.scenario}; {sev.why}"
                            + (f"; happening: {'; '.join(record['evidence'])}" if record.get("evidence") else ""))
        return record

    def _control_plane_evidence(self, api: Health) -> tuple[list[str], dict[str, Health]]:
        from rehearsal.platform import split_address
        from rehearsal.postgres.connection import write_health
        from rehearsal.services import health

        services = {"api": api, **{s: health(s, self.services.addresses.url(s)) for s in SERVICES if s != "api"}}
        try:
            primary = self.controlplane.platform().primary_address()
            postgres = write_health(self.controlplane.endpoint(*split_address(primary)), timeout=5)
        except Exception as exc:  # noqa: BLE001 - evidence that something is wrong, not a decision
            postgres = (False, f"the primary cannot be found: {type(exc).__name__}: {exc}")
        return control_plane_down_evidence(services, postgres), services


class VerifyDataPlaneOperator(ServicesMixin, DrillStepOperator):
    """Every app endpoint the hosts run, probed from here; availability measured and reported. Fails only when
    nothing answers (then this is not a control-plane-only incident)."""

    def run_step(self, context: Context) -> dict:
        probe = probe_data_plane(self.services.agents())
        require_data_plane(probe)
        return {**probe.to_dict(), "detail": "hosts still run workloads: " + probe.describe()}


class FreezeMutationsOperator(ServicesMixin, DrillStepOperator):
    """Deploys and config writes off, reads kept: the API goes ``frozen`` and the reconciler pauses (nothing
    damaged is rolled out to hosts). Confirmed by a mutation probe that must be refused; if it is not, the run
    stops here, before anything is restored."""

    def run_step(self, context: Context) -> dict:
        api = self.services.api(actor="rehearsal-freeze")
        api.set_mode("frozen", f"Scenario B freeze by {context['run_id']}")
        app, answer = mutation_probe(api, self.services.addresses.canary_app, f"freeze-probe-{uuid.uuid4()}")
        refused = confirm_refused(answer, "frozen")
        reads = len(api.apps())
        reconciler = self.services.reconciler()
        rate_before = None
        if reconciler.health().body:  # it answers: it must pause, or nothing damaged may be restored behind it
            rate_before = _running_rate(reconciler)
            reconciler.set_rate(0)
            paused = f"reconciler paused (it ran at {rate_before:g}/s)" if rate_before else "reconciler paused"
        else:
            paused = f"reconciler not running ({reconciler.health().detail})"
        return {"frozen_at": now_iso(), "probe_app": app["id"], "reads": reads, "rate_before": rate_before,
                "detail": f"mutations frozen: {refused}; reads work ({reads} apps); {paused}"}


class RestoreServiceOperator(ServicesMixin, DrillStepOperator):
    """Bring one control-plane service back and confirm it before the next: the API read-only (reads answer, a
    mutation is refused), the scheduler, the reconciler paused (rate 0, resumed gradually later). A service that
    does not answer is started through the environment's provisioner."""

    template_fields: Sequence[str] = ("service", "region")

    def __init__(self, *, service: str, timeout: float = 60, region: Any = None, **kwargs) -> None:
        """:param region: restore the service in this region (Scenario C: the standby control plane's), started
            there through the provisioner and its SRV record pointed at it; None: wherever its record names"""
        super().__init__(**kwargs)
        if service not in SERVICES:
            raise ValueError(f"unknown service {service!r}: use one of {', '.join(SERVICES)}")
        self.service = service
        self.timeout = timeout
        self.region = region

    def _health(self) -> Health:
        if self.service == "api":
            return self.services.api().health()
        from rehearsal.services import health

        return health(self.service, self.services.addresses.url(self.service))

    def run_step(self, context: Context) -> dict:
        region = self.region if isinstance(self.region, str) and self.region else None
        if isinstance(self.region, dict):  # a decision record (Scenario C): its target region
            region = self.region.get("target_region") or None
        if region:
            return self._restore_in_region(region)
        before = self._health()
        started = []
        if not before.body:  # no answer at all: the process is gone
            started = self._start(before.detail)
        return self._confirm(started)

    def _start(self, why_down: str, region: str | None = None) -> list[str]:
        env = current_environment()
        provisioner = load_provisioner(env.provisioner, environment=env)
        why = capability_limitation(provisioner, ServiceControl)
        if why:
            raise PreconditionFailed(f"{self.service} does not answer ({why_down}) and nothing on {env.name!r} can "
                                     f"start it: {why}")
        mode = "read-only" if self.service == "api" else None
        return provisioner.start_service(self.service, mode=mode, **({"region": region} if region else {}))

    def _restore_in_region(self, region: str) -> dict:
        """Start the service in ``region`` unless it answers there, then point its record at it: from here on every
        client (and every later step) finds it there."""
        from rehearsal.services import health

        url = self.services.configured.region_url(region, self.service)
        there = health(self.service, url)
        started = [] if there.body else self._start(there.detail, region)
        moved = self.services.point_service(self.service, url)
        started.append(f"{self.service} record {'pointed at' if moved else 'already named'} {url} ({region})")
        record = self._confirm(started)
        record.update({"region": region, "url": url})
        return record

    def _confirm(self, started: list[str]) -> dict:
        rate_before = None
        if self.service == "reconciler":
            wait_until(lambda: self._answers(), self.timeout, "reconciler answering")
            rate_before = _running_rate(self.services.reconciler())  # what the ramp puts back at the end
            self.services.reconciler().set_rate(0)
        if self.service == "api":
            return self._confirm_api(started)
        # Healthy, or up and waiting for the database (which the next steps restore): either ends the wait.
        seen: list[Health] = []

        def settled() -> tuple[bool, str]:
            seen.append(self._health())
            return seen[-1].ok or self._waits_for_database(seen[-1]), seen[-1].detail

        try:
            wait_until(settled, self.timeout, f"{self.service} healthy")
        except RecoveryTimedOut:
            pass
        after = seen[-1]
        if not after.ok and not self._waits_for_database(after):
            raise RecoveryTimedOut(f"{self.service} not healthy {self.timeout:.0f}s after it was started: {after.detail}")
        state = "healthy" if after.ok else "running, waiting for the database"
        return {"service": self.service, "confirmed_at": now_iso(), "started": started, "health": after.to_dict(),
                "rate_before": rate_before,
                "detail": f"{self.service} {state}"
                          + ((f" (paused; it ran at {rate_before:g}/s)" if rate_before else " (paused)")
                             if self.service == "reconciler" else "")
                          + (f"; {'; '.join(started)}" if started else "; it was running")}

    def _answers(self) -> tuple[bool, str]:
        h = self._health()
        return bool(h.body), h.detail

    @staticmethod
    def _waits_for_database(health: Health) -> bool:
        error = str(health.body.get("error", "")).lower()
        # The database's own refusals count: a primary that answers but cannot commit ("read-only transaction"),
        # or a standby it reached ("recovery"): the health check and the failover that follow are what fix them.
        words = ("database", "connect", "postgres", "read-only transaction", "recovery is in progress")
        return health.body.get("status") == "degraded" and any(w in error for w in words)

    def _confirm_api(self, started: list[str]) -> dict:
        api = self.services.api(actor="rehearsal-restore")
        wait_until(self._answers, self.timeout, "API answering")
        if api.mode() != "read-only":
            api.set_mode("read-only", "Scenario A: API read-only first")
        health = api.health()
        suffix = f"; {'; '.join(started)}" if started else "; it was running"
        if not health.ok and self._waits_for_database(health):
            # Nothing to read yet (no primary, no readable replica): read-only is set; reads come back with the
            # database, which the next steps restore.
            return {"service": "api", "mode": "read-only", "confirmed_at": now_iso(), "started": started, "reads": 0,
                    "detail": f"API up in read-only mode, waiting for the database ({health.detail}){suffix}"}
        wait_until(lambda: (api.health().ok, api.health().detail), self.timeout, "API answering reads")
        apps = api.apps()
        _app, answer = mutation_probe(api, self.services.addresses.canary_app, f"read-only-probe-{uuid.uuid4()}")
        refused = confirm_refused(answer, "read-only")
        return {"service": "api", "mode": "read-only", "confirmed_at": now_iso(), "started": started, "reads": len(apps),
                "detail": f"API serving read-only: {len(apps)} apps read, {refused}{suffix}"}


class CheckPostgresHealthOperator(ControlPlaneMixin, DrillStepOperator, BranchMixIn):
    """Validate Postgres health or run failover: the primary discovery points at must commit a write to a
    dedicated probe table and read it back within ``timeout`` (``write_health``); if it does, the failover runbook's
    group is skipped, else it runs. When where the primary is cannot be read (discovery unreadable), the step fails
    naming why: a check that did not run never chooses failover by itself."""

    inherits_from_skipmixin = True  # serialized as able to skip downstream, as BaseBranchOperator is

    def __init__(self, *, healthy_task_id: str, failover_group_id: str, timeout: float = 5.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.healthy_task_id, self.failover_group_id = healthy_task_id, failover_group_id
        self.timeout = timeout

    def execute(self, context: Context) -> Any:
        started = now_iso()
        self._refuse_if_aborted(context)
        try:
            primary = self.controlplane.platform().primary_address()
        except Exception as exc:  # noqa: BLE001 - a check that cannot run chooses nothing
            detail = (f"cannot check Postgres health: where the primary is cannot be read ({type(exc).__name__}: {exc}); "
                      "a check that did not run never chooses failover: fix discovery, or run the failover runbook by hand")
            push_step(context, self.task_id, started, "failed", detail, "refused")
            raise PreconditionFailed(detail) from exc
        from rehearsal.platform import split_address
        from rehearsal.postgres.connection import write_health

        ok, why = write_health(self.controlplane.endpoint(*split_address(primary)), timeout=self.timeout,
                               prober=f"scenario-a:{context['run_id']}"[:200])
        branch = self.healthy_task_id if ok else self.failover_group_id
        detail = (f"primary {primary} accepts writes: failover not needed" if ok
                  else f"primary {primary} is unhealthy ({why}): running the postgres-failover runbook")
        push_step(context, self.task_id, started, "success", detail)
        context["ti"].xcom_push(key="return_value", value={"healthy": ok, "primary": primary, "why": why, "detail": detail})
        return self.do_branch(context, branch)


class ResumeWritesOperator(ServicesMixin, DrillStepOperator):
    """Writes back in a controlled fashion: first a canary, our own maintenance write while everyone else is still
    refused (one key of our own merged into an app's config), acknowledged and read back at its new generation;
    only then the API goes read-write. A canary that fails leaves writes closed and names why."""

    def __init__(self, *, timeout: float = 30, **kwargs) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout

    def run_step(self, context: Context) -> dict:
        api = self.services.api(actor="rehearsal-canary")
        previous = api.mode()
        request_id = f"canary-{uuid.uuid4()}"
        app, answer = mutation_probe(api, self.services.addresses.canary_app, request_id,
                                     maintenance=f"canary before writes resume ({context['run_id']})")
        if not answer.ok:
            raise PreconditionFailed(f"canary write on app {app['id']} failed: HTTP {answer.status} {answer.body}; "
                                     f"writes stay {previous}")
        generation = answer.body.get("generation")
        read = api.app(app["id"])
        if not read.ok or read.body.get("generation") != generation:
            raise PreconditionFailed(f"canary on app {app['id']} acknowledged at generation {generation} but read back "
                                     f"{read.body.get('generation')} (HTTP {read.status}); writes stay {previous}")
        api.set_mode("read-write", f"resume writes after canary {request_id} ({context['run_id']})")
        if api.mode() != "read-write":
            raise PreconditionFailed(f"the API did not go read-write after the canary (mode {api.mode()})")
        return {"read_write_at": now_iso(), "canary": answer.body, "previous_mode": previous,
                "detail": f"canary {request_id} on app {app['id']} acknowledged at generation {generation} and read back "
                          f"while writes were still {previous}; then the API went read-write"}


class ResumeReconcilerGraduallyOperator(ServicesMixin, DrillStepOperator):
    """Ramp the reconciler's rate in steps, holding each while error rate and queue depth stay under their
    thresholds; backing off when they do not (no retry storm). It ends at the rate the reconciler ran at before the
    runbook paused it (``paused``: the record of the step that paused it); a rate not put back, or steps held
    without metrics, are the run's ``degraded`` items.

    :param paused_by: the step that paused the reconciler, whose record says its rate before
        (``{"rate_before": ...}``); the builder hands in that task (not an XComArg: the ramp already runs after it,
        and an extra edge changed how a called-off run's skips reach the steps before the ramp)"""

    def __init__(self, *, steps: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0), hold_seconds: float = 3.0,
                 max_error_rate: float = 0.2, max_queue_depth: int = 50, max_backoffs: int = 3,
                 paused_by: BaseOperator | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps = tuple(steps)
        self.policy = RampPolicy(tuple(steps), hold_seconds, max_error_rate, max_queue_depth, max_backoffs)
        self.paused_by = paused_by.task_id if paused_by is not None else None

    def run_step(self, context: Context) -> dict:
        from dataclasses import replace

        from rehearsal.runbooks.control_plane import ramp_degraded, ramp_steps_to

        paused = context["ti"].xcom_pull(task_ids=self.paused_by) if self.paused_by else None
        before = paused.get("rate_before") if isinstance(paused, dict) else None
        before = float(before) if before else None
        reconciler = self.services.reconciler()
        result = ramp(reconciler.set_rate, reconciler.metrics, replace(self.policy, steps=ramp_steps_to(self.steps, before)))
        degraded = [{"step": self.task_id, **d} for d in ramp_degraded(result, before)]
        return {**result.to_dict(), "resumed_at": now_iso(), "rate_before": before, "degraded": degraded,
                "detail": result.describe() + (f" (its rate before the incident: {before:g}/s)" if before else "")
                          + "".join(f"; DEGRADED: {d['item']}" for d in degraded)}


def _running_rate(reconciler) -> float | None:
    """The reconciler's rate now, when it runs (not paused); None when it cannot be told."""
    try:
        rate = reconciler.metrics().get("rate")
    except Exception:  # noqa: BLE001 - unknown: the ramp then says so
        return None
    return float(rate) if rate else None


class TimeToConvergeSensor(ServicesMixin, DrillStepOperator):
    """Makes one change of its own, then waits (in the triggerer) until the time-to-converge SLI is back under its
    normal threshold: changes made since this step began (its own at least) converged within it, and nothing older
    is still waiting longer (the outage's own slow changes do not hold it for the SLI's whole 300 s window). Times
    out naming the last value."""

    def __init__(self, *, threshold_seconds: float = 30, timeout: float = 600, poll_interval: float = 1.0,
                 deferrable: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.threshold_seconds, self.timeout, self.poll_interval = threshold_seconds, timeout, poll_interval
        from rehearsal_airflow.operators.postgres_recovery import _deferrable_default

        self.deferrable = _deferrable_default() if deferrable is None else deferrable

    def run_step(self, context: Context) -> dict:
        url = self.services.addresses.reconciler
        since = time.time()
        # A change of our own (one key merged into an app's config) that must converge: the SLI is then measured
        # on a real change, even on a quiet platform.
        _app, answer = mutation_probe(self.services.api(actor="rehearsal-converge"), self.services.addresses.canary_app,
                                      f"converge-probe-{uuid.uuid4()}")
        if not answer.ok:
            raise PreconditionFailed(f"the change that proves convergence was refused: HTTP {answer.status} {answer.body}")
        if self.deferrable:
            from rehearsal_airflow.triggers.control_plane import ConvergenceTrigger

            self.defer(trigger=ConvergenceTrigger(url, self.threshold_seconds, self.timeout, self.poll_interval, since,
                                                  stop_conditions=self.stop_conditions_now(context),
                                                  probe_log=current_environment().probe_log),
                       method_name="resume_converged", timeout=timedelta(seconds=self.timeout + 60))
        started = time.monotonic()
        reconciler = self.services.reconciler()
        check = self.stop_check(context)

        def converged() -> tuple[bool, str]:
            check()  # a drill's stop conditions, on every poll of the wait
            return convergence(reconciler.metrics(since), self.threshold_seconds, True)

        detail = wait_until(converged, self.timeout,
                            f"time-to-converge under {self.threshold_seconds:.0f}s", interval=self.poll_interval)
        return self._done(detail, time.monotonic() - started, reconciler.metrics(since))

    def resume_converged(self, context: Context, event: dict) -> dict:
        def finish() -> dict:
            if event.get("status") == "stopped":  # a stop condition tripped while the triggerer waited
                self._stop(context, event["message"])
            if event.get("status") != "done":
                raise RecoveryTimedOut(event.get("message", str(event)))
            return self._done(event["detail"], event["waited"], event["metrics"])

        return self.execute_resumed(context, finish)

    def _done(self, detail: str, waited: float, metrics: dict) -> dict:
        return {"converged_at": now_iso(), "waited_seconds": round(waited, 2), "metrics": metrics,
                "time_to_converge_seconds": metrics.get("time_to_converge_seconds"),
                "detail": f"time-to-converge back under {self.threshold_seconds:.0f}s after {waited:.1f}s: {detail}"}
