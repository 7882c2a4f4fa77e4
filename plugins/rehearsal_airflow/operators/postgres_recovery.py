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
    """auto promotes a usable standby (caught up by WAL position, or streaming when the primary lives with replay
    within the RPO; not behind the archive), else PITR from backups. A forced promotion onto an unusable standby is
    refused naming why, except in incident mode with ``approve=wait``: then a person accepts the named risk at the
    approval."""

    template_fields: Sequence[str] = ("path", "target", "assessment", "mode", "approve")

    def __init__(self, *, assessment: Any, path: str = "auto", target: str = "production",
                 component: str = "control_plane_api", mode: str = "drill", approve: str = "auto", **kwargs) -> None:
        super().__init__(**kwargs)
        self.assessment = assessment
        self.path = path
        self.target = target
        self.component = component
        self.mode, self.approve = mode, approve

    def run_step(self, context: Context) -> dict:
        rpo = load_catalog().target(self.component).rpo.total_seconds()
        if self.target == "production" and getattr(self.controlplane.platform(), "primary_record", True) is None:
            raise PreconditionFailed("the control-plane connection names no discovery record: clients could not be "
                                     "switched to a new primary; add discovery_zone_id and discovery_record to its extra, "
                                     "or restore a copy with target=scratch")
        from rehearsal.platform import RestoreHosts, load_provisioner

        env = current_environment()
        placeable = isinstance(load_provisioner(env.provisioner, environment=env), RestoreHosts)
        decision = choose_path(self.path, self.target, Assessment.from_dict(_plain(self.assessment)), rpo,
                               can_restore_into_production=placeable,
                               person_approves=self.mode == "incident" and self.approve == "wait")
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
    """Promote the chosen standby, or PITR into a new cluster. The copy runs on a database host the environment's
    provisioner gives it (``RestoreHosts``): the provisioner starts the restore there and this step drives it over
    the network only, so clients can reach it and a triggerer on another machine can wait for it. Only a copy for a
    scratch target may run on this worker, when no provisioner can place one (it never serves clients). Either way
    it is neutralized so it cannot act like production. Returns the recovered primary as a record:
    ``{"method", "address", "cluster", "data_dir", "quarantine", "host", ...}``.

    :param decision: the path choice (``ChooseRecoveryPathOperator.output``)
    :param assessment: the cluster as assessed (the old primary is checked again: never promote while it writes)
    :param recovery_target: PITR: ``latest``, an ISO time with timezone, or an LSN
    :param archived_before: PITR: use only what the archive held at this ISO time (a non-disruptive drill)
    :param base_backup: PITR: restore from this base backup (one chosen and verified earlier); default the newest
        that precedes the target
    :param target: ``production`` (the copy may become the primary) or ``scratch``
    :param deferrable: wait for the PITR's catch-up in the triggerer instead of a worker slot (a copy on a host only)
    """

    template_fields: Sequence[str] = ("decision", "assessment", "recovery_target", "archived_before", "base_backup",
                                      "target")

    def __init__(self, *, decision: Any, assessment: Any, recovery_target: str = "latest", archived_before: str = "",
                 base_backup: str = "", component: str = "control_plane_api", target: str = "production",
                 promote_timeout: int = 60, wait_timeout: int = 3600, deferrable: bool | None = None, **kwargs) -> None:
        kwargs.setdefault("pool", RESTORE_POOL)
        super().__init__(**kwargs)
        self.decision = decision
        self.assessment = assessment
        self.recovery_target = recovery_target
        self.archived_before = archived_before
        self.base_backup = base_backup
        self.component = component
        self.target = target
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

    def _request(self, context: Context):
        from rehearsal.postgres.restore import RecoveryTarget, RestoreRequest, archive_cutoff

        RecoveryTarget.parse(self.recovery_target)  # refused here, naming it, before any host is asked for
        cutoff = archive_cutoff(self.archived_before)
        backup = self.base_backup if self.base_backup not in ("", "None", None) else None
        purpose = "scratch" if self.target == "scratch" else "production"
        return RestoreRequest(run_key=key_of(context), purpose=purpose, recovery_target=self.recovery_target,
                              archived_before=cutoff.isoformat() if cutoff else None, backup_id=backup,
                              timeout=float(self.wait_timeout))

    def _restore(self, context: Context) -> dict:
        from rehearsal.platform import RestoreHosts, load_provisioner

        env = current_environment()
        provisioner = load_provisioner(env.provisioner, environment=env)
        request = self._request(context)
        if isinstance(provisioner, RestoreHosts):
            placed = provisioner.restore_database(request.to_dict())
            context["ti"].xcom_push(key="placed_restore", value=placed)
            if self.deferrable:
                from rehearsal_airflow.triggers.postgres import RecoveryCatchUpTrigger

                self.defer(trigger=RecoveryCatchUpTrigger(placed["address"], self.controlplane_conn_id, self.aws_conn_id,
                                                          self.wait_timeout, name=placed["cluster"],
                                                          stop_conditions=self.stop_conditions_now(context),
                                                          probe_log=current_environment().probe_log),
                           method_name="resume_after_catch_up", timeout=timedelta(seconds=self.wait_timeout + 60))
            from rehearsal.postgres.restore import wait_recovered

            wait_recovered(self._admin_at(placed["address"]), self.wait_timeout, name=placed["cluster"],
                           check=self.stop_check(context))
            return self._finish(placed)
        if request.purpose == "production":
            raise PreconditionFailed(f"refusing to restore into production: {NO_RESTORE_HOST.format(env=env.name)}")
        return self._restore_on_worker(context, request, env)

    def _restore_on_worker(self, context: Context, request, env) -> dict:
        """A scratch copy on this worker's own loopback (no provisioner can place one): it serves no client, so the
        wait stays here (a triggerer elsewhere could not reach it)."""
        from rehearsal.postgres.restore import RecoveryTarget, archive_cutoff, restore_pitr
        from rehearsal.scratch import run_cluster

        if not env.scratch_root:
            raise PreconditionFailed("the rehearsal_environment Variable sets no scratch_root for restored clusters")
        store = BackupStoreHook(env.backup_bucket, env.backup_cluster, self.aws_conn_id).store
        dest = run_cluster(Path(env.scratch_root) / key_of(context), f"{key_of(context)}-pitr")
        production = [tuple(_split(self.controlplane.platform().primary_address()))]
        result = restore_pitr(store, RecoveryTarget.parse(request.recovery_target), dest, production,
                              timeout=self.wait_timeout, archived_before=archive_cutoff(request.archived_before),
                              backup_id=request.backup_id)
        out = _restored(result, str(dest.data_dir.parent / f"{dest.name}.quarantine"))
        out["host"] = "this worker (scratch only)"
        return out

    def _admin_at(self, address: str):
        return self.controlplane.platform().admin_endpoint(address)

    def _finish(self, placed: dict) -> dict:
        from rehearsal.postgres.cluster import LocalCluster
        from rehearsal.postgres.restore import complete_pitr

        host, port = _split(placed["address"])
        dest = LocalCluster(placed["cluster"], Path(placed["data_dir"]), port, host)
        result = complete_pitr(dest, placed["plan"], admin=self._admin_at(placed["address"]))
        out = _restored(result, str(Path(placed["data_dir"]).parent / f"{placed['cluster']}.quarantine"))
        out["host"] = placed["host"]
        out["detail"] += f" on host {placed['host']}, placed by the provisioner"
        return out

    def resume_after_catch_up(self, context: Context, event: dict) -> dict:
        return self.execute_resumed(context, lambda: self._complete(context, event))

    def _complete(self, context: Context, event: dict) -> dict:
        if event.get("status") == "stopped":  # a stop condition tripped while the triggerer waited
            self._stop(context, event["message"])
        if event.get("status") == "timeout":
            raise RecoveryTimedOut(event["message"])
        if event.get("status") != "done":
            raise RestoreError(event.get("message", str(event)))
        placed = context["ti"].xcom_pull(task_ids=self.task_id, key="placed_restore")
        return self._finish(placed)


NO_RESTORE_HOST = ("a restored cluster that production will use needs a database host clients can reach, and environment "
                   "{env!r} names no provisioner that places one (RestoreHosts); a copy on the Airflow worker would send "
                   "every client to its own loopback. Provide one: set `provisioner` in the rehearsal_environment Variable "
                   "to a class with restore_database/database_hosts/release_run, or restore a copy with target=scratch "
                   "and move it onto a host by hand")


def _restored(result, quarantine: str) -> dict:
    out = result.to_dict()
    out["address"] = result.address
    out["quarantine"] = quarantine
    out["resources"] = [f"cluster:{result.cluster}@{result.address}"]
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

