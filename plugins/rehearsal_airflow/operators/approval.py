"""RecoveryApprovalOperator: in an incident, a person approves once before the first irreversible step.

With ``mode=incident`` and ``approve=wait`` the task asks (Airflow's human-in-the-loop: the UI's Required Actions
page, the REST API, or ``make run`` on the terminal) with the chosen path and its evidence, and waits without a
worker slot. Approve: the runbook goes on. Reject: every later step of the runbook is skipped (the report still
runs), nothing is changed, and the report says who rejected it. ``approve=auto`` and ``mode=drill`` never wait; the record says what approved.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Context

from rehearsal.runbooks.postgres_failover import Assessment, Decision, approval_request, needs_approval
from rehearsal_airflow.operators.base import now_iso, push_step

APPROVAL_KEY = "approval"


class RunbookApprovalOperator(ApprovalOperator):
    """A runbook's one question to a person: ``request()`` says what is asked. Incident mode with ``approve=wait``
    waits; drills and ``approve=auto`` never do; ``nothing_to_ask()`` may say no person is needed. A rejection skips
    the runbook's next steps and says what was found as it was (``as_found()``)."""

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "mode", "approve")

    def __init__(self, *, mode: str, approve: str, response_timeout: timedelta = timedelta(hours=1), **kwargs) -> None:
        super().__init__(response_timeout=response_timeout, ignore_downstream_trigger_rules=False, **kwargs)
        self.mode = mode
        self.approve = approve

    def request(self) -> tuple[str, str]:
        raise NotImplementedError

    def nothing_to_ask(self) -> str | None:
        """Why no person needs to answer although one could (nothing running would be degraded), or None."""
        return None

    def as_found(self) -> str:
        """After a rejection: what is as it was found, in words."""
        return "nothing was changed"

    def needed(self) -> str | None:
        """None when a person must answer; else what approved (drills, approve=auto, nothing to ask)."""
        if needs_approval(self.mode, self.approve):
            return self.nothing_to_ask()
        return "mode drill: drills never wait" if self.mode == "drill" else "approve=auto"

    def approvers(self) -> list[dict] | None:
        """The environment's on-call approvers as HITL ``assigned_users`` (read at run time, not at parse time);
        None when the environment names none."""
        from rehearsal_airflow.environment import current_environment

        names = current_environment().approvers
        return [{"id": name, "name": name} for name in names] if names else None

    def execute(self, context: Context):
        started = now_iso()
        who = self.needed()
        if who is not None:
            record = {"approved": True, "approved_by": who, "at": started, "detail": f"approved automatically ({who})"}
            push_step(context, self.task_id, started, "success", record["detail"])
            return record
        self.subject, self.body = self.request()
        self.assigned_users = self.approvers() or self.assigned_users
        push_step(context, self.task_id, started, "awaiting_input", f"waiting for a person: {self.subject}")
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        started = now_iso()
        result = HITLOperator.execute_complete(self, context, event)  # validates the answer; skips nothing
        chosen = result["chosen_options"][0]
        by = result.get("responded_by_user") or {}
        who = by.get("name") or by.get("id") or "unknown"
        approved = chosen == self.APPROVE
        detail = (f"approved by {who}" if approved else
                  f"rejected by {who}: the recovery was not started and {self.as_found()}")
        record = {"approved": approved, "approved_by" if approved else "rejected_by": who, "at": str(result["responded_at"]),
                  "detail": detail}
        push_step(context, self.task_id, started, "success", detail)
        context["ti"].xcom_push(key=APPROVAL_KEY, value=record)
        # A task resumed after waiting for input does not push its return value by itself (Airflow 3.3): later
        # steps take this record as ``approve.output``.
        context["ti"].xcom_push(key="return_value", value=record)
        if not approved:
            # Skip the runbook's next steps (the rest follow by their trigger rules), never what reports the run.
            group = self.task_id.rpartition(".")[0]
            steps = [t for t in context["task"].get_direct_relatives(upstream=False)
                     if not t.is_teardown and (not group or t.task_id.startswith(group + "."))]
            self.skip(ti=context["ti"], tasks=steps)
        return record


class RecoveryApprovalOperator(RunbookApprovalOperator):
    """The postgres-failover runbook's approval: the chosen path and its evidence, before the first irreversible
    step."""

    template_fields: Sequence[str] = (*RunbookApprovalOperator.template_fields, "target", "decision", "assessment",
                                      "base_backup", "recovery_target")

    def __init__(self, *, decision: Any, assessment: Any, target: str = "production", base_backup: Any = "",
                 recovery_target: Any = "latest", **kwargs) -> None:
        kwargs.setdefault("subject", "Postgres failover: approve the recovery")
        super().__init__(**kwargs)
        self.target = target
        self.decision = decision
        self.assessment = assessment
        self.base_backup = base_backup
        self.recovery_target = recovery_target

    def request(self) -> tuple[str, str]:
        """(subject, body) a person answers."""
        decision = Decision(**{k: v for k, v in self.decision.items() if k != "detail"})
        assessment = Assessment.from_dict({k: v for k, v in self.assessment.items() if k != "detail"})
        backup = self.base_backup if self.base_backup not in ("", "None", None) else assessment.newest_base_backup
        subject, body = approval_request(decision, assessment, self.target, backup)
        if self.recovery_target not in ("", "None", None, "latest"):
            body = body.replace("**Backup a restore would use:**", f"**Restore target:** {self.recovery_target}\n\n"
                                                                       "**Backup a restore would use:**")
        return subject, body


class ScenarioApprovalOperator(RunbookApprovalOperator):
    """A scenario's approval before it degrades anything that still works (Scenario A: a running API put read-only,
    a running reconciler paused; Scenario B: the freeze and the restore to before the damage). The question comes
    from the scenario's own records (``rehearsal.runbooks.control_plane.scenario_approval``). A rejection leaves the
    platform as found, and the record says so, read from the services after the answer."""

    template_fields: Sequence[str] = (*RunbookApprovalOperator.template_fields, "records")
    services_conn_id = "controlplane_services"
    aws_conn_id = "aws_default"

    def __init__(self, *, scenario: str, records: Any, **kwargs) -> None:
        kwargs.setdefault("subject", f"{scenario}: approve")
        super().__init__(**kwargs)
        self.scenario, self.records = scenario, records

    def request(self) -> tuple[str, str]:
        from rehearsal.runbooks.control_plane import scenario_approval

        return scenario_approval(self.scenario, self.records if isinstance(self.records, dict) else {})[:2]

    def nothing_to_ask(self) -> str | None:
        from rehearsal.runbooks.control_plane import scenario_approval

        return scenario_approval(self.scenario, self.records if isinstance(self.records, dict) else {})[2]

    def as_found(self) -> str:
        from rehearsal_airflow.hooks.controlplane_services import ControlPlaneServicesHook

        hook = ControlPlaneServicesHook(self.services_conn_id, self.aws_conn_id)
        try:
            mode = hook.api().mode()
        except Exception as exc:  # noqa: BLE001 - said as it is
            mode = f"unknown ({exc})"
        try:
            metrics = hook.reconciler().metrics()
            reconciler = "paused" if metrics.get("paused") or not metrics.get("rate") else f"at {metrics.get('rate'):g}/s"
        except Exception as exc:  # noqa: BLE001
            reconciler = f"unknown ({exc})"
        return f"nothing was changed: as found, the API is {mode} and the reconciler {reconciler}"
