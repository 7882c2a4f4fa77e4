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
        shown = "no endpoint" if ratio is None else f"{ratio:.4%}"
        checks = [{"name": "data_plane_available_during_outage", "ok": ratio == 1.0, "critical": True,
                   "detail": f"{shown} of {outage.dataplane_rounds} probe rounds' endpoints answered between the "
                             f"fault and read-write (app runtime promises RPO 0: every endpoint keeps serving)"},
                  {"name": "api_read_only_before_read_write", "ok": outage.read_only_at is not None
                   and outage.read_only_at <= outage.read_write_at, "critical": True,
                   "detail": ("the API never answered in read-only mode before writes came back" if outage.read_only_at
                              is None else f"read-only after {outage.rto_read_only_seconds:.1f}s (the prober saw mode "
                              f"read-only), read-write after {outage.rto_read_write_seconds:.1f}s")}]
        return {"rto_seconds": round(outage.rto_read_write_seconds, 3), "rpo_seconds": round(rpo.rpo_seconds, 3),
                "checks": checks,
                "evidence": {"outage": outage.to_dict(), "rpo": rpo.to_dict(),
                             "time_to_converge_seconds": converge.get("time_to_converge_seconds"),
                             "converge_waited_seconds": converge.get("waited_seconds"),
                             "measurement_includes": "from the SIGKILL of the services to the prober's first API "
                                                     "answer (read-only) and to the load's first acknowledged write "
                                                     "(read-write)"},
                "detail": f"RTO read-only {outage.rto_read_only_seconds and round(outage.rto_read_only_seconds, 1)}s, "
                          f"read-write {outage.rto_read_write_seconds:.1f}s; data plane {shown} available over "
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
