"""The postgres-failover runbook's steps on the control-plane database: assess the cluster, choose the path,
fence the old primary, recover (promote the standby, or PITR into a new cluster), validate.

They reach the platform through connections only (``ControlPlaneDbHook.platform()``); none imports the sandbox,
and none asks whether the run is a drill. ``mode`` labels the run and, with ``target``, decides whether the
environment must be a drill environment.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Context
from airflow.sdk.exceptions import AirflowSkipException

from rehearsal.catalog import load_catalog
from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, RestoreError
from rehearsal.runbooks.postgres_failover import MODES, Assessment, Decision, assess, choose_path
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.backup_store import BackupStoreHook
from rehearsal_airflow.operators.base import ControlPlaneMixin, DrillStepOperator, key_of
from rehearsal_airflow.operators.postgres_restore import RESTORE_POOL


def _deferrable_default() -> bool:
    from airflow.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


class AssessClusterOperator(ControlPlaneMixin, DrillStepOperator):
    """Which members answer, their roles, the standbys' lag by the honest rule, whether the old primary still
    accepts writes, and what the archive holds. Refuses a run in ``drill`` mode that would change production's
    topology outside a drill environment."""

    template_fields: Sequence[str] = ("mode", "target")

    def __init__(self, *, mode: str, target: str = "production", **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode = mode
        self.target = target

    def run_step(self, context: Context) -> dict:
        if self.mode not in MODES:
            raise PreconditionFailed(f"unknown mode {self.mode!r}: use one of {', '.join(MODES)}")
        env = current_environment()
        if self.mode == "drill" and self.target == "production":
            env.require_drill_environment("run a drill that changes production's topology (target production)")
        store = BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        from rehearsal.backups.verification import list_archive

        platform = self.controlplane.platform()
        newest = manifest = last_seen = None
        archive_note = ""
        try:  # the archive informs the choice; an unreadable one must not block promoting a healthy standby
            listing = list_archive(store)
            newest = max(listing.segments) if listing.segments else None
            last_seen = listing.newest_modified.timestamp() if listing.newest_modified else None
            ids = store.backup_ids("base_backup")
            manifest = store.manifest("base_backup", ids[-1]) if ids else None
        except Exception as exc:  # noqa: BLE001 - recorded in the assessment's detail
            archive_note = f"; the archive could not be read ({type(exc).__name__}: {exc})"
        last_seen = max(filter(None, [last_seen, _last_ack_on(env, platform.primary_address())]), default=None)
        assessment = assess(platform, newest_archived_segment=newest,
                            wal_segment_size=manifest.wal_segment_size if manifest else None,
                            newest_base_backup=manifest.backup_id if manifest else None, primary_last_seen=last_seen)
        out = assessment.to_dict()
        out["detail"] = assessment.describe() + archive_note
        return out


def _last_ack_on(env, address: str) -> float | None:
    """The newest heartbeat the primary acknowledged, when the environment keeps a heartbeat log."""
    from rehearsal.heartbeat import read_acks

    path = env.heartbeat_path()
    if path is None or not path.exists():
        return None
    acks = [a.acked_at for a in read_acks(path, since=time.time() - 86400) if a.endpoint == address]
    return max(acks) if acks else None


class ChooseRecoveryPathOperator(ControlPlaneMixin, DrillStepOperator):
    """auto promotes a usable standby (streaming when the primary lives, replay within the RPO, not behind the
    archive), else PITR from backups; a forced promotion onto an unusable standby is refused naming its lag."""

    template_fields: Sequence[str] = ("path", "target", "assessment")

    def __init__(self, *, assessment: Any, path: str = "auto", target: str = "production",
                 component: str = "control_plane_api", **kwargs) -> None:
        super().__init__(**kwargs)
        self.assessment = assessment
        self.path = path
        self.target = target
        self.component = component

    def run_step(self, context: Context) -> dict:
        rpo = load_catalog().target(self.component).rpo.total_seconds()
        if self.target == "production" and getattr(self.controlplane.platform(), "primary_record", True) is None:
            raise PreconditionFailed("the control-plane connection names no discovery record: clients could not be "
                                     "switched to a new primary; add discovery_zone_id and discovery_record to its extra, "
                                     "or restore a copy with target=scratch")
        provisioner = current_environment().provisioner
        decision = choose_path(self.path, self.target, Assessment.from_dict(_plain(self.assessment)), rpo,
                               can_restore_into_production=provisioner not in (None, "", "none"))
        out = decision.to_dict()
        out["detail"] = f"{decision.path}: {decision.why}"
        return out


class FenceOldPrimaryOperator(ControlPlaneMixin, DrillStepOperator):
    """Before anything is promoted the old primary stops accepting writes: fenced by SQL when it answers
    (read-only, sessions ended, checked), recorded as unreachable when it does not. Skipped for a scratch
    target, which leaves production untouched."""

    template_fields: Sequence[str] = ("assessment", "target")

    def __init__(self, *, assessment: Any, target: str = "production", **kwargs) -> None:
        super().__init__(**kwargs)
        self.assessment = assessment
        self.target = target

    def run_step(self, context: Context) -> dict:
        if self.target == "scratch":
            raise AirflowSkipException("target scratch: production is not touched, nothing to fence")
        assessment = Assessment.from_dict(_plain(self.assessment))
        result = self.controlplane.platform().fence(assessment.primary.address)
        return {"address": result.address, "fenced": result.fenced, "reachable": result.reachable,
                "sessions_ended": result.sessions_ended, "detail": result.detail}


class RecoverPostgresOperator(ControlPlaneMixin, DrillStepOperator):
    """Promote the chosen standby, or PITR into a new cluster on this worker (a scratch area named after the run;
    neutralized so it cannot act like production). Returns the recovered primary as a record:
    ``{"method", "address", "cluster", "data_dir", "quarantine", ...}``.

    :param decision: the path choice (``ChooseRecoveryPathOperator.output``)
    :param assessment: the cluster as assessed (the old primary is checked again: never promote while it writes)
    :param recovery_target: PITR: ``latest``, an ISO time with timezone, or an LSN
    :param archived_before: PITR: use only what the archive held at this ISO time (a non-disruptive drill)
    :param base_backup: PITR: restore from this base backup (one chosen and verified earlier); default the newest
        that precedes the target
    :param deferrable: wait for the PITR's catch-up in the triggerer instead of a worker slot
    """

    template_fields: Sequence[str] = ("decision", "assessment", "recovery_target", "archived_before", "base_backup")

    def __init__(self, *, decision: Any, assessment: Any, recovery_target: str = "latest", archived_before: str = "",
                 base_backup: str = "", component: str = "control_plane_api", promote_timeout: int = 60, wait_timeout: int = 3600,
                 deferrable: bool | None = None, **kwargs) -> None:
        kwargs.setdefault("pool", RESTORE_POOL)
        super().__init__(**kwargs)
        self.decision = decision
        self.assessment = assessment
        self.recovery_target = recovery_target
        self.archived_before = archived_before
        self.base_backup = base_backup
        self.component = component
        self.promote_timeout = promote_timeout
        self.wait_timeout = wait_timeout
        self.deferrable = _deferrable_default() if deferrable is None else deferrable

    def run_step(self, context: Context) -> dict:
        decision = Decision(**_plain(self.decision))
        if decision.path == "promote_standby":
            return self._promote(decision)
        return self._restore(context)

    def _promote(self, decision: Decision) -> dict:
        from rehearsal.postgres.failover import promote

        platform = self.controlplane.platform()
        old = Assessment.from_dict(_plain(self.assessment)).primary.address
        # The lag was judged when the path was chosen, against the primary's last write; here only the old primary
        # is checked again (a fenced one answers but commits nothing).
        outcome = promote(platform.admin_endpoint(decision.standby), platform.admin_endpoint(old),
                          max_lag_seconds=float("inf"), timeout=self.promote_timeout)
        detail = (f"promoted {decision.standby} in {outcome['seconds']:.1f}s (timeline {outcome.get('timeline')})"
                  if outcome["promoted"] else f"{decision.standby} was already primary")
        return {**outcome, "method": "promote_standby", "address": decision.standby, "cluster": None, "data_dir": None,
                "quarantine": None, "detail": detail}

    def _destination(self, context: Context):
        from rehearsal.scratch import run_cluster

        env = current_environment()
        if not env.scratch_root:
            raise PreconditionFailed("the rehearsal_environment Variable sets no scratch_root for restored clusters")
        return run_cluster(Path(env.scratch_root) / key_of(context), f"{key_of(context)}-pitr")

    def _restore(self, context: Context) -> dict:
        from rehearsal.postgres.restore import RecoveryTarget, archive_cutoff, begin_pitr, restore_pitr

        env = current_environment()
        store = BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        dest = self._destination(context)
        production = [tuple(_split(self.controlplane.platform().primary_address()))]
        target, cutoff = RecoveryTarget.parse(self.recovery_target), archive_cutoff(self.archived_before)
        backup = self.base_backup if self.base_backup not in ("", "None", None) else None
        if not self.deferrable:
            return _restored(restore_pitr(store, target, dest, production, timeout=self.wait_timeout, archived_before=cutoff,
                                          backup_id=backup), dest)
        plan = begin_pitr(store, target, dest, production, timeout=self.wait_timeout, archived_before=cutoff,
                          backup_id=backup)
        if not isinstance(plan, dict):
            return _restored(plan, dest)
        context["ti"].xcom_push(key="pitr_plan", value=plan)
        from rehearsal_airflow.triggers.postgres import RecoveryCatchUpTrigger

        self.defer(trigger=RecoveryCatchUpTrigger(dest.name, str(dest.data_dir), dest.port, self.wait_timeout),
                   method_name="resume_after_catch_up", timeout=timedelta(seconds=self.wait_timeout + 60))

    def resume_after_catch_up(self, context: Context, event: dict) -> dict:
        from rehearsal.postgres.restore import complete_pitr

        return self.execute_resumed(context, lambda: self._complete(context, event, complete_pitr))

    def _complete(self, context: Context, event: dict, complete_pitr) -> dict:
        if event.get("status") == "timeout":
            raise RecoveryTimedOut(event["message"])
        if event.get("status") != "done":
            raise RestoreError(event.get("message", str(event)))
        dest = self._destination(context)
        plan = context["ti"].xcom_pull(task_ids=self.task_id, key="pitr_plan")
        return _restored(complete_pitr(dest, plan), dest)


def _restored(result, dest) -> dict:
    out = result.to_dict()
    out["address"] = result.address
    out["quarantine"] = str(dest.data_dir.parent / f"{dest.name}.quarantine")
    out["resources"] = [f"cluster:{dest.name}@{result.address}"]
    cutoff = result.archive.get("archived_before")
    out["detail"] = (f"pitr restore of {result.backup_id} to {result.target} at {result.address}, LSN {result.restored_lsn}, "
                     f"{result.timings.get('total', 0):.1f}s" + (f", from what the archive held at {cutoff}" if cutoff else "")
                     + (" (reused a finished restore)" if result.reused else ""))
    return out


def _plain(value: Any) -> dict:
    """An XCom record as a plain dict, without the step's ``detail``/``resources`` extras."""
    if not isinstance(value, dict):
        raise PreconditionFailed(f"expected a record from an earlier step, got {value!r}")
    return {k: v for k, v in value.items() if k not in ("detail", "resources", "checks")}


def _split(address: str) -> tuple[str, int]:
    from rehearsal.platform import split_address

    return split_address(address)

