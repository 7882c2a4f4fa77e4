"""What the control-plane drills measure and watch, from evidence only (the prober's and the load's logs, the
restored database): never from the runbook's own claims."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Context

from rehearsal import results
from rehearsal.catalog import load_catalog
from rehearsal.dataplane import production_health
from rehearsal.drills.control_plane import first_ack_after, measure_outage, read_load_log
from rehearsal.errors import DrillAborted, EvidenceError, PreconditionFailed
from rehearsal.platform import load_provisioner
from rehearsal.postgres.connection import connect
from rehearsal.runbooks.corruption import measure_corruption_rpo, parse_time
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.results_db import results_endpoint
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator, now_iso

TERMINAL = ("success", "failed", "skipped", "upstream_failed", "removed")


def _log(path: str | None, what: str) -> Path:
    if not path:
        raise EvidenceError(f"the rehearsal_environment Variable names no {what}: nothing to measure from")
    return Path(path)


def _present_request_ids(conn, acks: list[dict]) -> set[str]:
    ids = [a["request_id"] for a in acks]
    if not ids:
        return set()
    rows = conn.execute("SELECT detail::jsonb->>'request_id' FROM audit_log WHERE detail::jsonb->>'request_id' = ANY(%s)",
                        (ids,)).fetchall()
    return {r[0] for r in rows}


class MeasureControlPlaneOutageOperator(ControlPlaneMixin, DrillStepOperator):
    """RTO to read-only and to read-write, data-plane availability during the outage, RPO (acknowledged writes
    before the fault missing now), and the time to converge the runbook waited for."""

    template_fields: Sequence[str] = ("fault", "converge")
    runs_after_abort = True

    def __init__(self, *, fault: Any, converge: Any, component: str = "control_plane_api", **kwargs) -> None:
        super().__init__(**kwargs)
        self.fault, self.converge, self.component = fault, converge, component

    def run_step(self, context: Context) -> dict:
        env = current_environment()
        fault_at = float(self.fault["fault_at"])
        outage = measure_outage(_log(env.probe_log, "probe_log"), _log(env.load_log, "load_log"), fault_at, time.time())
        window = max(2 * load_catalog().target(self.component).rpo.total_seconds(), 60)
        acks = [a for a in read_load_log(Path(env.load_log), since=fault_at - window) if a.get("t_ack")]
        with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
            present = _present_request_ids(conn, [a for a in acks if a["t_ack"] < fault_at])
        rpo = measure_corruption_rpo(acks, fault_at, present, window)
        converge = self.converge or {}
        ratio = outage.dataplane_availability
        checks = [{"name": "data_plane_available_during_outage", "ok": ratio == 1.0, "critical": True,
                   "detail": f"{ratio:.4%} of {outage.dataplane_rounds} probe rounds' endpoints answered between the "
                             f"fault and read-write (app runtime promises RPO 0: every endpoint keeps serving)"},
                  {"name": "api_read_only_before_read_write", "ok": outage.read_only_at is not None
                   and outage.read_only_at <= outage.read_write_at, "critical": True,
                   "detail": f"read-only after {outage.rto_read_only_seconds}s, read-write after "
                             f"{outage.rto_read_write_seconds:.1f}s"}]
        return {"rto_seconds": round(outage.rto_read_write_seconds, 3), "rpo_seconds": round(rpo.rpo_seconds, 3),
                "checks": checks,
                "evidence": {"outage": outage.to_dict(), "rpo": rpo.to_dict(),
                             "time_to_converge_seconds": converge.get("time_to_converge_seconds"),
                             "converge_waited_seconds": converge.get("waited_seconds"),
                             "measurement_includes": "from the SIGKILL of the services to the prober's first API "
                                                     "answer (read-only) and to the load's first acknowledged write "
                                                     "(read-write)"},
                "detail": f"RTO read-only {outage.rto_read_only_seconds and round(outage.rto_read_only_seconds, 1)}s, "
                          f"read-write {outage.rto_read_write_seconds:.1f}s; data plane {ratio:.2%} available over "
                          f"{outage.dataplane_rounds} rounds; RPO {rpo.rpo_seconds:.1f}s "
                          f"({len(rpo.lost_before)} write(s) lost); time to converge "
                          f"{converge.get('time_to_converge_seconds')}s"}


class MeasureCorruptionRecoveryOperator(ControlPlaneMixin, DrillStepOperator):
    """RTO: from the corruption to the load's first acknowledged write sent after the freeze (on the restored
    cluster). RPO: acknowledged writes before the corruption point the restored cluster lacks."""

    template_fields: Sequence[str] = ("fault", "freeze")
    runs_after_abort = True

    def __init__(self, *, fault: Any, freeze: Any, component: str = "control_plane_api", **kwargs) -> None:
        super().__init__(**kwargs)
        self.fault, self.freeze, self.component = fault, freeze, component

    def run_step(self, context: Context) -> dict:
        env = current_environment()
        corrupted_at = parse_time(self.fault["corrupted_at"], "corrupted_at").timestamp()
        if not self.freeze:
            raise EvidenceError("the runbook never froze mutations: no recovery to measure")
        frozen_at = parse_time(self.freeze["frozen_at"], "frozen_at").timestamp()
        window = max(2 * load_catalog().target(self.component).rpo.total_seconds(), 60)
        attempts = read_load_log(_log(env.load_log, "load_log"), since=corrupted_at - window)
        first = first_ack_after(attempts, frozen_at)
        if first is None:
            raise EvidenceError(f"no write of the synthetic load was acknowledged after the freeze ({len(attempts)} "
                                "attempt(s)): the control plane never took writes again")
        acks = [a for a in attempts if a.get("t_ack") and 200 <= int(a.get("status") or 0) < 300]
        with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
            present = _present_request_ids(conn, [a for a in acks if a["t_ack"] < corrupted_at])
        rpo = measure_corruption_rpo(acks, corrupted_at, present, window)
        rto = first["t_ack"] - corrupted_at
        return {"rto_seconds": round(rto, 3), "rpo_seconds": round(rpo.rpo_seconds, 3),
                "evidence": {"rpo": rpo.to_dict(), "first_write_after_recovery": first,
                             "measurement_includes": "from the corruption's first statement to the load's first "
                                                     "acknowledged write sent after the freeze; RPO over acknowledged "
                                                     "writes before the corruption point"},
                "detail": f"RTO {rto:.1f}s (corruption to the first acknowledged write on the restored cluster); "
                          f"RPO {rpo.rpo_seconds:.1f}s: {len(rpo.lost_before)} of {rpo.acks_considered} acknowledged "
                          f"write(s) before the corruption missing; {rpo.after_corruption} written after it"}


class WatchStopConditionsOperator(DrillStepOperator):
    """While the drill's runbook runs: production health from the prober's log (data-plane probe success, and the
    API's error share when asked). A threshold crossed aborts the drill: its next steps refuse to run, the
    environment is rolled back through the provisioner, and this step fails saying why. Ends, passing, when the
    runbook's last step has ended."""

    template_fields: Sequence[str] = ("guard",)
    runs_after_abort = True

    def __init__(self, *, guard: Any, last_task_id: str, min_dataplane_success: float = 0.95,
                 max_api_error_share: float | None = None, window_seconds: float = 5.0, timeout: float = 7200,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.guard, self.last_task_id = guard, last_task_id
        self.min_dataplane_success, self.max_api_error_share = min_dataplane_success, max_api_error_share
        self.window_seconds, self.timeout = window_seconds, timeout

    def run_step(self, context: Context) -> dict:
        env = current_environment()
        log_path = _log(env.probe_log, "probe_log")
        ti, dag_id, run_id = context["ti"], context["dag"].dag_id, context["run_id"]
        deadline, checks, worst = time.monotonic() + self.timeout, 0, 1.0
        while time.monotonic() < deadline:
            state = ti.get_task_states(dag_id=dag_id, task_ids=[self.last_task_id], run_ids=[run_id]).get(run_id, {})
            if str(state.get(self.last_task_id)) in TERMINAL:
                return {"checks_made": checks, "worst_dataplane_success": worst,
                        "detail": f"no stop condition tripped in {checks} check(s); worst data-plane probe success "
                                  f"{worst:.2%}"}
            success, api_errors, rounds = production_health(log_path, time.time(), self.window_seconds)
            checks += 1
            if success is not None:
                worst = min(worst, success)
            why = None
            if rounds and success is not None and success < self.min_dataplane_success:
                why = (f"data-plane probe success {success:.2%} < {self.min_dataplane_success:.0%} over the last "
                       f"{self.window_seconds:.0f}s")
            elif rounds and self.max_api_error_share is not None and api_errors > self.max_api_error_share:
                why = f"API errors in {api_errors:.0%} of probes > {self.max_api_error_share:.0%}"
            if why:
                self._abort(context, env, why)
            time.sleep(1.0)
        raise PreconditionFailed(f"stop-condition watch outlived {self.timeout:.0f}s; the runbook never finished")

    def _abort(self, context: Context, env, why: str) -> None:
        guard = self.guard or {}
        results.abort_drill(results_endpoint(), env.name, context["dag"].dag_id, context["run_id"], why)
        rolled_back = []
        provisioner = load_provisioner(env.provisioner, environment=env)
        if guard.get("mode") == "disruptive" and provisioner is not None and env.drill_environment:
            rolled_back = provisioner.restore_environment()
        raise DrillAborted(f"stop condition tripped at {now_iso()}: {why}; the drill stops and was rolled back"
                           + (f" ({'; '.join(rolled_back)})" if rolled_back else ""))
