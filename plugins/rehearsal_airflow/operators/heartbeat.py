"""MeasureRecoveryOperator (drill-only): RTO and RPO from the heartbeat evidence and the rows that survived, and when
pgbench, a client by name, committed again."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from rehearsal.catalog import load_catalog
from rehearsal.drills.pgbench import pgbench_evidence
from rehearsal.drills.primary_loss import evidence_window, wait_for_first_ack
from rehearsal.errors import PreconditionFailed
from rehearsal.heartbeat import measure_recovery, probe_write, read_acks, surviving_seqs
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator


class MeasureRecoveryOperator(ControlPlaneMixin, DrillStepOperator):
    """RTO ends at the first write acknowledged by the recovered primary: the heartbeat through service discovery,
    or, for a scratch copy no client reaches, a probe write into it. RPO: the lost primary's acknowledged writes
    missing there, over twice the target RPO (``rehearsal.heartbeat.measure_recovery``). Beside the heartbeat's
    figure: when pgbench, resolving the database's A record, committed again after the fault
    (``rehearsal.drills.pgbench``; a critical check when the environment runs it).

    :param guard: the drill guard's record (lineage of the lost primary); :param fault: the fault's record;
    :param recovery: the recovered primary's record
    """

    template_fields: Sequence[str] = ("guard", "fault", "recovery", "target")

    def __init__(self, *, guard: Any, fault: Any, recovery: Any, target: str = "production",
                 component: str = "control_plane_api", first_ack_timeout: float = 120, pgbench_timeout: float = 30,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.guard, self.fault, self.recovery, self.target = guard, fault, recovery, target
        self.component = component
        self.first_ack_timeout = first_ack_timeout
        self.pgbench_timeout = pgbench_timeout

    def run_step(self, context: Context) -> dict:
        if not self.recovery or not self.recovery.get("address"):
            raise PreconditionFailed("nothing to measure: the runbook recovered no database")
        env = current_environment()
        address = self.recovery["address"]
        platform = self.controlplane.platform()
        if self.target == "scratch":
            first = probe_write(platform.app_endpoint(address))
        else:
            since = self.fault.get("killed_at") or self.fault["fault_at"]
            first = wait_for_first_ack(env.heartbeat_path(), since, address, self.first_ack_timeout,
                                       not_lineage=self.guard.get("lineage"))
        target = load_catalog().target(self.component)
        window = evidence_window(target.rpo.total_seconds())
        acks = read_acks(env.heartbeat_path(), since=self.fault["fault_at"] - window)
        m = measure_recovery(acks, self.fault["fault_at"], address, surviving_seqs(platform.app_endpoint(address)), window,
                             first_ack=first, fault_effective_at=self.fault.get("killed_at"), lineage=self.guard.get("lineage"))
        out = {"rto_seconds": m.rto_seconds, "rpo_seconds": m.rpo_seconds, "rpo_is_lower_bound": m.rpo_is_lower_bound,
               "target_rto_seconds": target.rto.total_seconds(), "target_rpo_seconds": target.rpo.total_seconds(),
               "evidence": {**m.evidence(), "measurement_includes": what_was_measured(self.guard, self.fault, self.recovery)}}
        if self.target == "scratch":
            out["evidence"]["pgbench_after_fault"] = {"committed_at": None, "reason": "scratch target: the database "
                                                      "pgbench uses was not failed over"}
        else:
            pgbench, check = pgbench_evidence(env.pgbench_log, since, self.pgbench_timeout)
            out["evidence"]["pgbench_after_fault"] = pgbench
            out["checks"] = [check] if check else []
        rpo = "not measured" if m.rpo_seconds is None else f"{'at least ' if m.rpo_is_lower_bound else ''}{m.rpo_seconds:.2f}s"
        out["detail"] = (f"RTO {m.rto_seconds:.2f}s, RPO {rpo} ({m.missing_acked} of {m.acked_before_fault} acknowledged "
                         f"writes lost in the {window:.0f}s window)")
        pgbench_at = out["evidence"]["pgbench_after_fault"].get("seconds_after_fault")
        if pgbench_at is not None:
            out["detail"] += f"; pgbench committed again after {pgbench_at:.2f}s"
        return out


def what_was_measured(guard: dict, fault: dict, recovery: dict) -> str:
    """The report's plain statement of what the numbers include."""
    lineage = f"writes acknowledged by the lost primary's history ({guard.get('lineage')})"
    if fault.get("simulated"):
        return (f"simulated loss: a scratch copy restored from what the archive held at {fault.get('archived_before')} "
                f"(objects stored at least 1 s before it, by S3 LastModified); RPO = {lineage} missing from that copy; "
                "RTO ends at a probe write into the copy (production's discovery and clients untouched)")
    return (f"primary SIGKILLed with its data directory and its unshipped WAL spool "
            f"({len(fault.get('unshipped_wal_lost') or [])} segment(s)); recovered by {recovery.get('method')}; "
            f"RPO = {lineage} missing on the recovered primary; RTO ends at the first write acknowledged by it "
            "through service discovery")
