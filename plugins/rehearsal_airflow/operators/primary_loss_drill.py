"""The steps of the Postgres primary-loss drill that are not a single tool: guard, fault, detection,
path choice, enrolment of the new primary, confirmation, measurement, teardown and the report."""
from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.providers.standard.operators.branch import BranchMixIn
from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal import results
from rehearsal.catalog import load_catalog
from rehearsal.drills.primary_loss import check_params, choose_path, evidence_window, heartbeat_limitation, wait_for_loss
from rehearsal.environment import Environment
from rehearsal.errors import PreconditionFailed
from rehearsal.heartbeat import LINEAGE_SQL, Ack, measure_recovery, read_acks
from rehearsal.postgres.connection import accepts_writes, connect, query_one
from rehearsal.postgres.failover import probe_standby, promotion_limitation, standby_limitation
from rehearsal.postgres.restore import PRODUCTION_RESETS
from rehearsal.report import DrillReport, Step, judge, write_report
from rehearsal.sandbox.wal_shipper import archive_command
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.controlplane_db import results_endpoint
from rehearsal_airflow.operators.base import STEP_KEY, ControlPlaneMixin, DrillStepOperator, key_of, now_iso, pull_first
from rehearsal_airflow.operators.postgres_failover import split_address
from rehearsal_airflow.operators.service_discovery import ServiceDiscoverySwitchOperator

if TYPE_CHECKING:
    from rehearsal.sandbox.platform import Sandbox

GUARD = "guard_drill_environment"
INJECT = "inject_primary_loss"
RECOVERY_TASKS = ["promote_standby", "restore_pitr"]
SWITCH = "switch_service_discovery"
CONFIRM = "confirm_writes_resumed"
MEASURE = "measure_rto_rpo"
TEARDOWN = "tear_down_drill_resources"
DECISION_KEY = "decision"
SCENARIO = "Postgres primary loss (Scenario B drill)"


def guard_of(context: Context) -> dict:
    value = context["ti"].xcom_pull(task_ids=GUARD)
    if not value:
        raise PreconditionFailed("the drill guard did not run or recorded nothing")
    return value


def sandbox_of(env: Environment) -> Sandbox:
    """The drill environment's platform inventory (imported lazily: boto3 is slow to import at parse time)."""
    from rehearsal.sandbox.platform import Sandbox

    env.require_drill_environment("change the platform's topology")
    if not env.sandbox_state:
        raise PreconditionFailed(f"drill environment {env.name!r} has no platform inventory (sandbox_state)")
    return Sandbox(Path(env.sandbox_state))


class DrillGuardOperator(ControlPlaneMixin, DrillStepOperator):
    """Refuse unsafe drills before anything happens: mode and environment, heartbeat evidence, a healthy
    primary, a base backup to recover from. Records the run as in progress in the results database."""

    template_fields: Sequence[str] = ("mode", "path")

    def __init__(self, *, mode: str, path: str, component: str = "control_plane_api", **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.path = path
        self.component = component

    def run_step(self, context: Context) -> dict:
        check_params(self.mode, self.path)
        env = current_environment()
        if self.mode == "disruptive":
            env.require_drill_environment("run a disruptive drill (it kills the primary and loses its data)")
        reason = heartbeat_limitation(env.heartbeat_path())
        if reason:
            raise PreconditionFailed(reason)
        primary_host, primary_port = self.controlplane.current_address()
        primary = self.controlplane.endpoint(primary_host, primary_port).with_(dbname="postgres")
        writable, why = accepts_writes(primary)
        if not writable:
            raise PreconditionFailed(f"production primary {primary_host}:{primary_port} is not healthy before the drill: {why}")
        lineage = query_one(primary, LINEAGE_SQL)[0]
        standby = None
        if env.drill_environment and env.sandbox_state:
            sandbox = sandbox_of(env)
            if sandbox.primary.port != primary_port:
                raise PreconditionFailed(f"discovery points at port {primary_port} but the inventory's primary is "
                                         f"{sandbox.primary.name} on {sandbox.primary.port}")
            standby = f"127.0.0.1:{sandbox.standby.port}" if sandbox.standby else None
        standby_before = self._standby_before_fault(standby) if standby and self.mode == "disruptive" else None
        started_at = now_iso()
        # Recorded first, locked last: a refused lock leaves a recorded run (the report marks it aborted), and
        # nothing after the lock can fail, so a lock taken is always released by the teardown.
        results.record_start(results_endpoint(), context["dag"].dag_id, context["run_id"], SCENARIO, self.mode,
                             env.name, self.component, started_at)
        lock_note = self._take_lock(context, env)
        return {"mode": self.mode, "path": self.path, "environment": env.name, "run_key": key_of(context),
                "primary": f"{primary_host}:{primary_port}", "lineage": lineage, "standby": standby,
                "standby_before_fault": standby_before, "started_at": started_at, "lock": lock_note,
                "detail": f"{self.mode} drill on {env.name}: primary {primary_host}:{primary_port} (lineage {lineage}), "
                          f"standby {standby}" + (f"; {lock_note}" if lock_note else "")}

    def _standby_before_fault(self, standby: str) -> dict:
        """The standby while the primary is alive: a usable one streams and replays recent commits."""
        rpo = load_catalog().target(self.component).rpo.total_seconds()
        endpoint = self.controlplane.endpoint(*split_address(standby)).with_(dbname="postgres")
        try:
            state = probe_standby(endpoint)
        except Exception as exc:  # noqa: BLE001 - an unreachable standby is a finding, not a guard failure
            return {"state": None, "limitation": f"standby {standby} is unreachable: {exc}"}
        return {"state": asdict(state), "limitation": standby_limitation(state, rpo, primary_alive=True)}

    def _take_lock(self, context: Context, env: Environment) -> str | None:
        """One disruptive drill per environment at a time; other drills wait for none but refuse to overlap one.
        A lock whose run no longer exists (killed before its teardown) is broken, and the report says so."""
        ours = (context["dag"].dag_id, context["run_id"])
        endpoint = results_endpoint()
        disruptive = self.mode == "disruptive"
        lock = results.acquire_drill_lock(endpoint, env.name, *ours) if disruptive else results.drill_lock_holder(endpoint, env.name)
        if lock is None or lock.holder() == ours:
            return None
        active = context["ti"].get_dr_count(dag_id=lock.dag_id, run_ids=[lock.run_id], states=["queued", "running"])
        if active:
            raise PreconditionFailed(
                f"a disruptive drill ({lock.describe()}) is in progress on {env.name!r}; if that run no longer exists, "
                f"break its lock with `{results.BREAK_COMMAND.format(environment=env.name)}`")
        results.release_drill_lock(endpoint, env.name, *lock.holder())
        note = f"broke a stale drill lock ({lock.describe()}): that run is not queued or running"
        self.log.warning("%s", note)
        if disruptive:
            again = results.acquire_drill_lock(endpoint, env.name, *ours)
            if again.holder() != ours:
                raise PreconditionFailed(f"a disruptive drill ({again.describe()}) took the lock on {env.name!r} first")
        return note


class InjectPrimaryLossOperator(DrillStepOperator):
    """Disruptive: SIGKILL the primary and delete its data directory (drill environments only).
    Non-disruptive: mark the moment of a simulated loss; production is not touched."""

    def run_step(self, context: Context) -> dict:
        guard = guard_of(context)
        if guard["mode"] == "non_disruptive":
            fault_at = time.time()
            # The recovery may use only what the archive held at this moment, as after a real loss.
            archived_before = datetime.fromtimestamp(fault_at, UTC).isoformat()
            return {"fault_at": fault_at, "simulated": True, "archived_before": archived_before,
                    "detail": f"simulated loss at {archived_before}: production untouched, recovery goes to a scratch "
                              "target from what the archive held then"}
        sandbox = sandbox_of(current_environment())
        if f"127.0.0.1:{sandbox.primary.port}" != guard["primary"]:
            raise PreconditionFailed(f"the primary changed since the guard ran ({guard['primary']}); not injecting")
        fault_at = time.time()
        killed = sandbox.kill_primary(lose_data=True)
        return {"fault_at": fault_at, "simulated": False, "archived_before": "", **killed,
                "detail": f"killed {killed['cluster']} (pid {killed['pid']}, port {killed['port']}) "
                          f"{(killed['killed_at'] - fault_at) * 1000:.0f} ms after the fault began; its data directory "
                          f"and WAL spool are lost ({len(killed['unshipped_wal_lost'])} unshipped segment(s))"}


class DetectPrimaryLossOperator(ControlPlaneMixin, DrillStepOperator):
    """Probe the primary (bounded) until it stops accepting writes; non-disruptive: confirm it still does."""

    def __init__(self, *, timeout: float = 60, **kwargs) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout

    def run_step(self, context: Context) -> dict:
        guard = guard_of(context)
        primary = self.controlplane.endpoint(*split_address(guard["primary"])).with_(dbname="postgres")
        if guard["mode"] == "non_disruptive":
            ok, why = accepts_writes(primary)
            if not ok:
                raise PreconditionFailed(f"production primary {guard['primary']} became unhealthy during the drill: {why}")
            return {"detected_at": time.time(), "detail": f"production primary {guard['primary']} untouched and healthy"}
        detected_at, reason, attempts = wait_for_loss(lambda: accepts_writes(primary, timeout=1), self.timeout)
        return {"detected_at": detected_at, "reason": reason, "attempts": attempts,
                "detail": f"primary {guard['primary']} lost after {attempts} probe(s): {reason}"}


class ChooseRecoveryPathOperator(ControlPlaneMixin, DrillStepOperator, BranchMixIn):
    """auto: promote the standby when it is healthy and within RPO, else PITR from backups."""

    inherits_from_skipmixin = True

    def __init__(self, *, component: str = "control_plane_api", **kwargs) -> None:
        super().__init__(**kwargs)
        self.component = component

    def run_step(self, context: Context) -> dict:
        guard = guard_of(context)
        limitation = "no standby in the inventory"
        before = guard.get("standby_before_fault") or {}
        if guard.get("standby") and guard["mode"] == "disruptive":
            if before.get("limitation"):
                limitation = f"before the fault, {before['limitation']}"
            else:
                rpo = load_catalog().target(self.component).rpo.total_seconds()
                standby = self.controlplane.endpoint(*split_address(guard["standby"])).with_(dbname="postgres")
                limitation = promotion_limitation(None, standby, rpo)
        path, why = choose_path(guard["path"], guard["mode"], limitation)
        return {"path": path, "why": why, "detail": f"{path}: {why}"}

    def execute(self, context: Context):
        result = super().execute(context)
        task_id = "promote_standby" if result["path"] == "promote_standby" else "restore_pitr"
        context["ti"].xcom_push(key=DECISION_KEY, value=result)  # branch operators push no return value
        self.do_branch(context, task_id)
        return result


class EnrollNewPrimaryOperator(DrillStepOperator):
    """Disruptive: make the recovered cluster production's primary in the inventory; a PITR copy gets
    production archiving back (it was neutralized at restore). Non-disruptive: skipped."""

    def run_step(self, context: Context) -> dict:
        guard = guard_of(context)
        if guard["mode"] == "non_disruptive":
            raise AirflowSkipException("non-disruptive drill: the scratch copy never becomes production")
        recovered = pull_first(context, RECOVERY_TASKS)
        sandbox = sandbox_of(current_environment())
        host, port = split_address(recovered["address"])
        if recovered["method"] == "pitr":
            spool = Path(sandbox.state["spool"])
            quarantine = Path(recovered["data_dir"]).parent / f"{recovered['cluster']}.quarantine"
            moved = []
            for path in sorted(quarantine.glob("*")):
                target = spool / path.name
                if not target.exists():
                    shutil.copy2(path, spool / f".{path.name}.tmp")
                    (spool / f".{path.name}.tmp").rename(target)
                    moved.append(path.name)
            admin = sandbox.endpoint(sandbox.primary, "admin").with_(port=port, dbname="postgres")
            with connect(admin) as conn:
                conn.execute("ALTER SYSTEM SET archive_command = " + _quote(archive_command(spool)))
                for setting in PRODUCTION_RESETS:  # what the restore switched off for the copy (restart-only ones
                    conn.execute(f"ALTER SYSTEM RESET {setting}")  # take effect at the next restart)
                conn.execute("SELECT pg_reload_conf()")
            sandbox.adopt_primary(recovered["cluster"], port, recovered["data_dir"])
            return {"address": recovered["address"], "archived_from_quarantine": moved,
                    "detail": f"{recovered['cluster']} is the primary; archiving re-enabled ({len(moved)} file(s) from quarantine)"}
        name = next(n for n, i in sandbox.state["clusters"].items() if int(i["port"]) == port)
        sandbox.adopt_primary(name, port, sandbox.state["clusters"][name]["data_dir"])
        return {"address": recovered["address"], "detail": f"promoted standby {name} is the primary"}


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class DrillServiceDiscoverySwitchOperator(ServiceDiscoverySwitchOperator):
    """The switch, in a drill: non-disruptive drills leave production's record alone."""

    def run_step(self, context: Context) -> dict:
        if guard_of(context)["mode"] == "non_disruptive":
            raise AirflowSkipException("non-disruptive drill: production service discovery untouched")
        return super().run_step(context)


class ConfirmWritesResumedOperator(ControlPlaneMixin, DrillStepOperator):
    """The first acknowledged write on the recovered primary: the heartbeat after the switch, or, in a
    non-disruptive drill, a probe write into the scratch copy."""

    def run_step(self, context: Context) -> dict:
        guard = guard_of(context)
        recovered = pull_first(context, RECOVERY_TASKS)
        if guard["mode"] == "disruptive":
            switch = context["ti"].xcom_pull(task_ids=SWITCH)
            ack = switch["first_ack"]
            return {"first_ack": ack, "detail": f"heartbeat seq {ack['seq']} acknowledged on {ack['endpoint']}"}
        endpoint = self.controlplane.endpoint(*split_address(recovered["address"]))
        with connect(endpoint, connect_timeout=5) as conn:
            conn.execute("INSERT INTO heartbeat (seq, writer) VALUES (%s, %s)", (-int(time.time() * 1000), "drill-probe"))
        acked_at = time.time()
        ack = {"seq": None, "acked_at": acked_at, "endpoint": recovered["address"]}
        return {"first_ack": ack, "detail": f"probe write acknowledged by the scratch copy {recovered['address']}"}


class MeasureRecoveryOperator(ControlPlaneMixin, DrillStepOperator):
    """RTO and RPO from the heartbeat log and the rows that survived on the recovered primary."""

    def __init__(self, *, component: str = "control_plane_api", **kwargs) -> None:
        super().__init__(**kwargs)
        self.component = component

    def run_step(self, context: Context) -> dict:
        ti = context["ti"]
        guard = guard_of(context)
        fault = ti.xcom_pull(task_ids=INJECT)
        recovered = pull_first(context, RECOVERY_TASKS)
        confirm = ti.xcom_pull(task_ids=CONFIRM)
        env = current_environment()
        target = load_catalog().target(self.component)
        window = evidence_window(target.rpo.total_seconds())
        acks = read_acks(env.heartbeat_path(), since=fault["fault_at"] - window)
        endpoint = self.controlplane.endpoint(*split_address(recovered["address"]))

        def surviving(seqs: list[int]) -> set[int]:
            with connect(endpoint) as conn:
                rows = conn.execute("SELECT seq FROM heartbeat WHERE seq = ANY(%s)", (seqs,)).fetchall()
            return {r[0] for r in rows}

        first = confirm["first_ack"]
        measurement = measure_recovery(acks, fault["fault_at"], recovered["address"], surviving, window,
                                       first_ack=Ack(first["seq"] or -1, first["acked_at"], first["endpoint"]),
                                       fault_effective_at=fault.get("killed_at"), lineage=guard.get("lineage"))
        out = {"rto_seconds": measurement.rto_seconds, "rpo_seconds": measurement.rpo_seconds,
               "rpo_is_lower_bound": measurement.rpo_is_lower_bound,
               "target_rto_seconds": target.rto.total_seconds(), "target_rpo_seconds": target.rpo.total_seconds(),
               "evidence": {**measurement.evidence(), "measurement_includes": _what_was_measured(guard, fault, recovered)}}
        rpo = "not measured" if measurement.rpo_seconds is None else \
            f"{'at least ' if measurement.rpo_is_lower_bound else ''}{measurement.rpo_seconds:.2f}s"
        out["detail"] = (f"RTO {measurement.rto_seconds:.2f}s, RPO {rpo} ({measurement.missing_acked} of "
                         f"{measurement.acked_before_fault} acknowledged writes lost in the {window:.0f}s window)")
        return out


def _what_was_measured(guard: dict, fault: dict, recovered: dict) -> str:
    """The report's plain statement of what the numbers include."""
    lineage = f"writes acknowledged by the lost primary's history ({guard.get('lineage')})"
    if fault.get("simulated"):
        return (f"simulated loss: a scratch copy restored from what the archive held at {fault.get('archived_before')} "
                f"(objects stored at least 1 s before it, by S3 LastModified); RPO = {lineage} missing from that copy; "
                "RTO ends at a probe write into the copy (production's discovery and clients untouched)")
    return (f"primary SIGKILLed with its data directory and its unshipped WAL spool "
            f"({len(fault.get('unshipped_wal_lost') or [])} segment(s)); recovered by {recovered.get('method')}; "
            f"RPO = {lineage} missing on the recovered primary; RTO ends at the first write acknowledged by it "
            "through service discovery")


class DrillTeardownOperator(DrillStepOperator):
    """Always runs. Non-disruptive: destroy this run's scratch clusters. Disruptive: make the sandbox whole
    (the lost data directory deleted, a new standby for the new primary, a base backup of its new timeline)
    and remove what the run left in scratch."""

    def run_step(self, context: Context) -> dict:
        ti = context["ti"]
        guard = ti.xcom_pull(task_ids=GUARD) or {}
        env = current_environment()
        cleaned, created = [], []
        keep: set[str] = set()
        if guard.get("mode") == "disruptive":
            results.release_drill_lock(results_endpoint(), env.name, context["dag"].dag_id, context["run_id"])
        if guard.get("mode") == "disruptive" and env.drill_environment and env.sandbox_state:
            sandbox = sandbox_of(env)
            cleaned += [f"lost-data:{path}" for path in sandbox.discard_lost_data()]
            healed = sandbox.heal()  # a drill that failed after the fault still leaves a primary behind
            created += [f"repair:{action}" for action in healed]
            keep.add(sandbox.state["primary"])
            standby, backups = sandbox.rebuild_standby_and_back_up(dump=False)
            created.append(f"cluster:{standby.name}@127.0.0.1:{standby.port} (new standby)")
            created += [f"backup:{b}" for b in backups.values()]
        if env.scratch_root:
            run_dir = Path(env.scratch_root) / key_of(context)
            if run_dir.exists():
                from rehearsal.postgres.cluster import LocalCluster

                for marker in sorted(run_dir.glob("*.port")):
                    name = marker.name[: -len(".port")]
                    if name in keep:
                        continue
                    LocalCluster(name, run_dir / name, int(marker.read_text())).destroy()
                    cleaned.append(f"cluster:{name}@127.0.0.1:{marker.read_text()}")
                for leftover in run_dir.iterdir():
                    if any(leftover.name == k or leftover.name.startswith(k + ".") for k in keep):
                        continue  # the enrolled primary, its log and markers
                    if leftover.is_dir():
                        shutil.rmtree(leftover, ignore_errors=True)
                    else:
                        leftover.unlink(missing_ok=True)
                if not keep:
                    shutil.rmtree(run_dir, ignore_errors=True)
                    cleaned.append(f"dir:{run_dir}")
        return {"resources_cleaned": cleaned, "resources_created": created,
                "detail": f"cleaned {len(cleaned)} resource(s); sandbox whole again" if created else f"cleaned {len(cleaned)} resource(s)"}


class DrillReportOperator(DrillStepOperator):
    """Write ``reports/<dag_id>/<run_id>.json`` and ``.md`` and the results row; fail when the drill failed."""

    def __init__(self, *, component: str = "control_plane_api", scenario: str = SCENARIO,
                 measures_recovery: bool = True, recovery_tasks: list[str] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.component = component
        self.scenario = scenario
        self.measures_recovery = measures_recovery
        self.recovery_tasks = recovery_tasks or RECOVERY_TASKS

    def run_step(self, context: Context) -> dict:
        ti = context["ti"]
        dag = context["dag"]
        run_id = context["run_id"]
        env = current_environment()
        target = load_catalog().target(self.component)
        states = ti.get_task_states(dag_id=dag.dag_id, run_ids=[run_id]).get(run_id, {})
        steps, checks, created, failures = [], [], [], []
        for task_id in dag.topological_sort_ids() if hasattr(dag, "topological_sort_ids") else [t.task_id for t in dag.topological_sort()]:
            if task_id == self.task_id:
                continue
            record = ti.xcom_pull(task_ids=task_id, key=STEP_KEY)
            state = states.get(task_id)
            status = (record or {}).get("status") or str(state or "not_run")
            if state in ("skipped", "upstream_failed"):
                status = str(state)
            step = Step(name=task_id, status=status, started_at=(record or {}).get("started_at"),
                        finished_at=(record or {}).get("finished_at"), detail=(record or {}).get("detail", ""))
            steps.append(step)
            if status in ("failed", "upstream_failed"):
                failures.append(f"{task_id}: {step.detail or status}")
            value = ti.xcom_pull(task_ids=task_id) or {}
            if isinstance(value, dict):
                checks += value.get("checks", [])
                created += value.get("resources", [])
        guard = ti.xcom_pull(task_ids=GUARD) or {}
        params = context["params"]
        measure = ti.xcom_pull(task_ids=MEASURE) or {}
        teardown = ti.xcom_pull(task_ids=TEARDOWN) or {}
        recovered = pull_first(context, self.recovery_tasks) or {}
        fault = ti.xcom_pull(task_ids=INJECT) or {}
        rto, rpo = measure.get("rto_seconds"), measure.get("rpo_seconds")
        rto_met, rpo_met = judge(rto, target.rto.total_seconds()), judge(rpo, target.rpo.total_seconds())
        if measure.get("rpo_is_lower_bound"):
            rpo_met = False  # nothing in the evidence window survived: the loss is at least the window
        if self.measures_recovery:
            checks.append({"name": "rto_within_target", "ok": bool(rto_met), "critical": True,
                           "detail": f"measured {rto} s, target {target.rto.total_seconds():.0f} s"})
            checks.append({"name": "rpo_within_target", "ok": bool(rpo_met), "critical": True,
                           "detail": f"measured {'at least ' if measure.get('rpo_is_lower_bound') else ''}{rpo} s, "
                                     f"target {target.rpo.total_seconds():.0f} s"})
        missed = self.measures_recovery and not (rto_met and rpo_met)
        if self.measures_recovery and not guard:
            status = "aborted"
        elif failures or missed:
            status = "failed"
        else:
            status = "passed"
        evidence = dict(measure.get("evidence") or {})
        evidence.update({"restored_lsn": recovered.get("restored_lsn") or recovered.get("lsn"),
                         "recovered_address": recovered.get("address"), "restore_timings": recovered.get("timings"),
                         "restore_archive": recovered.get("archive"), "neutralized_on_restored_copy": recovered.get("neutralized"),
                         "standby_before_fault": guard.get("standby_before_fault"), "drill_lock": guard.get("lock"),
                         "fault": {k: v for k, v in fault.items() if k != "detail"}})
        report = DrillReport(
            dag_id=dag.dag_id, run_id=run_id, scenario=self.scenario, mode=guard.get("mode") or params.get("mode", "scheduled"),
            environment=env.name, status=status, started_at=guard.get("started_at") or (steps[0].started_at if steps else None),
            finished_at=datetime.now(UTC).isoformat(), component=self.component,
            target_rto_seconds=target.rto.total_seconds(), measured_rto_seconds=rto, rto_met=rto_met,
            target_rpo_seconds=target.rpo.total_seconds(), measured_rpo_seconds=rpo, rpo_met=rpo_met,
            recovery_path=(ti.xcom_pull(task_ids="choose_recovery_path", key=DECISION_KEY) or {}).get("path"), steps=steps, checks=checks,
            evidence=evidence, resources_created=created + teardown.get("resources_created", []),
            resources_cleaned=teardown.get("resources_cleaned", []), failure="; ".join(failures) or None)
        json_path, _md = write_report(report, env.reports_dir)
        results.record_result(results_endpoint(), report, str(json_path))
        self.log.info("drill %s: report %s", status, json_path)
        if status != "passed":
            raise PreconditionFailed(f"drill {status}: {report.failure or 'RTO or RPO target missed'} (report: {json_path})")
        return {"status": status, "report": str(json_path), "detail": f"report {json_path}"}
