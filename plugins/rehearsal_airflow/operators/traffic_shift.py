"""TrafficShiftOperator: customers' traffic moved away from a failed region, step by step, never onto an edge that
does not answer us, and back as it was when the target stops answering after a step. Thin over ``rehearsal.traffic``.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseHook, Context

from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, VerificationFailed
from rehearsal.traffic import already_shifted, parse_steps, probe_edge, read_routing, weighted_plan
from rehearsal_airflow.operators.base import DrillStepOperator, now_iso


class TrafficShiftOperator(DrillStepOperator):
    """Move the weighted record set's weight (``kind="weighted"``) from ``failed_region`` to ``target_region`` in
    ``steps`` (``at_once`` or rising percentages, e.g. ``50,100``), or flip the failover pair (``kind="failover"``).

    For each step: the target's edge is probed by us first (``/healthz`` and the edge connection's ``probe_apps``);
    a failing target is refused and nothing is changed. The change is sent, waited for until ``INSYNC``
    (deferrably: in the triggerer), then the record's TTL is waited out (resolvers still hold the old answer until
    then), then the target is probed again; if it fails now, the weights found before are put back (waited for too)
    and the step fails saying it rolled back. Idempotent: already shifted, nothing is changed."""

    template_fields: Sequence[str] = ("failed_region", "target_region", "steps", "kind")

    def __init__(self, *, failed_region: Any, target_region: Any, steps: Any = "at_once", kind: str = "weighted",
                 edge_conn_id: str = "edge", aws_conn_id: str = "aws_default", insync_timeout: float = 300,
                 poll_interval: float = 1.0, deferrable: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.failed_region, self.target_region, self.steps, self.kind = failed_region, target_region, steps, kind
        self.edge_conn_id, self.aws_conn_id = edge_conn_id, aws_conn_id
        self.insync_timeout, self.poll_interval = insync_timeout, poll_interval
        from rehearsal_airflow.operators.postgres_recovery import _deferrable_default

        self.deferrable = _deferrable_default() if deferrable is None else deferrable

    # ------------------------------------------------------------------ connections
    def _edge(self) -> dict:
        extra = BaseHook.get_connection(self.edge_conn_id).extra_dejson
        if not isinstance(extra.get("regions"), dict) or not extra.get("zone_id"):
            raise PreconditionFailed(f"connection {self.edge_conn_id!r} names no regions (region -> edge URL) or zone_id: "
                                     "no traffic can be shifted")
        return extra

    def _route53(self):
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="route53").get_conn()

    def _record_name(self, edge: dict) -> str:
        return edge["failover_record"] if self.kind == "failover" else edge["record"]

    def _read(self, edge: dict):
        sets = self._route53().list_resource_record_sets(HostedZoneId=edge["zone_id"])["ResourceRecordSets"]
        return read_routing(sets, self._record_name(edge), self.kind)

    def _probe(self, edge: dict, region: str):
        url = edge["regions"].get(region)
        if not url:
            raise PreconditionFailed(f"connection {self.edge_conn_id!r} names no edge URL for region {region!r}")
        return probe_edge(url, [f"/apps/{a}" for a in edge.get("probe_apps", [])])

    # ------------------------------------------------------------------ the shift
    def run_step(self, context: Context) -> dict:
        if self.kind not in ("weighted", "failover"):
            raise PreconditionFailed(f"unknown kind {self.kind!r}: weighted or failover")
        if not self.target_region or self.target_region == self.failed_region:
            raise PreconditionFailed(f"no region to shift to (failed {self.failed_region!r}, target {self.target_region!r})")
        edge = self._edge()
        current = self._read(edge)
        for region in (self.failed_region, self.target_region):
            if region not in current:
                raise PreconditionFailed(f"region {region!r} has no record in {self._record_name(edge)} (regions: "
                                         f"{', '.join(sorted(current))})")
        before = {r: (rec.weight if self.kind == "weighted" else rec.failover) for r, rec in current.items()}
        if already_shifted(current, self.failed_region, self.target_region, self.kind):
            return {"changed": False, "before": before, "after": before, "steps": [], "ttl_seconds": 0,
                    "detail": f"nothing to shift: {self.target_region} already takes the traffic ({before})"}
        probe = self._probe(edge, self.target_region)
        if not probe.ok:
            raise PreconditionFailed(f"refusing to shift traffic onto {self.target_region}: its edge fails our probes "
                                     f"({probe.describe()}); nothing was changed")
        plan = (weighted_plan(current, self.failed_region, self.target_region, parse_steps(self.steps))
                if self.kind == "weighted" else [{self.target_region: "PRIMARY", self.failed_region: "SECONDARY"}])
        state = {"before": before, "plan": plan, "index": 0, "steps": [], "ttl": max(r.ttl for r in current.values()),
                 "started_at": now_iso(), "probe_before": probe.to_dict()}
        return self._next(context, edge, state)

    def _next(self, context: Context, edge: dict, state: dict) -> dict:
        while state["index"] < len(state["plan"]):
            target = state["plan"][state["index"]]
            change_id = self._apply(edge, target)
            state["steps"].append({"weights": target, "change_id": change_id, "sent_at": now_iso()})
            if self.deferrable:
                from rehearsal_airflow.triggers.route53 import Route53InSyncTrigger

                self.defer(trigger=Route53InSyncTrigger(change_id, self.aws_conn_id, self.insync_timeout, self.poll_interval),
                           method_name="resume_insync", kwargs={"state": state},
                           timeout=timedelta(seconds=self.insync_timeout + 60))
            waited = self._wait_insync(change_id)
            self._after_insync(edge, state, waited)
        return self._done(state)

    def resume_insync(self, context: Context, event: dict, state: dict) -> dict:
        def finish() -> dict:
            if event.get("status") != "insync":
                raise RecoveryTimedOut(event.get("message", str(event)) + "; the weights sent may be partly in effect: "
                                       f"read the record set (before the shift: {state['before']})")
            edge = self._edge()
            self._after_insync(edge, state, event["waited"])
            return self._next(context, edge, state)

        return self.execute_resumed(context, finish)

    def _after_insync(self, edge: dict, state: dict, waited: float) -> None:
        step = state["steps"][-1]
        step["insync_seconds"] = round(waited, 3)
        started = time.monotonic()
        time.sleep(state["ttl"])  # resolvers may answer from their cache until the TTL runs out
        step["ttl_wait_seconds"] = round(time.monotonic() - started, 3)
        probe = self._probe(edge, self.target_region)
        step["probe_after"] = probe.to_dict()
        if not probe.ok:
            back = self._apply(edge, state["before"])
            self._wait_insync(back)
            raise VerificationFailed(f"{self.target_region}'s edge failed our probes after step {state['index'] + 1} "
                                     f"({probe.describe()}): rolled back to the weights found before "
                                     f"{state['before']} (change {back})")
        state["index"] += 1

    def _apply(self, edge: dict, weights: dict) -> str:
        """UPSERT each region's record with its weight (or failover role); the change id."""
        current = self._read(edge)
        name = self._record_name(edge)
        changes = []
        for region, value in weights.items():
            rec = current[region]
            rrset = {"Name": name if name.endswith(".") else name + ".", "Type": "A", "TTL": rec.ttl,
                     "ResourceRecords": [{"Value": rec.value}],
                     "SetIdentifier": region if self.kind == "weighted" else f"{region}-failover"}
            if self.kind == "weighted":
                rrset["Weight"] = int(value)
            else:
                rrset["Failover"] = value
            changes.append({"Action": "UPSERT", "ResourceRecordSet": rrset})
        answer = self._route53().change_resource_record_sets(
            HostedZoneId=edge["zone_id"],
            ChangeBatch={"Comment": f"rehearsal: shift from {self.failed_region} to {self.target_region}", "Changes": changes})
        return answer["ChangeInfo"]["Id"]

    def _wait_insync(self, change_id: str) -> float:
        route53, started = self._route53(), time.monotonic()
        status = "unknown"
        while time.monotonic() - started <= self.insync_timeout:
            status = route53.get_change(Id=change_id)["ChangeInfo"]["Status"]
            if status == "INSYNC":
                return time.monotonic() - started
            time.sleep(self.poll_interval)
        raise RecoveryTimedOut(f"Route 53 change {change_id} not INSYNC after {self.insync_timeout:.0f}s (last status "
                               f"{status})")

    def _done(self, state: dict) -> dict:
        after = state["plan"][-1]
        return {"changed": True, "before": state["before"], "after": after, "steps": state["steps"],
                "ttl_seconds": state["ttl"], "probe_before": state["probe_before"], "shifted_at": now_iso(),
                "detail": f"traffic shifted from {self.failed_region} to {self.target_region} in {len(state['steps'])} "
                          f"step(s): {state['before']} -> {after}; each INSYNC, TTL {state['ttl']}s waited, "
                          f"{self.target_region}'s edge answering our probes before and after"}
