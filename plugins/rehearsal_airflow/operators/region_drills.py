"""What the region-outage drill measures, from evidence only: customers' traffic through DNS and the edges, the
synthetic load's acknowledged writes, pgbench's runs through the database's name; never from the runbook's own
claims."""
from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.catalog import load_catalog
from rehearsal.drills.control_plane import first_ack_after, read_load_log
from rehearsal.drills.pgbench import pgbench_evidence
from rehearsal.drills.region import measure_customers, outage_start, read_jsonl
from rehearsal.errors import EvidenceError
from rehearsal.postgres.connection import connect
from rehearsal.runbooks.corruption import measure_corruption_rpo, parse_time
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator
from rehearsal_airflow.operators.control_plane_drills import _history, _log, _present_request_ids


class MeasureRegionOutageOperator(ControlPlaneMixin, DrillStepOperator):
    """RTO (the fault to the first customer request answered through the surviving region), customer-visible
    availability before, during and after, the first acknowledged write after the fault, when pgbench (a client of
    the database by its A record) committed again, and RPO (the load's acknowledged writes before the fault missing
    from the recovered database)."""

    template_fields: Sequence[str] = ("fault", "declaration", "guard", "verified", "shift")
    runs_after_abort = True

    def __init__(self, *, fault: Any, declaration: Any, component: str = "full_region", guard: Any = None,
                 verified: Any = None, shift: Any = None, pgbench_timeout: float = 30, **kwargs) -> None:
        """:param verified: the runbook's verification of every endpoint (its time ends "during")
        :param shift: the traffic shift's record (its steps, the INSYNC and TTL waits, the record's TTL): carried
            into the evidence as it was measured (None on the single-region path)"""
        super().__init__(**kwargs)
        self.fault, self.declaration, self.component, self.guard = fault, declaration, component, guard
        self.verified, self.shift = verified, shift
        self.pgbench_timeout = pgbench_timeout

    def run_step(self, context: Context) -> dict:
        if self.fault is not None:
            return self._measure(context)
        if (self.declaration or {}).get("mode") == "drill":
            raise AirflowSkipException("a drill measures from its own fault (measure_region_outage), not from here")
        try:  # an incident: what customers saw is reported when it can be measured; the recovery stands either way
            return self._measure(context)
        except EvidenceError as exc:
            why = f"customer impact not measured: {exc}"
            return {"rto_seconds": None, "rpo_seconds": None, "degraded": [why], "detail": why}

    def _measure(self, context: Context) -> dict:
        env = current_environment()
        declaration = self.declaration or {}
        if self.fault:
            fault_at = parse_time(self.fault["fault_at"], "fault_at").timestamp()
        elif self.fault is None and declaration.get("declared_at"):
            # An incident: no injected fault; the outage began when customers' requests started failing.
            declared = parse_time(declaration["declared_at"], "declared_at").timestamp()
            lines = read_jsonl(_log(env.customers_log, "customers_log"), "customers", since=declared - 3600)
            fault_at = outage_start(lines, declared)
            if fault_at is None:
                raise EvidenceError("customers' requests were not failing when the outage was declared: no outage "
                                    "start to measure from")
        else:
            raise EvidenceError("the region was never taken down: nothing to measure")
        surviving = declaration.get("target_region") or None
        now = time.time()
        verified = self.verified if isinstance(self.verified, dict) else {}
        restored_at = parse_time(verified["verified_at"], "verified_at").timestamp() if verified.get("verified_at") else None
        customers = measure_customers(read_jsonl(_log(env.customers_log, "customers_log"), "customers",
                                                 since=fault_at - 120), fault_at, now, surviving, restored_at=restored_at)
        window = max(2 * load_catalog().target("control_plane_api").rpo.total_seconds(), 60)
        attempts = read_load_log(_log(env.load_log, "load_log"), since=fault_at - window)
        first_write = first_ack_after(attempts, fault_at)
        acks = [a for a in attempts if a.get("t_ack") and 200 <= int(a.get("status") or 0) < 300]
        with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
            present = _present_request_ids(conn, [a for a in acks if a["t_ack"] < fault_at])
        rpo = measure_corruption_rpo(acks, fault_at, present, window, history=_history(self.guard))
        pgbench, pgbench_check = pgbench_evidence(env.pgbench_log, fault_at, self.pgbench_timeout)
        checks = [
            {"name": "customers_answered_again", "ok": customers.recovered_at is not None, "critical": True,
             "detail": (f"customers answered through {surviving or 'an edge'} {customers.rto_seconds:.1f}s after the "
                        "fault" if customers.recovered_at else f"no customer request was answered through "
                        f"{surviving or 'any edge'} since the fault ({customers.requests['during']} tried)")},
            # A rebuild restores a minimal fleet and publishes what is not back: its partial availability is reported,
            # held to 99% only on the failover path.
            {"name": "customers_served_after_recovery", "ok": (customers.availability_after or 0) >= 0.99,
             "critical": declaration.get("path") != "single_region",
             "detail": f"{(customers.availability_after or 0):.2%} of {customers.requests['after']} customer requests "
                       f"answered once every endpoint was verified again (by region: {customers.served_by_after})"},
            {"name": "writes_acknowledged_again", "ok": first_write is not None, "critical": True,
             "detail": ("no write of the synthetic load acknowledged since the fault" if first_write is None else
                        f"first write acknowledged {first_write['t_ack'] - fault_at:.1f}s after the fault")},
        ]
        if pgbench_check:
            checks.append(pgbench_check)
        rto = customers.rto_seconds
        if first_write is not None and rto is not None:
            rto = round(max(rto, first_write["t_ack"] - fault_at), 3)  # back means customers served and writes taken
        return {"rto_seconds": rto if customers.recovered_at and first_write else None,
                "rpo_seconds": round(rpo.rpo_seconds, 3), "checks": checks,
                "evidence": {"customers": customers.to_dict(), "rpo": rpo.to_dict(),
                             "first_write_after_fault": first_write, "pgbench_after_fault": pgbench,
                             "shift": self.shift if isinstance(self.shift, dict) else None,
                             "surviving_region": surviving, "path": declaration.get("path"),
                             "failed_region": (self.fault or {}).get("region") or declaration.get("failed_region"),
                             "outage_start": "the fault" if self.fault else "customers' first failed request",
                             "measurement_includes": "from the region taken down to the later of: the first customer "
                                                     "request answered through the surviving region (names resolved "
                                                     "through DNS, as customers do) and the synthetic load's first "
                                                     "acknowledged write; RPO over acknowledged writes before the fault"},
                "detail": f"RTO {rto}s (customers answered again after {customers.rto_seconds}s, writes after "
                          f"{None if first_write is None else round(first_write['t_ack'] - fault_at, 1)}s); availability before {customers.availability_before}, during "
                          f"{customers.availability_during}, after {customers.availability_after}; RPO "
                          f"{rpo.rpo_seconds:.1f}s ({rpo.lost_count} write(s) lost); pgbench committed again after "
                          f"{pgbench.get('seconds_after_fault')}s"}
