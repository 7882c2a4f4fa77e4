"""RunReportOperator: every runbook, drill and verification run ends with its report (JSON, Markdown, a row in
the results database), whatever happened before it; the run fails unless the report says passed (or skipped: a
drill called off before it touched anything is not a failed drill)."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Context

from rehearsal import results
from rehearsal.catalog import load_catalog
from rehearsal.errors import DrillCalledOff, DrillFailed
from rehearsal.report import DrillReport, Step, decide_status, judge, write_report
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.results_db import results_endpoint
from rehearsal_airflow.operators.base import STEP_KEY, DrillStepOperator

FAILED_STATES = ("failed", "upstream_failed")


class RunReportOperator(DrillStepOperator):
    """:param scenario: what the run was, in the plan's words
    :param measures_recovery: the run claims RTO and RPO (drills): both must be measured and met
    :param gate: the record of the step that lets the run start (a drill's guard, a runbook's assessment); without
        it the run is ``aborted``
    :param mode: the run's mode when there is no guard (a runbook's ``incident``/``drill``)
    :param runbook: ``{"dag_id", "group"}`` of the runbook whose tasks ran in this DAG
    Records of earlier steps (XComArgs, None when the step did not run): ``fault``, ``decision``, ``approval``,
    ``recovery``, ``measurement``, ``environment_repair``.
    """

    runs_after_abort = True
    runs_when_called_off = True
    template_fields: Sequence[str] = ("gate", "mode", "fault", "decision", "approval", "recovery", "measurement",
                                      "environment_repair")

    def __init__(self, *, scenario: str, component: str = "control_plane_api", measures_recovery: bool = False,
                 gate: Any = None, mode: str | None = None, runbook: dict | None = None, fault: Any = None,
                 decision: Any = None, approval: Any = None, recovery: Any = None, measurement: Any = None,
                 environment_repair: Any = None, **kwargs) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.scenario, self.component, self.measures_recovery = scenario, component, measures_recovery
        self.gate, self.mode, self.runbook = gate, mode, runbook or {}
        self.fault, self.decision, self.approval, self.recovery = fault, decision, approval, recovery
        self.measurement, self.environment_repair = measurement, environment_repair
        self.requires_gate = gate is not None

    def run_step(self, context: Context) -> dict:
        ti, dag, run_id = context["ti"], context["dag"], context["run_id"]
        env = current_environment()
        target = load_catalog().target(self.component)
        steps, checks, created, failures, switched_off = self._steps(ti, dag, run_id)
        degraded, not_applicable, rejection = self._degraded_and_not_applicable(ti, dag, run_id)
        # A measurement's critical check that failed (data-plane availability, say) fails the run like a step.
        failures += [f"check {c['name']}: {c.get('detail', '')}" for c in checks
                     if c.get("critical", True) and c.get("ok") is False and c["name"] not in ("rto_within_target", "rpo_within_target")]
        measure = self.measurement or {}
        repair = self.environment_repair or {}
        recovery = self.recovery or {}
        gate = self.gate or {}
        approval = self.approval or {}
        rto, rpo = measure.get("rto_seconds"), measure.get("rpo_seconds")
        rto_met, rpo_met = judge(rto, target.rto.total_seconds()), judge(rpo, target.rpo.total_seconds())
        if measure.get("rpo_is_lower_bound"):
            rpo_met = False  # nothing in the evidence window survived: the loss is at least the window
        not_at_risk = measure.get("rpo_not_at_risk")
        if not_at_risk and rpo is None:
            rpo_met = True  # the fault could lose no write: nothing to measure, and not reported as a measured 0
        if self.measures_recovery:
            bound = "at least " if measure.get("rpo_is_lower_bound") else ""
            checks.append({"name": "rto_within_target", "ok": bool(rto_met), "critical": True,
                           "detail": f"measured {rto} s, target {target.rto.total_seconds():.0f} s"})
            checks.append({"name": "rpo_within_target", "ok": bool(rpo_met), "critical": True,
                           "detail": f"RPO {not_at_risk}" if not_at_risk and rpo is None else
                                     f"measured {bound}{rpo} s, target {target.rpo.total_seconds():.0f} s"})
        if rejection and approval.get("approved") is not False:  # another of the run's approvals was rejected
            approval = rejection
        rejected = approval.get("approved") is False
        started = bool(gate) or not self.requires_gate
        # A drill called off before it started (drills switched off, a late scheduled start): its first step says why.
        called_off = next((s for s in steps if s.kind == DrillCalledOff.kind), None)
        status = decide_status(started=started, failures=failures, measures_recovery=self.measures_recovery,
                               rto_met=rto_met, rpo_met=rpo_met, rejected=rejected, called_off=called_off is not None,
                               degraded=bool(degraded), not_applicable=not_applicable is not None)
        failure = "; ".join(failures) or None
        if status == "not_applicable":
            failure = not_applicable
        if rejected:
            failure = approval.get("detail")
        if called_off is not None:
            failure = called_off.detail
        stopped = next((s for s in steps if s.kind == "aborted" and s.status == "failed"), None)
        if stopped is not None:  # a drill's stop condition tripped: it stopped and rolled back
            status, failure = "aborted", f"{stopped.name}: {stopped.detail}"
        evidence = dict(measure.get("evidence") or {})
        evidence.update({
            "restored_lsn": recovery.get("restored_lsn") or recovery.get("lsn"), "recovered_address": recovery.get("address"),
            "recovery_method": recovery.get("method"), "restore_timings": recovery.get("timings"),
            "restore_archive": recovery.get("archive"), "neutralized_on_restored_copy": recovery.get("neutralized"),
            "standbys_before_fault": gate.get("standbys_before_fault"), "drill_lock": gate.get("lock"),
            "fault": {k: v for k, v in (self.fault or {}).items() if k != "detail"}})
        if switched_off:  # an incident declared: drills switched off for its environment
            evidence["drills_switched_off"] = switched_off
        runbook = dict(self.runbook)
        if self.runbook:
            runbook.update({"decision": (self.decision or {}).get("detail"),
                            "approved_by": approval.get("approved_by") or approval.get("rejected_by"),
                            "approval": approval.get("detail"),
                            "steps": [s.name for s in steps if s.name.startswith(f"{self.runbook.get('group')}.")]})
        report = DrillReport(
            dag_id=dag.dag_id, run_id=run_id, scenario=self.scenario,
            mode=gate.get("mode") or self.mode or context["params"].get("mode", "scheduled"), environment=env.name,
            status=status, started_at=gate.get("started_at") or (steps[0].started_at if steps else None),
            finished_at=datetime.now(UTC).isoformat(), component=self.component,
            target_rto_seconds=target.rto.total_seconds(), measured_rto_seconds=rto, rto_met=rto_met,
            target_rpo_seconds=target.rpo.total_seconds(), measured_rpo_seconds=rpo, rpo_met=rpo_met,
            recovery_path=(self.decision or {}).get("path") or recovery.get("method"), steps=steps, checks=checks,
            evidence=evidence, resources_created=created + repair.get("resources_created", []),
            resources_cleaned=repair.get("resources_cleaned", []), failure=failure, runbook=runbook, degraded=degraded)
        json_path, _md = write_report(report, env.reports_dir)
        results.record_result(results_endpoint(), report, str(json_path))
        self.log.info("%s %s: report %s", self.scenario, status, json_path)
        if status == "degraded":
            raise DrillFailed(f"{self.scenario} degraded: service recovered, but left undone: "
                              + "; ".join(f"{d['item']} ({d['what_to_do']})" for d in degraded) + f" (report: {json_path})")
        if status not in ("passed", "skipped", "not_applicable"):
            raise DrillFailed(f"{self.scenario} {status}: {report.failure or 'RTO or RPO target missed'} (report: {json_path})")
        return {"status": status, "report": str(json_path), "detail": f"report {json_path}"}

    def _degraded_and_not_applicable(self, ti, dag, run_id: str) -> tuple[list[dict], str | None, dict | None]:
        """What the run's steps left undone (``degraded`` items in their records), why the scenario was not happening
        when a step found so (``not_applicable`` in its record), and the first approval a person rejected."""
        degraded, not_applicable, rejection = [], None, None
        states = ti.get_task_states(dag_id=dag.dag_id, run_ids=[run_id]).get(run_id, {})
        for task_id in [t.task_id for t in dag.topological_sort()] if not hasattr(dag, "topological_sort_ids") \
                else dag.topological_sort_ids():
            if task_id == self.task_id or states.get(task_id) not in ("success", "skipped"):
                continue
            value = ti.xcom_pull(task_ids=task_id) or {}
            if not isinstance(value, dict):
                continue
            if states.get(task_id) == "success":
                degraded += [{"step": task_id, **d} for d in value.get("degraded", [])]
            # A step that found its scenario not happening skips the rest; its record says why.
            not_applicable = not_applicable or value.get("not_applicable")
            if value.get("approved") is False and rejection is None:
                rejection = value
        return degraded, not_applicable, rejection

    def _steps(self, ti, dag, run_id: str) -> tuple[list[Step], list[dict], list[str], list[str], str | None]:
        """Every other task of the run, in order, with its record; the named checks and resources they returned; what
        the run's first step said about switching drills off (an incident)."""
        states = ti.get_task_states(dag_id=dag.dag_id, run_ids=[run_id]).get(run_id, {})
        steps, checks, created, failures, switched_off = [], [], [], [], None
        for task_id in dag.topological_sort_ids() if hasattr(dag, "topological_sort_ids") else [t.task_id for t in dag.topological_sort()]:
            if task_id == self.task_id:
                continue
            record = ti.xcom_pull(task_ids=task_id, key=STEP_KEY) or {}
            state = states.get(task_id)
            status = record.get("status") or str(state or "not_run")
            if state in ("skipped", "upstream_failed", "failed"):
                status = str(state)  # Airflow's word wins: a deferred step whose trigger timed out never recorded it
            if state == "success" and status == "awaiting_input":
                status = "success"
            switched_off = switched_off or record.get("drills_switched_off")
            step = Step(name=task_id, status=status, started_at=record.get("started_at"),
                        finished_at=record.get("finished_at"), detail=record.get("detail", ""), kind=record.get("kind"))
            steps.append(step)
            if status in FAILED_STATES:
                failures.append(f"{task_id}: {step.detail or status}")
            value = ti.xcom_pull(task_ids=task_id) or {}
            if isinstance(value, dict):
                checks += value.get("checks", [])
                created += value.get("resources", [])
        return steps, checks, created, failures, switched_off
