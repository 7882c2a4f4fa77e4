"""Scenario B's own steps, thin over ``rehearsal.runbooks.corruption``: establish when the damage happened, keep
the writes a restore will lose, secure the WAL past the damage, pick the last good backup, prove the damage
gone, and repair the drift."""
from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, VerificationFailed
from rehearsal.platform import split_address
from rehearsal.postgres.connection import connect
from rehearsal.runbooks.corruption import (
    DAMAGING_ACTIONS,
    MUTATIONS,
    AuditEntry,
    CorruptionPoint,
    check_items,
    corruption_point,
    damage_gone,
    last_good_backup,
    lost_writes,
    parse_time,
)
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.backup_store import BackupStoreHook
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator, key_of
from rehearsal_airflow.operators.control_plane import ServicesMixin

CAPTURE_MARGIN = timedelta(minutes=1)
AUDIT_SQL = ("SELECT id, actor, action, detail, created_at FROM audit_log WHERE created_at >= %s AND action = ANY(%s) "
             "ORDER BY created_at, id")


def _point(value: Any) -> CorruptionPoint:
    return CorruptionPoint(parse_time(value["time"], "corruption time"), parse_time(value["recovery_target"], "target"),
                           value["how"], value.get("damage", []))


def audit_since(conn, since: datetime, actions: Sequence[str]) -> list[AuditEntry]:
    return [AuditEntry.from_row(r) for r in conn.execute(AUDIT_SQL, (since, list(actions))).fetchall()]


class EstablishCorruptionPointOperator(ControlPlaneMixin, DrillStepOperator):
    """When the damage happened: ``corruption_time`` as given, or the earliest damaging statement (bulk UPDATE or
    DELETE, DROP TABLE) the audit triggers recorded in the last ``lookback``; the restore target is just before."""

    template_fields: Sequence[str] = ("corruption_time",)

    def __init__(self, *, corruption_time: str | None, lookback: timedelta = timedelta(hours=24), **kwargs) -> None:
        super().__init__(**kwargs)
        self.corruption_time, self.lookback = corruption_time, lookback

    def run_step(self, context: Context) -> dict:
        now = datetime.now(UTC)
        given = self.corruption_time not in (None, "", "None")
        try:
            with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
                audit = audit_since(conn, now - self.lookback, DAMAGING_ACTIONS)
        except Exception as exc:  # noqa: BLE001 - with a time given, an unreadable audit log is not fatal
            if not given:
                raise PreconditionFailed(f"corruption_time was not given and the audit log cannot be read ({exc}): "
                                         "give corruption_time") from None
            point = corruption_point(self.corruption_time, [], now)
            return {**point.to_dict(), "audit_readable": False,
                    "detail": f"corruption at {point.time.isoformat()} (given; the audit log could not be read: {exc}); "
                              f"restore target {point.recovery_target.isoformat()}"}
        if given:
            earlier = [e for e in audit if e.created_at < parse_time(self.corruption_time, "corruption_time")]
            if earlier:
                raise PreconditionFailed(
                    f"the audit log records {len(earlier)} damaging statement(s) BEFORE the corruption_time given "
                    f"({self.corruption_time}): " + "; ".join(e.describe() for e in earlier[:5])
                    + ". A restore to the time given would bring them back: give the time of the earliest damage")
        if not given and not [e for e in audit if e.action in DAMAGING_ACTIONS]:
            # Nothing says there is damage: a false alarm. Nothing is frozen or restored.
            why = (f"Scenario B is not happening: no corruption_time was given and the audit log records no damaging "
                   f"statement ({', '.join(DAMAGING_ACTIONS)}) in the last {self.lookback}; nothing was changed. If "
                   "the damage is of another kind, give corruption_time")
            record = {"not_applicable": why, "detail": f"NOT APPLICABLE: {why}"}
            context["ti"].xcom_push(key="return_value", value=record)
            raise AirflowSkipException(record["detail"])
        point = corruption_point(self.corruption_time, audit, now)
        return {**point.to_dict(), "detail": f"corruption at {point.time.isoformat()} ({point.how}); restore target "
                                             f"{point.recovery_target.isoformat()}"}


class CaptureWritesSinceOperator(ControlPlaneMixin, DrillStepOperator):
    """Before anything is switched: every acknowledged mutation the damaged cluster recorded since the restore
    target (its audit log), kept so the drift the restore leaves can be repaired."""

    template_fields: Sequence[str] = ("point",)

    def __init__(self, *, point: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.point = point

    def run_step(self, context: Context) -> dict:
        point = _point(self.point)
        # From a minute before the target: an audit row's time is taken inside its transaction, before the commit,
        # so a write stamped just before the target may commit after it. Re-applying is idempotent by request id.
        since = point.recovery_target - CAPTURE_MARGIN
        try:
            with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
                entries = audit_since(conn, since, MUTATIONS)
        except Exception as exc:  # noqa: BLE001 - a dead damaged primary: say what is lost, and go on
            lost = (f"mutations acknowledged after {point.recovery_target.isoformat()} are lost unless clients send "
                    "them again")
            return {"writes": [], "count": 0, "readable": False,
                    "degraded": [{"step": self.task_id, "item": "writes since the corruption not captured",
                                  "what_to_do": f"the damaged cluster's audit log could not be read ({exc}); {lost}: "
                                                "tell its clients, and compare the hosts' reports with desired state"}],
                    "detail": f"the damaged cluster's audit log cannot be read ({exc}): {lost}"}
        writes = [{"request_id": e.detail.get("request_id"), "app_id": e.detail.get("app_id"), "action": e.action,
                   "payload": e.detail.get("payload", {}), "actor": e.actor, "created_at": e.created_at.isoformat(),
                   "audit_id": e.id} for e in entries if e.detail.get("request_id")]
        return {"writes": writes, "count": len(writes), "readable": True,
                "detail": f"{len(writes)} acknowledged mutation(s) since {since.isoformat()} (a minute before the restore "
                          "target) kept from the damaged cluster's audit log"}


class ArchiveWalPastCorruptionOperator(ControlPlaneMixin, DrillStepOperator):
    """The restore must replay up to the damage: the damaged primary switches its WAL segment and that segment
    must reach the archive. A primary that no longer answers is skipped: the archive holds what it holds."""

    def __init__(self, *, timeout: float = 120, **kwargs) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout

    def run_step(self, context: Context) -> dict:
        env = current_environment()
        store = BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        try:
            with connect(self.controlplane.endpoint(), statement_timeout_ms=10_000) as conn:
                segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
                conn.execute("SELECT pg_switch_wal()")
        except Exception as exc:  # noqa: BLE001 - a dead primary cannot switch; the restore uses the archive as is
            raise AirflowSkipException(f"the damaged primary does not answer ({exc}): the archive holds what it holds") from None
        deadline = time.monotonic() + self.timeout
        while store.head(store.wal_key(segment)) is None:
            if time.monotonic() > deadline:
                raise RecoveryTimedOut(f"WAL segment {segment} (past the damage) did not reach "
                                       f"s3://{store.bucket}/{store.wal_key(segment)} within {self.timeout:.0f}s")
            time.sleep(0.2)
        return {"segment": segment, "detail": f"segment {segment}, written after the damage, is in the archive"}


class PickLastGoodBackupOperator(DrillStepOperator):
    """The newest base backup that finished before the restore target and verifies (checksums, pg_verifybackup,
    WAL continuity); newer ones that fail are named with why."""

    template_fields: Sequence[str] = ("point",)
    aws_conn_id = "aws_default"

    def __init__(self, *, point: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.point = point

    def run_step(self, context: Context) -> dict:
        from rehearsal.backups.verification import verify_base_backup

        env = current_environment()
        store = BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        point = _point(self.point)
        scratch_root = Path(env.scratch_root or "/tmp") / key_of(context) / "verify"
        backups = [(i, store.manifest("base_backup", i).stop_time) for i in store.backup_ids("base_backup")]

        def verify(backup_id: str) -> str | None:
            scratch = scratch_root / backup_id
            try:
                checks, _manifest = verify_base_backup(store, backup_id, scratch, check_wal=True)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            return None if checks.ok else "; ".join(f"{c.name}: {c.detail}" for c in checks.failed)

        choice = last_good_backup(backups, point.recovery_target, verify)
        shutil.rmtree(scratch_root, ignore_errors=True)
        # What the failover runbook's restore takes (XComArg ``output["key"]`` reads these keys).
        context["ti"].xcom_push(key="backup_id", value=choice.backup_id)
        context["ti"].xcom_push(key="recovery_target", value=point.recovery_target.isoformat())
        return {**choice.to_dict(), "recovery_target": point.recovery_target.isoformat(),
                "detail": f"base backup {choice.backup_id} (finished {choice.stop_time}) restored to "
                          f"{point.recovery_target.isoformat()}: {choice.why}"}


class ValidateDamageGoneOperator(ControlPlaneMixin, DrillStepOperator):
    """On the restored cluster: every table the damage dropped is back, and no damaging statement from the
    corruption point on was replayed (its own audit row would be there)."""

    template_fields: Sequence[str] = ("point", "recovery")

    def __init__(self, *, point: Any, recovery: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.point, self.recovery = point, recovery

    def run_step(self, context: Context) -> dict:
        from rehearsal.checks import CheckSet

        point = _point(self.point)
        address = self.recovery["address"]
        endpoint = self.controlplane.endpoint(*split_address(address))  # the control-plane database, as superuser
        with connect(endpoint, statement_timeout_ms=30_000) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            replayed = audit_since(conn, point.recovery_target, DAMAGING_ACTIONS)
            dropped = {e["detail"].get("table") for e in point.damage if e["action"] == "drop_table"}
            counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in sorted(dropped) if t in tables}
        problems = damage_gone(point, tables, replayed)
        checks = CheckSet(f"restored cluster {address}")
        checks.add("damage_gone", not problems, "; ".join(problems) or
                   f"{len(point.damage)} damaging statement(s) not replayed; dropped table(s) back: "
                   + (", ".join(f"{t} ({n} rows)" for t, n in counts.items()) or "none"))
        if not checks.ok:
            raise VerificationFailed(checks.subject, checks.failed)
        return {"checks": checks.as_dicts(), "restored_tables": counts, "detail": checks.checks[0].detail}


class RepairDriftOperator(ServicesMixin, ControlPlaneMixin, DrillStepOperator):
    """Reconcile and repair drift, while writes are still frozen (its own writes are maintenance writes, so nothing
    newer exists that an old write could overwrite): each mutation acknowledged on the damaged cluster after the
    restore target and missing from the restored one is applied again through the API, with its own request id
    (idempotent), in the order they were acknowledged; each
    item is reported with its outcome, and one that cannot be repaired fails the run by name. The hosts' running
    state is then compared with the repaired desired state: what differs is the reconciler's to converge."""

    template_fields: Sequence[str] = ("captured",)

    def __init__(self, *, captured: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.captured = captured

    def run_step(self, context: Context) -> dict:
        writes = (self.captured or {}).get("writes", [])
        ids = [w["request_id"] for w in writes]
        with connect(self.controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
            present = {r[0] for r in conn.execute(
                "SELECT detail::jsonb->>'request_id' FROM audit_log WHERE detail::jsonb->>'request_id' = ANY(%s)",
                (ids,)).fetchall()} if ids else set()
        lost = lost_writes(writes, present)
        api = self.services.api(actor="drift-repair")
        maintenance = f"drift repair before writes resume ({context['run_id']})"
        items = [{"subject": f"{w['action']} app {w['app_id']} ({w['request_id']})", "source": "audit log of the damaged cluster",
                  "outcome": "already_present", "why": "in the restored cluster"} for w in writes if w["request_id"] in present]
        for w in lost:
            subject = f"{w['action']} app {w['app_id']} ({w['request_id']}, acknowledged {w['created_at']})"
            try:
                answer = api.mutate(w["action"], int(w["app_id"]), w["payload"], request_id=w["request_id"],
                                    maintenance=maintenance)
            except Exception as exc:  # noqa: BLE001 - reported per item, failed below by name
                items.append({"subject": subject, "source": "audit log of the damaged cluster", "outcome": "failed",
                              "why": str(exc)})
                continue
            outcome = "repaired" if answer.ok else "failed"
            items.append({"subject": subject, "source": "audit log of the damaged cluster", "outcome": outcome,
                          "why": f"HTTP {answer.status}" + ("" if answer.ok else f" {answer.body.get('error', answer.body)}")})
        hosts = self._host_drift()
        check_items(items)
        repaired = sum(1 for i in items if i["outcome"] == "repaired")
        reapplied = [w["request_id"] for w, item in zip(lost, items[len(items) - len(lost):], strict=True)
                     if item["outcome"] == "repaired"]
        return {"items": items, "lost_writes": len(lost), "repaired": repaired, "host_drift": hosts,
                "reapplied_request_ids": reapplied,
                "detail": f"{len(writes)} write(s) since the restore target: {len(writes) - len(lost)} already in the "
                          f"restored cluster, {repaired} re-applied; {hosts['hosts_differing']} of {hosts['hosts']} host(s) "
                          "differ from the repaired desired state (left to the reconciler)"}

    def _host_drift(self) -> dict:
        """How many hosts run something other than what the restored control plane wants (their reports)."""
        from rehearsal.services import call

        differing, total = [], 0
        desired = {str(a["id"]): a for a in self.services.api().apps()}
        for host, port in self.services.agents():
            total += 1
            try:
                state = call("GET", f"http://{host}:{port}/v1/state", timeout=1.0, service="host agent").body
            except Exception:  # noqa: BLE001 - an unreachable host is drift too
                differing.append(f"{host}:{port} (unreachable)")
                continue
            for app_id, running in state.get("running", {}).items():
                want = desired.get(app_id)
                if want is not None and running.get("generation") != want.get("generation"):
                    differing.append(f"{state.get('hostname')}: app {app_id} generation {running.get('generation')} "
                                     f"!= desired {want.get('generation')}")
                    break
        return {"hosts": total, "hosts_differing": len(differing), "examples": differing[:10]}

