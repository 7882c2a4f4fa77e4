"""DrillStepOperator: every step of a runbook or drill records when it ran, how it ended, why, and the kind of
failure (refused, timed out, recovery failed, ...), for the report."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred

from rehearsal.drills.primary_loss import run_key
from rehearsal.drills.start_rules import is_drill_run
from rehearsal.errors import DrillAborted, error_kind

if TYPE_CHECKING:
    from rehearsal_airflow.hooks.controlplane_db import ControlPlaneDbHook

log = logging.getLogger(__name__)
STEP_KEY = "step"


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class DrillStepOperator(BaseOperator):
    """Runs ``run_step`` and pushes XCom ``step`` = {name, started_at, finished_at, status, detail, kind}, even on
    failure (``kind``: the error kind of a failure, see ``rehearsal.errors``)."""

    def run_step(self, context: Context) -> Any:
        raise NotImplementedError

    def describe(self, result: Any) -> str:
        return result.get("detail", "") if isinstance(result, dict) else ""

    # A drill's frame (its teardown and report) runs after a stop condition; only its other steps stop.
    runs_after_abort: bool = False

    def execute(self, context: Context) -> Any:
        return self.execute_resumed(context, lambda: self._refuse_if_aborted(context) or self.run_step(context))

    def _refuse_if_aborted(self, context: Context) -> None:
        """The stop of a disruptive drill: a run told to stop runs no further step, and a run whose stop conditions
        are crossed now (production health, from the prober's log) stops here, rolls back and says why. A run is a
        drill by its mode (``rehearsal.drills.start_rules.is_drill_run``), never by its DAG's name; an incident is
        never stopped this way, and a drill that holds no lock has nothing to stop."""
        if self.runs_after_abort or not is_drill_run(context.get("params")):
            return None
        dag_id = context["dag"].dag_id
        from rehearsal import results
        from rehearsal_airflow.hooks.results_db import results_endpoint

        try:
            reason, conditions = results.drill_run_control(results_endpoint(), dag_id, context["run_id"])
        except Exception as exc:  # noqa: BLE001 - the results database down must not stop a drill step
            log.warning("could not read the drill's stop flag: %s", exc)
            return None
        if reason:
            raise DrillAborted(f"drill aborted by its stop condition, step not run: {reason}")
        if conditions:
            self._check_stop_conditions(context, conditions)
        return None

    def _check_stop_conditions(self, context: Context, conditions: dict) -> None:
        import time
        from pathlib import Path

        from rehearsal import results
        from rehearsal.capabilities import EnvironmentRestorer
        from rehearsal.drills.stop_conditions import StopConditions, tripped
        from rehearsal.platform import load_provisioner
        from rehearsal_airflow.environment import current_environment
        from rehearsal_airflow.hooks.results_db import results_endpoint

        env = current_environment()
        if not env.probe_log:
            return
        why = tripped(StopConditions.from_dict(conditions), Path(env.probe_log), time.time())
        if why is None:
            return
        why = f"stop condition tripped before {self.task_id} at {now_iso()}: {why}"
        results.abort_drill(results_endpoint(), env.name, context["dag"].dag_id, context["run_id"], why)
        provisioner = load_provisioner(env.provisioner, environment=env)
        restorer = isinstance(provisioner, EnvironmentRestorer) and env.drill_environment
        rolled_back = provisioner.restore_environment() if restorer else ["nothing rolled back: no provisioner here can "
                                                                          "put the environment back"]
        raise DrillAborted(f"{why}; the drill stops and rolled back" + (f" ({'; '.join(rolled_back)})" if rolled_back else ""))

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
        except Exception as exc:
            detail, kind = f"{type(exc).__name__}: {exc}", error_kind(exc)
            if isinstance(exc, DrillAborted):  # a stopped drill is not retried
                raise AirflowFailException(str(exc)) from exc
            raise
        finally:
            push_step(context, self.task_id, started, status, detail, kind)


def push_step(context: Context, name: str, started: str, status: str, detail: str, kind: str | None = None) -> None:
    """The step's record for the report (XCom ``step``)."""
    context["ti"].xcom_push(key=STEP_KEY, value={"name": name, "started_at": started, "finished_at": now_iso(),
                                                 "status": status, "detail": detail, "kind": kind})


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
