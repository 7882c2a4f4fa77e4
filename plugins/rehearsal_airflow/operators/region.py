"""Scenario C's own steps, thin over ``rehearsal.runbooks.region_outage``: declare the region outage (confirming it
from what the runbook probes itself), branch on the path, the approval, every endpoint through the surviving edge,
and what a single-region rebuild brought back.

Regions are found from three connections' settings: the ``edge`` connection's ``regions`` (each region's edge URL
and the weighted record), the ``controlplane_services`` connection's ``regions`` (each region's services) and the
environment's ``regions`` (each region's networks: which region a database host is in, by its address)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.sdk import BaseHook, Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.catalog import load_catalog
from rehearsal.errors import PreconditionFailed, VerificationFailed
from rehearsal.runbooks.region_outage import (
    Check,
    RebuildItem,
    RegionDecision,
    RegionProbe,
    approval_request,
    choose_region_path,
    confirm_region_outage,
    rebuild_summary,
    region_of,
    severity,
)
from rehearsal.services import SERVICES, ServiceUnreachable, call, health
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.approval import RunbookApprovalOperator
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator, now_iso, push_step
from rehearsal_airflow.operators.control_plane import ServicesMixin

EDGE_CONN_ID = "edge"


def edge_settings(conn_id: str = EDGE_CONN_ID) -> dict:
    """The ``edge`` connection's extra: ``regions`` (region -> edge URL), ``zone``/``zone_id``, ``record``."""
    extra = BaseHook.get_connection(conn_id).extra_dejson
    if not isinstance(extra.get("regions"), dict) or not extra["regions"]:
        raise PreconditionFailed(f"connection {conn_id!r} names no regions (its extra's regions: region -> edge URL): "
                                 "no region's edge can be probed")
    return extra


def probe_edge(region: str, url: str) -> Check:
    """The region's edge as customers reach it, probed by us (``rehearsal.traffic.probe_edge``: ``/healthz``
    answered 200 by that region), once: whether the region serves, not yet whether it may take traffic."""
    from rehearsal.traffic import probe_edge as probe

    verdict = probe(region, url, [], rounds=1)
    return Check(verdict.ok, f"{url} answers" if verdict.ok else "; ".join(verdict.failed))


class RegionMixin(ControlPlaneMixin, ServicesMixin):
    edge_conn_id = EDGE_CONN_ID

    @cached_property
    def edge(self) -> dict:
        return edge_settings(self.edge_conn_id)

    def traffic_weights(self) -> dict[str, int]:
        """Each region's weight in the weighted record, read from Route 53 (``rehearsal.traffic.read_routing``)."""
        from rehearsal.traffic import read_routing
        from rehearsal_airflow.hooks.route53 import Route53DiscoveryHook

        zone_id, record = self.edge.get("zone_id") or self.services.configured.discovery_zone_id, self.edge.get("record")
        if not (zone_id and record):
            return {}
        routing = read_routing(Route53DiscoveryHook(self.aws_conn_id).get_conn(), zone_id, record, "weighted")
        return {region: int(r.weight or 0) for region, r in routing.records.items()}

    def probe_regions(self) -> dict[str, RegionProbe]:
        """Every region, probed by this task: its edge, its services, its database hosts."""
        env = current_environment()
        networks = env.region_networks()
        service_regions = self.services.configured.regions or {}
        names = sorted(set(self.edge["regions"]) | set(service_regions) | set(networks))
        try:
            weights = self.traffic_weights()
        except Exception:  # noqa: BLE001 - the weights only set the severity; unknown is said
            weights = {}
        probes = {r: RegionProbe(region=r, edge=probe_edge(r, self.edge["regions"][r]) if r in self.edge["regions"]
                                 else Check(None, "no edge named for this region"), traffic_weight=weights.get(r))
                  for r in names}
        for region, urls in service_regions.items():
            for service in SERVICES:
                if urls.get(service):
                    h = health(service, str(urls[service]).rstrip("/"))
                    probes[region].services[service] = Check(bool(h.body), h.detail)
        self._probe_databases(probes, networks)
        return probes

    def _probe_databases(self, probes: dict[str, RegionProbe], networks: dict[str, list[str]]) -> None:
        """The primary (a committed write) and each region's best standby (its lag when the primary went quiet)."""
        from rehearsal.platform import split_address
        from rehearsal.postgres.connection import write_health

        platform = self.controlplane.platform()
        try:
            primary = platform.primary_address()
        except Exception as exc:  # noqa: BLE001 - said, and the primary's region stays unknown
            for probe in probes.values():
                probe.primary = Check(None, f"the primary's address cannot be read: {type(exc).__name__}: {exc}")
            return
        region = region_of(primary, networks)
        if region in probes:
            ok, why = write_health(self.controlplane.endpoint(*split_address(primary)), timeout=3, prober="scenario-c")
            probes[region].primary = Check(ok, f"{primary}: {why}")
        try:
            members = platform.member_addresses()[1:]
        except Exception:  # noqa: BLE001 - no standby known is what the path decision then says
            members = []
        for address in members:
            probe = probes.get(region_of(address, networks) or "")
            if probe is None:
                continue
            state = platform.member_state(address)
            if state.role != "standby":
                if probe.standby.ok is None:
                    probe.standby = Check(False, f"{address}: {state.detail}")
                continue
            standby = state.standby_state()
            lag = None
            if standby and standby.replay_age is not None:
                # How far behind its replay was when it last heard from the primary (a dead primary makes the replay
                # age grow by itself: that is time since the outage, not lag).
                lag = max(0.0, standby.replay_age - (standby.last_message_age or 0.0))
            better = probe.standby.ok is not True or (lag is not None and (probe.standby_lag_seconds or 1e18) > lag)
            if better:
                probe.standby, probe.standby_address, probe.standby_lag_seconds = Check(True, state.detail), address, lag


class DeclareRegionOutageOperator(RegionMixin, DrillStepOperator):
    """Declare the region outage from what this task probes (never a health check's canned status): the failed
    region is out only when its edge fails and nothing of its control plane answers; otherwise the run ends
    ``not_applicable`` here with nothing changed. Then the path: multi-region when another region serves and holds a
    standby control plane, else a single-region rebuild (a requested path is checked against what was found)."""

    template_fields: Sequence[str] = ("mode", "failed_region", "path")

    def __init__(self, *, mode: str, failed_region: str, path: str = "auto", scenario: str,
                 rpo_component: str = "control_plane_api", **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode, self.failed_region, self.path, self.scenario = mode, failed_region, path, scenario
        self.rpo_component = rpo_component

    def run_step(self, context: Context) -> dict:
        declared_at = now_iso()
        if self.mode == "drill":
            current_environment().require_drill_environment(f"rehearse {self.scenario} in drill mode")
        context["ti"].xcom_push(key="failed_region", value=self.failed_region)
        probes = self.probe_regions()
        confirmation = confirm_region_outage(self.failed_region, probes)
        record: dict = {"declared_at": declared_at, "mode": self.mode, "scenario": self.scenario,
                        "failed_region": self.failed_region, "probes": {r: p.to_dict() for r, p in probes.items()},
                        "confirmation": confirmation.to_dict(), "evidence": confirmation.evidence}
        if not confirmation.happening:
            why = (f"{self.scenario} is not happening: {confirmation.why}. Nothing was changed (no traffic shifted, "
                   "nothing promoted or started). To rehearse it, run dr_drill_region_outage")
            record.update({"severity": "none", "not_applicable": why, "detail": f"NOT APPLICABLE: {why}"})
            context["ti"].xcom_push(key="return_value", value=record)
            raise AirflowSkipException(record["detail"])
        rpo = load_catalog().target(self.rpo_component).rpo.total_seconds()
        decision = choose_region_path(self.path, self.failed_region, probes, rpo)
        level, why = severity(probes[self.failed_region])
        kind = "DRILL" if self.mode == "drill" else "REAL INCIDENT"
        context["ti"].xcom_push(key="target_region", value=decision.target_region or "")
        record.update({"severity": level, "why": why, "decision": decision.to_dict(), "path": decision.path,
                       "target_region": decision.target_region,
                       "detail": f"{kind} declared {level} at {declared_at}: {self.failed_region} is out "
                                 f"({'; '.join(confirmation.evidence)}); path {decision.path}: {decision.why}"
                                 + (f"; RISK: {decision.risk}" if decision.risk else "")})
        return record


class BranchOnRegionPathOperator(DrillStepOperator, BranchMixIn):
    """Run the chosen path's task group; the other is skipped."""

    inherits_from_skipmixin = True
    template_fields: Sequence[str] = ("declaration",)

    def __init__(self, *, declaration: Any, multi_region_task_id: str, single_region_task_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.declaration = declaration
        self.multi_region_task_id, self.single_region_task_id = multi_region_task_id, single_region_task_id

    def execute(self, context: Context) -> Any:
        started = now_iso()
        self._refuse_if_aborted(context)
        path = (self.declaration or {}).get("path")
        if path not in ("multi_region", "single_region"):
            raise PreconditionFailed(f"the declaration chose no path ({path!r}): nothing to run")
        branch = self.multi_region_task_id if path == "multi_region" else self.single_region_task_id
        detail = f"path {path}: running {branch.rsplit('.', 1)[0]}"
        push_step(context, self.task_id, started, "success", detail)
        context["ti"].xcom_push(key="return_value", value={"path": path, "detail": detail})
        return self.do_branch(context, branch)


class RegionApprovalOperator(RunbookApprovalOperator):
    """A person approves the region failover (or the rebuild) before anything changes: the question names the region
    that is out, the region taking over, its standby and, when it lags beyond the RPO, the writes at risk."""

    template_fields: Sequence[str] = (*RunbookApprovalOperator.template_fields, "declaration")

    def __init__(self, *, declaration: Any, **kwargs) -> None:
        kwargs.setdefault("subject", "Scenario C: approve")
        super().__init__(**kwargs)
        self.declaration = declaration

    def request(self) -> tuple[str, str]:
        d = self.declaration or {}
        decision = RegionDecision(**d["decision"])
        return approval_request(decision, RegionProbe.from_dict(d["probes"][decision.failed_region]))


class VerifyEndpointsThroughEdgeOperator(RegionMixin, DrillStepOperator):
    """Every app endpoint, probed through the surviving region's edge (what customers reach), until all answer or
    ``timeout``: availability reported; under ``min_availability`` at the end fails naming the apps that did not
    answer. The app list comes from the control-plane API (every app the platform should serve)."""

    template_fields: Sequence[str] = ("region",)

    def __init__(self, *, region: Any, timeout: float = 120, min_availability: float = 1.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.region, self.timeout, self.min_availability = region, timeout, min_availability

    def run_step(self, context: Context) -> dict:
        region = self.region.get("target_region") if isinstance(self.region, dict) else self.region
        url = (self.edge["regions"].get(region) or "").rstrip("/") if region else ""
        if not url:
            raise PreconditionFailed(f"connection {self.edge_conn_id!r} names no edge for region {region!r}")
        apps = [a["id"] for a in self.services.api().apps() if a.get("status", "running") != "deleted"]
        if not apps:
            raise PreconditionFailed(f"the control-plane API lists no app: nothing to verify through {url}")
        started, rounds = time.monotonic(), 0
        failed: dict[int, str] = {}
        pending = list(apps)
        while True:
            rounds += 1
            failed = {}
            for app in pending:
                try:
                    answer = call("GET", f"{url}/apps/{app}", timeout=2.0, service=f"edge {region}")
                    if not answer.ok:
                        failed[app] = f"{answer.status} {answer.body.get('error') or ''}".strip()
                except ServiceUnreachable as exc:
                    failed[app] = str(exc)
            pending = list(failed)
            if not failed or time.monotonic() - started > self.timeout:
                break
            time.sleep(1.0)
        availability = (len(apps) - len(failed)) / len(apps)
        record = {"region": region, "edge": url, "apps": len(apps), "answered": len(apps) - len(failed),
                  "availability": availability, "rounds": rounds, "verified_at": now_iso(),
                  "failed": [f"app {a}: {why}" for a, why in list(failed.items())[:20]]}
        text = f"{len(apps) - len(failed)}/{len(apps)} app endpoints answer through {region}'s edge ({availability:.2%})"
        if availability < self.min_availability:
            raise VerificationFailed(f"{text} after {self.timeout:.0f}s, under {self.min_availability:.0%}; not answering: "
                                     + "; ".join(record["failed"]))
        record["detail"] = text + (f" after {rounds} rounds" if rounds > 1 else "")
        return record


class SummarizeRebuildOperator(DrillStepOperator):
    """What a single-region rebuild brought back and what it did not, from its steps' records, in priority order:
    the list customers are told. Anything not back makes the run ``degraded`` (the report says what to do)."""

    template_fields: Sequence[str] = ("records", "declaration")

    def __init__(self, *, records: dict, declaration: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.records, self.declaration = records, declaration

    def run_step(self, context: Context) -> dict:
        if (self.declaration or {}).get("path") != "single_region":
            raise AirflowSkipException("not a single-region rebuild: nothing to summarize")
        items: list[RebuildItem] = []
        for name, (kind, priority) in _REBUILD_ITEMS.items():
            record = (self.records or {}).get(name)
            if isinstance(record, dict) and not record.get("not_applicable"):
                back = record.get("back", True) is not False
                at = record.get("confirmed_at") or record.get("verified_at") or record.get("finished_at") or now_iso()
                if isinstance(at, int | float):  # a unix time
                    from datetime import UTC, datetime

                    at = datetime.fromtimestamp(at, UTC).isoformat()
                items.append(RebuildItem(name, kind, back, record.get("detail", ""), at if back else None, priority))
            else:
                items.append(RebuildItem(name, kind, False, "its step did not finish (see the run)", None, priority))
        summary = rebuild_summary(items)
        summary["degraded"] = [f"{i['kind']} {i['name']} not back: {i['detail']}" for i in summary["not_back"]]
        return summary


_REBUILD_ITEMS = {
    "control_plane_database": ("control_plane", 1),
    "api": ("control_plane", 2),
    "scheduler": ("control_plane", 3),
    "reconciler": ("control_plane", 4),
    "fleet": ("fleet", 5),
    "critical_volumes": ("volume", 6),
    "edge_configuration": ("edge", 7),
}


class BringUpFleetOperator(DrillStepOperator):
    """A minimal host fleet serving in ``region`` (and its edge), through the provisioner's ``FleetHosts``; confirmed
    by probing that region's edge ourselves."""

    template_fields: Sequence[str] = ("region",)

    def __init__(self, *, region: str, minimum: int = 4, timeout: float = 60, edge_conn_id: str = EDGE_CONN_ID,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.region, self.minimum, self.timeout, self.edge_conn_id = region, minimum, timeout, edge_conn_id

    def run_step(self, context: Context) -> dict:
        from rehearsal.capabilities import FleetHosts, capability_limitation
        from rehearsal.platform import load_provisioner

        env = current_environment()
        provisioner = load_provisioner(env.provisioner, environment=env)
        why = capability_limitation(provisioner, FleetHosts)
        if why:
            raise PreconditionFailed(f"no host fleet can be brought up in {self.region} on {env.name!r}: {why}")
        fleet = provisioner.bring_up_fleet(self.region, self.minimum)
        url = (edge_settings(self.edge_conn_id)["regions"].get(self.region) or "")
        deadline = time.monotonic() + self.timeout
        check = probe_edge(self.region, url) if url else Check(False, f"no edge named for {self.region}")
        while url and not check.ok and time.monotonic() < deadline:
            time.sleep(1.0)
            check = probe_edge(self.region, url)
        if not check.ok:
            raise VerificationFailed(f"{len(fleet.get('hosts', []))} host(s) brought up in {self.region} but its edge does "
                                     f"not serve: {check.detail}")
        return {"region": self.region, "hosts": fleet.get("hosts", []), "edge": check.detail, "confirmed_at": now_iso(),
                "detail": f"{len(fleet.get('hosts', []))} host(s) serving in {self.region}; edge: {check.detail}"}


class ChooseCriticalVolumesOperator(ControlPlaneMixin, DrillStepOperator):
    """The volumes marked critical, in priority order (the order they are restored in), from the control-plane
    database's inventory; pushed as XCom ``volume_ids`` for the volume-restore runbook's tasks."""

    def __init__(self, *, limit: int = 10, **kwargs) -> None:
        super().__init__(**kwargs)
        self.limit = limit

    def run_step(self, context: Context) -> dict:
        from rehearsal_airflow.operators.snapshot_store import volume_inventory

        inventory = volume_inventory(self.controlplane)
        critical = [v for v in inventory if v.get("critical")]
        ordered = sorted(critical, key=lambda v: (v.get("size_gb") or 0, v["volume_id"]))[: self.limit]
        if not ordered:
            raise PreconditionFailed("no volume is marked critical in the control-plane database's inventory: "
                                     "nothing to restore first (mark them, volumes.critical)")
        ids = [v["volume_id"] for v in ordered]
        context["ti"].xcom_push(key="volume_ids", value=",".join(ids))
        return {"volume_ids": ",".join(ids), "volumes": ordered,
                "detail": f"{len(ids)} critical volume(s), smallest first (back soonest): {', '.join(ids)}"}
