"""What the control-plane drills measure and watch, from evidence only (the prober's and the load's logs, the
restored database): never from the runbook's own claims."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import Context

from rehearsal.catalog import load_catalog
from rehearsal.drills.control_plane import first_ack_after, measure_outage, read_load_log
from rehearsal.errors import EvidenceError
from rehearsal.postgres.connection import connect
from rehearsal.runbooks.corruption import measure_corruption_rpo, parse_time
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator

TERMINAL = ("success", "failed", "skipped", "upstream_failed", "removed")


def _log(path: str | None, what: str) -> Path:
    if not path:
        raise EvidenceError(f"the rehearsal_environment Variable names no {what}: nothing to measure from")
    return Path(path)


def _present_request_ids(conn, acks: list[dict]) -> set[str]:
    from rehearsal.runbooks.corruption import present_request_ids

    return present_request_ids(conn, [a["request_id"] for a in acks])


def _history(guard: Any) -> set[str]:
    """Acknowledged writes already missing when the drill's guard ran: not this drill's loss."""
    baseline = (guard or {}).get("rpo_baseline") if isinstance(guard, dict) else None
    return set((baseline or {}).get("missing", []))


class MeasureControlPlaneOutageOperator(ControlPlaneMixin, DrillStepOperator):
    """RTO to read-only and to read-write, data-plane availability during the outage, RPO (acknowledged writes
    before the fault missing now), and the time to converge the runbook waited for."""

    template_fields: Sequence[str] = ("fault", "converge", "guard")
    runs_after_abort = True

    def __init__(self, *, fault: Any, converge: Any, component: str = "control_plane_api", guard: Any = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.fault, self.converge, self.component, self.guard = fault, converge, component, guard

    def run_step(self, context: Context) -> dict:
        env = current_environment()
        fault_at = float(self.fault["fault_at"])
        outage = measure_outage(_log(env.probe_log, "probe_log"), _log(env.load_log, "load_log"), fault_at, time.time())
        window = max(2 * load_catalog().target(self.component).rpo.total_seconds(), 60)
        at_risk = bool(self.fault.get("database"))  # only a fault that touched the database can lose a write
        rpo = None
        if at_risk:
            acks = [a for a in read_load_log(Path(env.load_log), since=fault_at - window) if a.get("t_ack")]
            with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
                present = _present_request_ids(conn, [a for a in acks if a["t_ack"] < fault_at])
            rpo = measure_corruption_rpo(acks, fault_at, present, window, history=_history(self.guard))
        not_at_risk = None if at_risk else ("not at risk: the fault never touched the control-plane database "
                                            "(kill_database false), so no acknowledged write could be lost")
        converge = self.converge or {}
        ratio = outage.dataplane_availability
        shown = "no endpoint" if ratio is None else f"{ratio:.4%}"
        checks = [{"name": "data_plane_available_during_outage", "ok": ratio == 1.0, "critical": True,
                   "detail": f"{shown} of {outage.dataplane_rounds} probe rounds' endpoints answered between the "
                             f"fault and read-write (app runtime promises RPO 0: every endpoint keeps serving)"},
                  {"name": "api_read_only_before_read_write", "ok": outage.read_only_at is not None
                   and outage.read_only_at <= outage.read_write_at, "critical": True,
                   "detail": ("the API never answered in read-only mode before writes came back" if outage.read_only_at
                              is None else f"read-only after {outage.rto_read_only_seconds:.1f}s (the prober saw mode "
                              f"read-only), read-write after {outage.rto_read_write_seconds:.1f}s")}]
        rpo_text = (f"RPO {rpo.rpo_seconds:.1f}s ({rpo.lost_count} write(s) lost"
                    + (f"; {rpo.history_count} lost by an earlier fault, not counted" if rpo.history_count else "") + ")"
                    if rpo else f"RPO {not_at_risk}")
        return {"rto_seconds": round(outage.rto_read_write_seconds, 3),
                "rpo_seconds": round(rpo.rpo_seconds, 3) if rpo else None, "rpo_not_at_risk": not_at_risk,
                "checks": checks,
                "evidence": {"outage": outage.to_dict(), "rpo": rpo.to_dict() if rpo else {"not_at_risk": not_at_risk},
                             "time_to_converge_seconds": converge.get("time_to_converge_seconds"),
                             "converge_waited_seconds": converge.get("waited_seconds"),
                             "measurement_includes": "from the SIGKILL of the services to the prober's first API "
                                                     "answer (read-only) and to the load's first acknowledged write "
                                                     "(read-write)"},
                "detail": f"RTO read-only {outage.rto_read_only_seconds and round(outage.rto_read_only_seconds, 1)}s, "
                          f"read-write {outage.rto_read_write_seconds:.1f}s; data plane {shown} available over "
                          f"{outage.dataplane_rounds} rounds; {rpo_text}; time to converge "
                          f"{converge.get('time_to_converge_seconds')}s"}


class MeasureCorruptionRecoveryOperator(ControlPlaneMixin, DrillStepOperator):
    """RTO: from the corruption to the load's first acknowledged write sent after the freeze (on the restored
    cluster). RPO: acknowledged writes before the corruption point the restored cluster lacks."""

    template_fields: Sequence[str] = ("fault", "freeze", "guard", "repair")
    runs_after_abort = True

    def __init__(self, *, fault: Any, freeze: Any, component: str = "control_plane_api", guard: Any = None,
                 repair: Any = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fault, self.freeze, self.component, self.guard, self.repair = fault, freeze, component, guard, repair

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
        # What the restored copy lacked, before drift repair put some of it back: the restore's own RPO.
        reapplied = set((self.repair or {}).get("reapplied_request_ids", [])) if isinstance(self.repair, dict) else set()
        rpo = measure_corruption_rpo(acks, corrupted_at, present, window, history=_history(self.guard), reapplied=reapplied)
        rto = first["t_ack"] - corrupted_at
        return {"rto_seconds": round(rto, 3), "rpo_seconds": round(rpo.rpo_seconds, 3),
                "evidence": {"rpo": rpo.to_dict(), "first_write_after_recovery": first,
                             "measurement_includes": "from the corruption's first statement to the load's first "
                                                     "acknowledged write sent after the freeze; RPO over acknowledged "
                                                     "writes before the corruption point"},
                "detail": f"RTO {rto:.1f}s (corruption to the first acknowledged write on the restored cluster); "
                          f"RPO {rpo.rpo_seconds:.1f}s: {rpo.lost_count} of {rpo.acks_considered} acknowledged "
                          f"write(s) before the corruption missing from the restored copy"
                          + (f" ({rpo.reapplied_by_drift_repair} of them re-applied by drift repair since)"
                             if rpo.reapplied_by_drift_repair else "")
                          + (f"; {rpo.history_count} lost by an earlier fault, not counted" if rpo.history_count else "")
                          + f"; {rpo.after_corruption} written after it"}
