"""DrillStepOperator: every step of a runbook or drill records when it ran, how it ended, why, and the kind of
failure (refused, timed out, recovery failed, ...), for the report."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context, Variable
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred

from rehearsal.drills.primary_loss import run_key
from rehearsal.drills.start_rules import is_drill_run, is_incident_run
from rehearsal.errors import DrillAborted, DrillCalledOff, PreconditionFailed, error_kind

if TYPE_CHECKING:
    from rehearsal_airflow.hooks.controlplane_db import ControlPlaneDbHook

log = logging.getLogger(__name__)
STEP_KEY = "step"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class DrillStepOperator(BaseOperator):
    """Runs ``run_step`` and pushes XCom ``step`` = {name, started_at, finished_at, status, detail, kind}, even on
    failure (``kind``: the error kind of a failure, see ``rehearsal.errors``).

    Before ``run_step``, two checks that no step can forget:

    - the run's first step (a task with no upstream: a drill's guard, a runbook's or scenario's first step) opens
      the run (``_open_run``): a drill, by its ``mode``, skips while drills are switched off or when its scheduled
      start is late (``rehearsal.drills.start_rules``); an incident switches drills off for its environment;
    - every later step of a drill run (``_refuse_if_aborted``) skips when the run was called off, and stops when
      its stop condition tripped.
    """

    def run_step(self, context: Context) -> Any:
        raise NotImplementedError

    def describe(self, result: Any) -> str:
        return result.get("detail", "") if isinstance(result, dict) else ""

    # A drill's frame (its teardown and report) runs after a stop condition; only its other steps stop.
    runs_after_abort: bool = False
    # The report runs for a run called off before it started (it says so); every other step skips.
    runs_when_called_off: bool = False
    # What opening the run added to this step's record (``drills_switched_off``), for the report.
    _opening: dict | None = None

    def execute(self, context: Context) -> Any:
        return self.execute_resumed(context, lambda: self._open_run(context) or self._refuse_if_aborted(context)
                                    or self.run_step(context))

    # ------------------------------------------------------------------ the run's first step
    def _open_run(self, context: Context) -> None:
        """The run's first step decides whether the run may go on. A drill (by its mode) that may not start now is
        recorded as called off and raises ``DrillCalledOff`` (the step, and then every other, skips). An incident
        switches drills off for its environment, and says so in this step's record (the report's evidence)."""
        if self.upstream_task_ids:
            return None
        params = context.get("params") or {}
        if is_incident_run(params):
            self._opening = {"drills_switched_off": self._switch_drills_off_for_incident(context)}
        elif is_drill_run(params):
            self._call_off_if_it_may_not_start(context)
        return None

    def _call_off_if_it_may_not_start(self, context: Context) -> None:
        from rehearsal import results
        from rehearsal.drills.start_rules import SWITCH_VARIABLE, DrillSwitch, start_limitation
        from rehearsal_airflow.environment import current_environment
        from rehearsal_airflow.hooks.results_db import results_endpoint

        env = current_environment()
        try:
            switches = [DrillSwitch.from_variable(env.name, Variable.get(SWITCH_VARIABLE, default=None)),
                        results.drill_switch(results_endpoint(), env.name)]
        except Exception as exc:  # noqa: BLE001 - a switch nobody can read may be on: no drill
            raise PreconditionFailed(f"cannot read whether drills are switched off for {env.name!r} (the results "
                                     f"database or the Variable {SWITCH_VARIABLE}): {exc}") from exc
        dag_run = context["dag_run"]
        run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
        now = datetime.now(UTC)
        why = start_limitation(run_type=run_type, logical_date=dag_run.logical_date, now=now, switches=switches)
        if why is None:
            return
        dag = context["dag"]
        results.record_called_off(results_endpoint(), dag.dag_id, context["run_id"],
                                  getattr(self, "scenario", None) or dag.description or dag.dag_id,
                                  str(context["params"].get("mode")), env.name,
                                  getattr(self, "component", None) or "unknown", now.isoformat(), why)
        raise DrillCalledOff(why)

    def _switch_drills_off_for_incident(self, context: Context) -> str:
        """Drills off while the incident lasts (a switch a person set stays as it is); what happened, in words. Never
        stops the incident: an unreachable results database is recorded, not raised."""
        from rehearsal import results
        from rehearsal.drills.start_rules import ON_COMMAND, incident_switch_reason
        from rehearsal_airflow.environment import current_environment
        from rehearsal_airflow.hooks.results_db import results_endpoint

        env = current_environment()
        dag_id, run_id = context["dag"].dag_id, context["run_id"]
        reason, by = incident_switch_reason(dag_id, run_id, datetime.now(UTC)), f"{dag_id} run {run_id}"
        try:
            before = results.drills_off(results_endpoint(), env.name, reason, by, keep_existing=True)
        except Exception as exc:  # noqa: BLE001 - the incident goes on whatever the results database does
            log.warning("could not switch drills off for %s: %s", env.name, exc)
            return (f"drills NOT switched off for environment {env.name!r}: the results database did not answer "
                    f"({type(exc).__name__}: {exc}); switch them off by hand (make drills-off)")
        back_on = ON_COMMAND.format(environment=env.name)
        if before is not None and before.set_by == by:  # this step retried: the switch is its own
            reason = before.reason
        elif before is not None:
            return f"drills were already switched off for environment {env.name!r}: {before.describe()}; left as they are"
        self.log.info("drills switched off for %s: %s", env.name, reason)
        return f"drills switched off for environment {env.name!r}: {reason}; `{back_on}` once it is over"

    # ------------------------------------------------------------------ every later step of a drill
    def _refuse_if_aborted(self, context: Context) -> None:
        """A drill run called off before it started runs no further step (it skips); a run told to stop runs no
        further step, and a run whose stop conditions are crossed now (production health, from the prober's log)
        stops here, rolls back and says why. Runs that are not drills (an incident, a backup) are never stopped this
        way."""
        if self.runs_when_called_off or not is_drill_run(context.get("params")):
            return None
        from rehearsal import results
        from rehearsal_airflow.hooks.results_db import results_endpoint

        try:
            control = results.drill_run_control(results_endpoint(), context["dag"].dag_id, context["run_id"])
        except Exception as exc:  # noqa: BLE001 - fail closed: a drill that cannot be told to stop does not go on
            if self.runs_after_abort:  # what puts the environment back and reports still runs
                log.warning("could not read the drill's stop flag: %s", exc)
                return None
            raise DrillAborted(f"step not run: the drill's stop flag and stop conditions cannot be read (results "
                               f"database: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                               "a drill that cannot be told to stop does not go on") from exc
        if control.called_off:
            raise AirflowSkipException(f"not run: the drill was called off before it started ({control.called_off})")
        if self.runs_after_abort:
            return None
        if control.abort_reason:
            raise DrillAborted(f"drill aborted by its stop condition, step not run: {control.abort_reason}")
        if control.stop_conditions:
            self._check_stop_conditions(context, control.stop_conditions)
        return None

    def _check_stop_conditions(self, context: Context, conditions: dict) -> None:
        self.stop_check(context, conditions, moment="before")()

    def stop_check(self, context: Context, conditions: dict | None = None, moment: str = "during"):
        """A callable that checks the drill's stop conditions now (before a step, and on every poll of a long wait)
        and stops the drill when they are crossed: recorded, rolled back, ``DrillAborted``. Fails closed: stop
        conditions with no prober log to read trip it. A no-op for runs that are not drills, or hold none."""
        from pathlib import Path

        from rehearsal.drills.stop_conditions import StopConditions, stop_check
        from rehearsal_airflow.environment import current_environment

        if conditions is None:
            if not is_drill_run(context.get("params")):
                return lambda: None
            from rehearsal import results
            from rehearsal_airflow.hooks.results_db import results_endpoint

            conditions = results.drill_run_control(results_endpoint(), context["dag"].dag_id,
                                                   context["run_id"]).stop_conditions
        env = current_environment()
        probe_log = Path(env.probe_log) if env.probe_log else None
        return stop_check(StopConditions.from_dict(conditions), probe_log, lambda why: self._stop(context, why, moment))

    def stop_conditions_now(self, context: Context) -> dict | None:
        """The drill's stop conditions, to hand to a trigger that waits for it (None for runs that are not drills)."""
        if not is_drill_run(context.get("params")):
            return None
        from rehearsal import results
        from rehearsal_airflow.hooks.results_db import results_endpoint

        return results.drill_run_control(results_endpoint(), context["dag"].dag_id, context["run_id"]).stop_conditions

    def _stop(self, context: Context, why: str, moment: str = "during") -> None:
        from rehearsal import results
        from rehearsal.capabilities import EnvironmentRestorer
        from rehearsal.platform import load_provisioner
        from rehearsal_airflow.environment import current_environment
        from rehearsal_airflow.hooks.results_db import results_endpoint

        env = current_environment()
        why = f"stop condition tripped {moment} {self.task_id} at {now_iso()}: {why}"
        results.abort_drill(results_endpoint(), env.name, context["dag"].dag_id, context["run_id"], why)
        provisioner = load_provisioner(env.provisioner, environment=env)
        restorer = isinstance(provisioner, EnvironmentRestorer) and env.drill_environment
        rolled_back = provisioner.restore_environment() if restorer else ["nothing rolled back: no provisioner here can "
                                                                          "put the environment back"]
        raise DrillAborted(f"{why}; the drill stops and rolled back" + (f" ({'; '.join(rolled_back)})" if rolled_back else ""))

    # ------------------------------------------------------------------ the step's record
    def execute_resumed(self, context: Context, step: Callable[[], Any]) -> Any:
        """Run ``step`` (``run_step``, or the method a deferred step resumes in) and record it."""
        started = now_iso()
        status, detail, kind = "failed", "", None
        try:
            result = step()
            status, detail = "success", self.describe(result)
            return result
        except TaskDeferred:
            status, detail = "deferred", "waiting in the triggerer"
            raise
        except AirflowSkipException as exc:
            status, detail = "skipped", str(exc)
            raise
        except DrillCalledOff as exc:  # nothing was touched: the run skips, not fails
            status, detail, kind = "skipped", str(exc), exc.kind
            raise AirflowSkipException(str(exc)) from exc
        except Exception as exc:
            detail, kind = f"{type(exc).__name__}: {exc}", error_kind(exc)
            if isinstance(exc, DrillAborted):  # a stopped drill is not retried
                raise AirflowFailException(str(exc)) from exc
            raise
        finally:
            push_step(context, self.task_id, started, status, detail, kind, **(self._opening or {}))


def push_step(context: Context, name: str, started: str, status: str, detail: str, kind: str | None = None,
              **extra: Any) -> None:
    """The step's record for the report (XCom ``step``); ``extra``: fields a step adds (``drills_switched_off``)."""
    context["ti"].xcom_push(key=STEP_KEY, value={"name": name, "started_at": started, "finished_at": now_iso(),
                                                 "status": status, "detail": detail, "kind": kind, **extra})


def key_of(context: Context) -> str:
    return run_key(context["dag"].dag_id, context["run_id"])


class ControlPlaneMixin:
    """The control-plane database hook, built lazily from ``controlplane_conn_id`` and ``aws_conn_id``."""

    controlplane_conn_id = "controlplane_admin"
    aws_conn_id = "aws_default"

    @cached_property
    def controlplane(self) -> ControlPlaneDbHook:
        from rehearsal_airflow.hooks.controlplane_db import ControlPlaneDbHook  # not at parse time

        return ControlPlaneDbHook(self.controlplane_conn_id, self.aws_conn_id)
