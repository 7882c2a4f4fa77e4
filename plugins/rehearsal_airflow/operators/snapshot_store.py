"""Scenario D's steps (snapshot store loss), thin over ``rehearsal.snapshots``: confirm the blast radius, find the
backups that exist elsewhere, raise snapshot frequency only while the store is healthy, restore the store from its
own backups, and report each volume's newest restore point now available."""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.capabilities import SnapshotStoreAdmin, capability_limitation
from rehearsal.errors import PreconditionFailed, RehearsalError
from rehearsal.platform import load_provisioner
from rehearsal.postgres.connection import connect
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator
from rehearsal_airflow.operators.volumes import StoreMixin, _volume_target


class StaleReplica(RehearsalError):
    """The snapshot store's replica is further behind than allowed: restoring from it would lose too much."""

    kind = "refused"


def volume_inventory(controlplane) -> list[dict]:
    """The platform's volumes (the control-plane database's ``volumes`` table), as the store names them."""
    with connect(controlplane.endpoint(), statement_timeout_ms=30_000) as conn:
        columns = {r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns "
                                               "WHERE table_name = 'volumes'")}
        critical = "critical" if "critical" in columns else "false"
        rows = conn.execute(f"SELECT id, {critical}, size_gb FROM volumes ORDER BY id").fetchall()
    return [{"volume_id": f"vol-{r[0]}", "critical": bool(r[1]), "size_gb": r[2]} for r in rows]


class ConfirmBlastRadiusOperator(StoreMixin, DrillStepOperator):
    """Which buckets, index entries and chunks of the snapshot store are missing or unreadable, compared with the
    replica and the index backup; which volumes and snapshots that touches. Records; fails only when it cannot
    look. In ``drill`` mode it first refuses an environment that is not a drill environment: a rehearsal rebuilds
    the store and raises the snapshot frequency, only where drills may."""

    template_fields: Sequence[str] = ("mode",)

    def __init__(self, *, mode: str = "incident", **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = mode

    def run_step(self, context: Context) -> dict:
        from rehearsal.runbooks.postgres_failover import MODES
        from rehearsal.snapshots import store_health

        if self.mode not in MODES:
            raise PreconditionFailed(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        if self.mode == "drill":
            current_environment().require_drill_environment("rehearse Scenario D in drill mode (it rebuilds the "
                                                            "snapshot store and changes its snapshot frequency)")
        hook = self.snapshots()
        health = store_health(hook.primary, hook.replica, hook.index_backup)
        record = health.to_dict()
        what = ("healthy: " if health.ok else "UNHEALTHY: ") + ("; ".join(health.problems) or
                                                                 f"{health.primary_entries} index entries, "
                                                                 f"{health.primary_chunks} chunks, nothing missing")
        out = {**record, "healthy": health.ok,
               "detail": f"snapshot store {hook.primary.url} {what}; {len(health.volumes_affected)} volume(s) affected"}
        if health.ok:  # nothing is lost: a false alarm; nothing is raised, rebuilt or restored
            why = (f"Scenario D is not happening: the snapshot store {hook.primary.url} is healthy ({what}); nothing was "
                   "changed. To rehearse it, run dr_drill_snapshot_store_loss in a drill environment")
            out.update({"not_applicable": why, "detail": f"NOT APPLICABLE: {why}"})
            context["ti"].xcom_push(key="return_value", value=out)
            raise AirflowSkipException(out["detail"])
        return out


class FindBackupsElsewhereOperator(StoreMixin, DrillStepOperator):
    """Whether recent backups exist elsewhere: the replica in the second region (its lag behind the primary, or
    its age when the primary is gone) and the index backup. Refuses when no copy exists, or when the replica is
    older than ``max_replica_age`` (the volume RPO by default), naming it."""

    template_fields: Sequence[str] = ("max_replica_age_seconds",)

    def __init__(self, *, max_replica_age_seconds: float | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_replica_age_seconds = max_replica_age_seconds

    def run_step(self, context: Context) -> dict:
        from rehearsal.snapshots.freshness import newest_entry

        hook = self.snapshots()
        if hook.replica is None and hook.index_backup is None:
            raise PreconditionFailed("the environment names neither a snapshot replica nor an index backup: no copy of "
                                     "the snapshot store exists to restore from")
        limit = float(self.max_replica_age_seconds or _volume_target().rpo.total_seconds())
        now = datetime.now(UTC)
        copies = {}
        for name, store in (("replica", hook.replica), ("index_backup", hook.index_backup)):
            if store is None:
                continue
            try:
                newest, count = newest_entry(store)
            except Exception as exc:  # noqa: BLE001 - a copy that cannot be read is not a copy
                copies[name] = {"store": store.url, "entries": 0, "error": str(exc)}
                continue
            copies[name] = {"store": store.url, "entries": count,
                            "newest": newest.snapshot_id if newest else None,
                            "newest_at": newest.created_at.isoformat() if newest else None,
                            "age_seconds": (now - newest.created_at).total_seconds() if newest else None}
        replica = copies.get("replica") or {}
        if not any(c.get("entries") for c in copies.values()):
            raise PreconditionFailed("no copy of the snapshot store holds an index entry: "
                                     + "; ".join(f"{k} {v['store']}: {v.get('error') or 'empty'}" for k, v in copies.items()))
        if replica.get("age_seconds") is not None and replica["age_seconds"] > limit:
            raise StaleReplica(f"the snapshot replica {replica['store']} is stale: its newest entry "
                               f"{replica['newest']} is {replica['age_seconds']:.0f}s old, over the {limit:.0f}s allowed")
        try:
            from rehearsal.snapshots import replica_lag

            lag = replica_lag(hook.primary, hook.replica).to_dict() if hook.replica else None
        except Exception as exc:  # noqa: BLE001 - the primary may be gone: the replica's age above is what counts
            lag = {"detail": f"lag not measurable: {exc}"}
        return {"copies": copies, "replica_lag": lag,
                "detail": "; ".join(f"{k} {v['store']}: {v['entries']} entries, newest "
                                    f"{v.get('newest')} ({(v.get('age_seconds') or 0):.0f}s old)" for k, v in copies.items())}


class RaiseSnapshotFrequencyOperator(StoreMixin, DrillStepOperator):
    """The health gate: snapshot frequency is raised only while the store is healthy (never write into a failing
    store). Skipped, saying why, when it is not."""

    template_fields: Sequence[str] = ("health", "interval_seconds")

    def __init__(self, *, health: Any, interval_seconds: float = 60, **kwargs) -> None:
        super().__init__(**kwargs)
        self.health, self.interval_seconds = health, interval_seconds

    def run_step(self, context: Context) -> dict:
        if not (self.health or {}).get("healthy"):
            raise AirflowSkipException("snapshot frequency NOT raised: the store is unhealthy ("
                                       + "; ".join((self.health or {}).get("problems", [])[:3])
                                       + "); snapshots are never written into a failing store")
        env = current_environment()
        provisioner = load_provisioner(env.provisioner, environment=env)
        why = capability_limitation(provisioner, SnapshotStoreAdmin)
        if why:
            raise AirflowSkipException(f"snapshot frequency NOT raised on {env.name!r}: {why}")
        before = provisioner.snapshot_interval()
        done = provisioner.set_snapshot_interval(float(self.interval_seconds))
        return {"interval_seconds": float(self.interval_seconds), "interval_before": before, "detail": "; ".join(done)}


class PutSnapshotFrequencyBackOperator(StoreMixin, DrillStepOperator):
    """At the end, whatever happened in between: the snapshot interval the runbook raised goes back to what it was
    before (a runbook puts back what it changed). Skipped when it was not raised; when it cannot be put back, the
    run is ``degraded`` with that item, naming the interval it was left at.

    :param raised: the record of the step that raised it (``{"interval_seconds", "interval_before"}``)"""

    template_fields: Sequence[str] = ("raised",)

    def __init__(self, *, raised: Any, **kwargs) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.raised = raised

    def run_step(self, context: Context) -> dict:
        raised = self.raised if isinstance(self.raised, dict) else {}
        if not raised.get("interval_before"):
            raise AirflowSkipException("the snapshot frequency was not raised: nothing to put back")
        before, now = float(raised["interval_before"]), float(raised["interval_seconds"])
        env = current_environment()
        provisioner = load_provisioner(env.provisioner, environment=env)
        try:
            if not isinstance(provisioner, SnapshotStoreAdmin):
                raise PreconditionFailed(capability_limitation(provisioner, SnapshotStoreAdmin))
            done = provisioner.set_snapshot_interval(before)
        except Exception as exc:  # noqa: BLE001 - the recovery stands; what is left undone is said
            item = {"step": self.task_id, "item": "snapshot frequency still raised",
                    "what_to_do": f"snapshots are still taken every {now:g}s (it was {before:g}s): set the interval "
                                  f"back by hand ({exc})"}
            return {"degraded": [item], "detail": f"DEGRADED: could not put the snapshot interval back to {before:g}s: {exc}"}
        return {"interval_seconds": before, "detail": "; ".join(done)}


class RestoreSnapshotStoreOperator(StoreMixin, DrillStepOperator):
    """Restore the snapshot store from its own backups into the primary location (the bucket recreated when it is
    gone): every chunk copied from the replica with its checksum verified, the index rebuilt from the index backup
    and the replica, every referenced chunk present. Skipped when the store is healthy."""

    template_fields: Sequence[str] = ("health",)

    def __init__(self, *, health: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.health = health

    def run_step(self, context: Context) -> dict:
        from rehearsal.snapshots import rebuild_store, store_health

        if (self.health or {}).get("healthy"):
            raise AirflowSkipException("the snapshot store is healthy: nothing to restore")
        hook = self.snapshots()
        primary = hook.primary
        if hook.replica is None:
            raise PreconditionFailed(f"the snapshot store {primary.url} is unhealthy and the environment names no replica "
                                     "to restore its chunks from (snapshot_replica_bucket)")
        recreated, degraded = [], []
        if primary.bucket in (self.health or {}).get("buckets_missing", []):
            env = current_environment()
            provisioner = load_provisioner(env.provisioner, environment=env)
            if isinstance(provisioner, SnapshotStoreAdmin):
                recreated = provisioner.create_snapshot_bucket()  # with the platform's versioning and replication
            else:
                primary.create_bucket()
                recreated = [f"created s3://{primary.bucket} bare: re-apply its versioning and replication settings "
                             f"({capability_limitation(provisioner, SnapshotStoreAdmin)})"]
                degraded = [{"step": self.task_id, "item": "snapshot bucket recreated without versioning or replication",
                             "what_to_do": f"s3://{primary.bucket} was recreated bare: enable its versioning and "
                                           "replication to the replica as the platform configures them"}]
        record = rebuild_store(hook.replica, hook.index_backup, primary)
        record.raise_if_failed()
        after = store_health(primary, hook.replica, hook.index_backup)
        if not after.ok:
            raise PreconditionFailed(f"the rebuilt store {primary.url} is still unhealthy: {'; '.join(after.problems)}")
        return {**record.to_dict(), "healthy_after": True,
                "bucket": recreated, "degraded": degraded,
                "detail": ("; ".join(recreated) + "; " if recreated else "") +
                          f"snapshot store {primary.url} rebuilt: {record.chunks_copied} chunk(s) copied "
                          f"({record.bytes_copied / 1e6:.1f} MB, every checksum verified), {record.index_entries} index "
                          f"entries, nothing missing; healthy again"}


class ReportRestorePointsOperator(StoreMixin, ControlPlaneMixin, DrillStepOperator):
    """Per volume of the platform, the newest restore point now available and its age against the volume RPO."""

    def run_step(self, context: Context) -> dict:
        from rehearsal.snapshots import volume_freshness

        volumes = [v["volume_id"] for v in volume_inventory(self.controlplane)]
        rpo = _volume_target().rpo
        report = volume_freshness(self.snapshots().primary, volumes, rpo)
        return {"volumes": [v.to_dict() for v in report.volumes], "stale": report.stale, "missing": report.missing,
                "checks": [{"name": f"restore_point:{v.volume_id}", "ok": v.ok, "detail": v.detail, "critical": True}
                           for v in report.volumes],
                "detail": "; ".join(v.detail for v in report.volumes)}



class MeasureSnapshotStoreRecoveryOperator(StoreMixin, ControlPlaneMixin, DrillStepOperator):
    """RTO: from the store's loss to a volume restored from the rebuilt store and verified byte for byte. RPO: for
    each volume, the time between its newest restore point available now and the loss (the worst volume)."""

    template_fields: Sequence[str] = ("fault", "verified")
    runs_after_abort = True

    def __init__(self, *, fault: Any, verified: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fault, self.verified = fault, verified

    def run_step(self, context: Context) -> dict:
        from rehearsal.errors import EvidenceError
        from rehearsal.snapshots.freshness import newest_entry

        if not self.verified or "verified_at" not in self.verified:
            raise EvidenceError("no volume was restored and verified from the rebuilt store: no recovery to measure")
        lost_at = float(self.fault["fault_at"])
        store = self.snapshots().primary
        points = {}
        for volume in volume_inventory(self.controlplane):
            # Restore points that existed at the loss: snapshots taken after the rebuild would hide what was lost.
            before = [k for k in store.index_entries(volume["volume_id"])
                      if k.restorable and k.created_at.timestamp() <= lost_at]
            newest = max(before, key=lambda k: k.created_at, default=None)
            points[volume["volume_id"]] = None if newest is None else lost_at - newest.created_at.timestamp()
        missing = [v for v, age in points.items() if age is None]
        if missing:
            raise EvidenceError(f"after the rebuild, volume(s) {', '.join(missing)} have no restore point at all")
        _, entries_after = newest_entry(store)
        rto = float(self.verified["verified_at"]) - lost_at
        rpo = max(points.values())
        return {"rto_seconds": round(rto, 3), "rpo_seconds": round(rpo, 3),
                "evidence": {"restore_point_age_at_loss": points, "entries_before": self.fault.get("entries_before"),
                             "entries_after": entries_after,
                             "measurement_includes": "from the deletion to the first volume restored from the rebuilt "
                                                     "store and verified byte for byte; RPO: per volume, the loss time "
                                                     "minus its newest restore point available after the rebuild"},
                "detail": f"RTO {rto:.1f}s (store lost to a volume verified from the rebuilt store); RPO {rpo:.0f}s (the "
                          f"oldest newest-restore-point at the loss); index entries {self.fault.get('entries_before')} "
                          f"before, {entries_after} after"}
