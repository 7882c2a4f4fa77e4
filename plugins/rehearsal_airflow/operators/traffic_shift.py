"""TrafficShiftOperator: customers' edge traffic moved away from a failed region, in steps or at once, never onto an
edge that does not answer us, and put back as it was when the target stops answering after a step. Thin over
``rehearsal.traffic``."""
from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseHook, Context

from rehearsal.errors import DrillAborted, RecoveryTimedOut
from rehearsal.traffic import (
    KINDS,
    ProbeVerdict,
    RoutingSet,
    ShiftRecord,
    ShiftRefused,
    ShiftRolledBack,
    StepRecord,
    apply_state,
    http_get,
    nothing_to_shift,
    parse_steps,
    probe_edge,
    read_routing,
    refused_message,
    rolled_back_message,
    sample_apps,
    shift_limitation,
    shift_plan,
    wait_insync,
    zone_id_by_name,
)
from rehearsal_airflow.operators.base import DrillStepOperator, now_iso

SHIFT_KEY = "shift"  # XCom key of the shift's record when the step fails (on success it is the return value)


class TrafficShiftOperator(DrillStepOperator):
    """Move the weighted record set's weight (``kind="weighted"``) from ``failed_region`` to ``target_region`` in
    ``steps`` (``"at_once"``, or percentages of the pair's weight on the target after each step, rising to 100, e.g.
    ``[50, 100]``), or flip the failover pair (``kind="failover"``: the target PRIMARY, at once).

    Each step: the target region's edge is probed by us (``/healthz`` and a sample of ``/apps/<id>``, ``probe_rounds``
    times, every probe must pass); when it fails, the shift is refused and nothing is changed. Then the records are
    UPSERTed (only the weight or role changes), the change is waited for until ``INSYNC`` (in the triggerer when
    ``deferrable``), the record's TTL is waited out, and the target is probed again; when it fails now, the records
    are put back as they were found before the shift (waited for until ``INSYNC`` too) and the step fails saying why
    and that it rolled back. A change not ``INSYNC`` within ``insync_timeout`` fails naming its change id. Run again,
    it goes on from the records as they are: when they already are the target, nothing is changed and it says so.
    The failed region's edge is never probed (it is down).

    Returns the shift's record (``rehearsal.traffic.ShiftRecord.to_dict``): weights (or roles) before and after, each
    step's change id, probes before and after, and timings (probe, INSYNC wait, TTL wait); a failed step pushes it
    under XCom ``shift``.

    :param edge_conn_id: an http connection whose extra names ``regions`` (region -> edge URL), ``zone_id`` or
        ``zone``, ``record`` (weighted) and ``failover_record``, and optionally ``probe_apps`` (app ids)
    :param probe_apps: app ids to probe through the target's edge; default the connection's ``probe_apps``, else up
        to ``probe_sample`` apps spread over the target edge's routing table (``GET /v1/routes``)
    """

    template_fields: Sequence[str] = ("failed_region", "target_region", "steps", "kind", "probe_apps")

    def __init__(self, *, failed_region: Any, target_region: Any, steps: Any = "at_once", kind: str = "weighted",
                 edge_conn_id: str = "edge", aws_conn_id: str = "aws_default", probe_apps: Any = None,
                 probe_sample: int = 5, probe_rounds: int = 3, probe_timeout: float = 2.0, probe_interval: float = 0.2,
                 insync_timeout: float = 300, poll_interval: float = 1.0, deferrable: bool | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.failed_region, self.target_region, self.steps, self.kind = failed_region, target_region, steps, kind
        self.edge_conn_id, self.aws_conn_id, self.probe_apps = edge_conn_id, aws_conn_id, probe_apps
        self.probe_sample, self.probe_rounds = probe_sample, probe_rounds
        self.probe_timeout, self.probe_interval = probe_timeout, probe_interval
        self.insync_timeout, self.poll_interval = insync_timeout, poll_interval
        from rehearsal_airflow.operators.postgres_recovery import _deferrable_default

        self.deferrable = _deferrable_default() if deferrable is None else deferrable

    # ------------------------------------------------------------------ connections
    def _edge(self) -> dict:
        extra = BaseHook.get_connection(self.edge_conn_id).extra_dejson
        if not isinstance(extra.get("regions"), dict) or not extra["regions"]:
            raise ShiftRefused(f"connection {self.edge_conn_id!r} names no edge URL per region (extra 'regions'): "
                               "no edge can be probed, so no traffic is shifted")
        name = extra.get("failover_record" if self.kind == "failover" else "record")
        if not name:
            raise ShiftRefused(f"connection {self.edge_conn_id!r} names no "
                               f"{'failover_record' if self.kind == 'failover' else 'record'} (the {self.kind} record "
                               "set to shift)")
        if not extra.get("zone_id") and not extra.get("zone"):
            raise ShiftRefused(f"connection {self.edge_conn_id!r} names no hosted zone (extra 'zone_id' or 'zone')")
        return extra

    _client: Any = None
    _zone_id: str | None = None

    def _route53(self):
        """One client per run of the step (built at run time, never at parse time)."""
        if self._client is None:
            from rehearsal_airflow.hooks.route53 import route53_client

            self._client = route53_client(self.aws_conn_id)
        return self._client

    def _routing(self, edge: dict) -> RoutingSet:
        route53 = self._route53()
        if self._zone_id is None:
            self._zone_id = edge.get("zone_id") or zone_id_by_name(route53, edge["zone"])
        zone_id = self._zone_id
        name = edge["failover_record" if self.kind == "failover" else "record"]
        return read_routing(route53, zone_id, name, self.kind)

    def _app_ids(self, edge: dict) -> list[str]:
        chosen = self.probe_apps if self.probe_apps not in (None, "", []) else edge.get("probe_apps")
        if isinstance(chosen, str):
            chosen = [a.strip("'\"") for a in chosen.strip("[] ").replace(",", " ").split() if a.strip("'\"")]
        if chosen:
            return [str(a) for a in chosen]
        url = edge["regions"][self.target_region].rstrip("/")
        try:
            status, routes, _headers = http_get(f"{url}/v1/routes", self.probe_timeout)
        except OSError as exc:
            raise ShiftRefused(f"refusing to shift traffic onto {self.target_region}: its edge at {url} did not answer "
                               f"GET /v1/routes ({exc}); nothing was changed") from None
        apps = sample_apps(routes, self.probe_sample) if status == 200 else []
        if not apps:
            raise ShiftRefused(f"refusing to shift traffic onto {self.target_region}: no app to probe through its edge at "
                               f"{url} (GET /v1/routes answered HTTP {status} with {len(routes.get('apps') or {})} apps; "
                               "name probe_apps to choose them); nothing was changed")
        return apps

    def _probe(self, edge: dict, record: ShiftRecord) -> ProbeVerdict:
        return probe_edge(record.target_region, edge["regions"][record.target_region], record.app_ids,
                          rounds=self.probe_rounds, timeout=self.probe_timeout, interval=self.probe_interval)

    # ------------------------------------------------------------------ the shift
    def run_step(self, context: Context) -> dict:
        if self.kind not in KINDS:
            raise ShiftRefused(f"unknown kind {self.kind!r} of traffic shift: use one of {', '.join(KINDS)}")
        failed, target = str(self.failed_region or ""), str(self.target_region or "")
        shares = parse_steps(self.steps, self.kind)
        edge = self._edge()
        routing = self._routing(edge)
        why = shift_limitation(routing, failed, target, edge["regions"])
        if why:
            raise ShiftRefused(why + "; nothing was changed")
        record = ShiftRecord(self.kind, failed, target, routing.zone_id, routing.name, before=routing.state(),
                             ttl_seconds=routing.ttl, started_at=now_iso())
        plan = shift_plan(routing, failed, target, shares)
        if not plan:
            record.after, record.finished_at, record.detail = record.before, now_iso(), nothing_to_shift(record)
            return record.to_dict()
        record.app_ids = self._app_ids(edge)
        record.steps = [StepRecord(number, step.share, step.state) for number, step in enumerate(plan, start=1)]
        return self._go_on(context, edge, record)

    def _go_on(self, context: Context, edge: dict, record: ShiftRecord) -> dict:
        """Take each step still to take; defers while a change syncs when ``deferrable``."""
        while (step := record.next_step) is not None:
            self._send(context, edge, record, step)
            if step.change_id and self.deferrable:
                self._defer_wait(context, record, step.change_id, record.ttl_seconds, "resume_after_insync",
                                 f"step {step.number} of the shift to {record.target_region}")
            if step.change_id:
                insync, ttl = self._wait_sync(context, edge, record, step.change_id, record.ttl_seconds,
                                              f"step {step.number} of the shift to {record.target_region}")
            else:
                insync, ttl = 0.0, 0.0
            self._after_wait(context, edge, record, step, insync, ttl)
        record.after = record.steps[-1].state
        record.changed, record.finished_at = True, now_iso()
        record.detail = record.describe_done()
        return record.to_dict()

    def _send(self, context: Context, edge: dict, record: ShiftRecord, step: StepRecord) -> None:
        """Probe the target, then UPSERT the step's records; refused (nothing sent) when the probes fail."""
        verdict = self._probe(edge, record)
        step.probe_before, step.timings["probe_before"] = verdict.to_dict(), verdict.seconds
        if not verdict.ok:
            why = refused_message(record.target_region, verdict, step.number, len(record.steps))
            if step.number == 1:
                self._fail(context, record, ShiftRefused(why + "; nothing was changed"))
            step.status = "failed"  # earlier steps were taken: they are undone
            self._roll_back(context, edge, record, record.steps[step.number - 2], why)
        routing = self._routing(edge)
        step.change_id = apply_state(self._route53(), routing, step.state,
                                     f"rehearsal {context.get('run_id', '')}: {record.kind} shift from "
                                     f"{record.failed_region} to {record.target_region}, step {step.number}")
        step.status = "sent"
        self.log.info("step %s: %s -> %s (change %s)", step.number, routing.state(), step.state, step.change_id)

    def _after_wait(self, context: Context, edge: dict, record: ShiftRecord, step: StepRecord, insync: float,
                    ttl: float) -> None:
        step.timings.update({"insync_wait": round(insync, 3), "ttl_wait": round(ttl, 3)})
        verdict = self._probe(edge, record)
        step.probe_after, step.timings["probe_after"] = verdict.to_dict(), verdict.seconds
        if not verdict.ok:
            step.status = "failed"
            self._roll_back(context, edge, record, step, f"after the TTL ({record.ttl_seconds}s) {verdict.describe()}")
        step.status = "done"

    # ------------------------------------------------------------------ waits
    def _defer_wait(self, context: Context, record: ShiftRecord, change_id: str, hold: float, method: str, what: str,
                    **extra: Any) -> None:
        from rehearsal_airflow.triggers.route53 import Route53ChangeInSyncTrigger

        conditions = self.stop_conditions_now(context)
        probe_log = None
        if conditions:
            from rehearsal_airflow.environment import current_environment

            probe_log = current_environment().probe_log
        self.defer(trigger=Route53ChangeInSyncTrigger(change_id, self.aws_conn_id, self.insync_timeout,
                                                      self.poll_interval, hold_seconds=hold, what=what,
                                                      stop_conditions=conditions, probe_log=probe_log),
                   method_name=method, kwargs={"shift": record.to_dict(), **extra},
                   timeout=timedelta(seconds=self.insync_timeout + hold + 60))

    def _wait_sync(self, context: Context, edge: dict, record: ShiftRecord, change_id: str, hold: float,
                   what: str) -> tuple[float, float]:
        """(INSYNC wait, TTL wait) in seconds, in this worker; a drill's stop conditions checked on every poll."""
        check = self.stop_check(context)
        try:
            insync = wait_insync(self._route53(), change_id, self.insync_timeout, self.poll_interval, what, check=check)
            held_from = time.monotonic()
            while (left := hold - (time.monotonic() - held_from)) > 0:
                time.sleep(min(left, self.poll_interval))
                check()
        except RecoveryTimedOut as exc:
            self._fail(context, record, RecoveryTimedOut(self._half_done(record, str(exc))))
        except DrillAborted as exc:
            self._fail(context, record, DrillAborted(f"{exc}; {self._abandon(edge, record)}"))
        return insync, time.monotonic() - held_from

    def resume_after_insync(self, context: Context, event: dict, shift: dict) -> dict:
        """The triggerer saw the step's change INSYNC and the TTL pass (or the wait end otherwise)."""
        def finish() -> dict:
            record = ShiftRecord.from_dict(shift)
            edge = self._edge()
            self._raise_unless_insync(context, edge, record, event)
            step = record.next_step
            self._after_wait(context, edge, record, step, event["insync_wait"], event["ttl_wait"])
            return self._go_on(context, edge, record)

        return self.execute_resumed(context, finish)

    def _raise_unless_insync(self, context: Context, edge: dict, record: ShiftRecord, event: dict) -> None:
        if event.get("status") == "insync":
            return
        message = event.get("message", str(event))
        if event.get("status") == "stopped":  # a stop condition tripped while the triggerer waited
            undone = self._abandon(edge, record)
            context["ti"].xcom_push(key=SHIFT_KEY, value=record.to_dict())
            self.log.warning("drill stopped during the shift: %s", undone)
            self._stop(context, f"{message} ({undone})")
        self._fail(context, record, RecoveryTimedOut(self._half_done(record, message)))

    @staticmethod
    def _half_done(record: ShiftRecord, message: str) -> str:
        sent = record.next_step
        return (f"{message}; the records sent ({sent.state if sent else record.before}) may be partly in effect, "
                f"before the shift they were {record.before}: read the record set {record.record} before going on")

    # ------------------------------------------------------------------ rollback
    def _roll_back(self, context: Context, edge: dict, record: ShiftRecord, step: StepRecord, why: str) -> None:
        """Put the records back as found before the shift, wait until INSYNC, and fail saying why and that it rolled
        back (deferred when ``deferrable``: the failure is raised on resume)."""
        change_id = apply_state(self._route53(), self._routing(edge), record.before,
                                f"rehearsal {context.get('run_id', '')}: roll back the shift to {record.target_region}")
        record.rolled_back = {"why": why, "change_id": change_id, "insync_wait": 0.0, "at": now_iso()}
        if change_id and self.deferrable:
            self._defer_wait(context, record, change_id, 0.0, "resume_after_rollback",
                             f"rollback of the shift to {record.target_region}", why=why, step_number=step.number)
        if change_id:
            try:
                record.rolled_back["insync_wait"] = round(wait_insync(
                    self._route53(), change_id, self.insync_timeout, self.poll_interval,
                    f"rollback of the shift to {record.target_region}"), 3)
            except RecoveryTimedOut as exc:
                self._fail(context, record, RecoveryTimedOut(_rollback_unfinished(record, step, why, str(exc))))
        self._fail(context, record, ShiftRolledBack(rolled_back_message(record, step, why, change_id)))

    def resume_after_rollback(self, context: Context, event: dict, shift: dict, why: str, step_number: int) -> None:
        def finish() -> None:
            record = ShiftRecord.from_dict(shift)
            step = next(s for s in record.steps if s.number == step_number)
            change_id = record.rolled_back["change_id"]
            if event.get("status") != "insync":
                self._fail(context, record, RecoveryTimedOut(_rollback_unfinished(record, step, why,
                                                                                  str(event.get("message", event)))))
            record.rolled_back["insync_wait"] = event.get("insync_wait", 0.0)
            self._fail(context, record, ShiftRolledBack(rolled_back_message(record, step, why, change_id)))

        return self.execute_resumed(context, finish)

    def _abandon(self, edge: dict, record: ShiftRecord) -> str:
        """A drill stopping mid-shift: the records put back as found (waited for), in words. Never raises."""
        try:
            change_id = apply_state(self._route53(), self._routing(edge), record.before,
                                    f"rehearsal: the drill stopped; roll back the shift to {record.target_region}")
            if change_id:
                wait_insync(self._route53(), change_id, self.insync_timeout, self.poll_interval)
            record.rolled_back = {"why": "the drill stopped", "change_id": change_id, "insync_wait": None, "at": now_iso()}
            return f"the traffic shift rolled back to {record.before}" + (f" (change {change_id})" if change_id else "")
        except Exception as exc:  # noqa: BLE001 - said; the drill stops either way
            return f"the traffic shift could NOT roll back to {record.before}: {type(exc).__name__}: {exc}"

    def _fail(self, context: Context, record: ShiftRecord, error: Exception) -> None:
        record.finished_at, record.detail = now_iso(), str(error)
        if isinstance(error, ShiftRefused | ShiftRolledBack):
            record.after = record.before
        context["ti"].xcom_push(key=SHIFT_KEY, value=record.to_dict())
        raise error


def _rollback_unfinished(record: ShiftRecord, step: StepRecord, why: str, wait: str) -> str:
    return (f"traffic shift onto {record.target_region} failed after step {step.number} ({step.state}, change "
            f"{step.change_id}): {why}; the rollback to the records found before ({record.before}) did not finish: {wait}; "
            f"the records may still send traffic to {record.target_region}")
