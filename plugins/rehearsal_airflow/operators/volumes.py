"""The volume-restore runbook's steps, thin over ``rehearsal.snapshots`` and ``rehearsal.runbooks.volume_restore``:
choose restore points, approve an in-place restore, restore (object store or EBS), verify, clean up."""
from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Context

from rehearsal.catalog import load_catalog
from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, VerificationFailed
from rehearsal.platform import load_provisioner
from rehearsal.runbooks.volume_restore import check_target, needs_approval, parse_volume_ids, restore_point
from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.hooks.snapshot_store import SnapshotStoreHook
from rehearsal_airflow.operators.approval import RecoveryApprovalOperator
from rehearsal_airflow.operators.base import DrillStepOperator, key_of
from rehearsal_airflow.operators.guard import DrillGuardOperator

COMPONENT = "volume_restore"


def _volume_target(component: str = COMPONENT):
    return load_catalog().target(component)


class StoreMixin:
    aws_conn_id = "aws_default"

    def snapshots(self) -> SnapshotStoreHook:
        return SnapshotStoreHook(current_environment(), self.aws_conn_id)


class ChooseRestorePointsOperator(StoreMixin, DrillStepOperator):
    """Per volume: the snapshot asked for (it must be restorable) or the newest restorable one, and its age
    against the volume RPO. On the EBS backend: the volume's newest completed EBS snapshot, by tag."""

    template_fields: Sequence[str] = ("mode", "volume_ids", "snapshot_id", "target", "backend")

    def __init__(self, *, mode: str, volume_ids: Any, snapshot_id: str = "", target: str = "scratch",
                 backend: str = "object_store", **kwargs) -> None:
        super().__init__(**kwargs)
        self.mode, self.volume_ids, self.snapshot_id, self.target, self.backend = mode, volume_ids, snapshot_id, target, backend

    def run_step(self, context: Context) -> dict:
        check_target(self.target, self.backend)
        if self.target == "in_place" and self.mode == "drill":
            current_environment().require_drill_environment("rehearse an in-place volume restore (it replaces the "
                                                            "volume's bytes)")
        ids = parse_volume_ids(self.volume_ids)
        rpo = _volume_target().rpo.total_seconds()
        now = datetime.now(UTC)
        snapshot = self.snapshot_id if self.snapshot_id not in ("", "None", None) else None
        if snapshot and len(ids) > 1:
            raise PreconditionFailed(f"snapshot_id {snapshot} names one snapshot; {len(ids)} volumes were asked for")
        if self.backend == "ebs":
            points = [self._ebs_point(v, snapshot, now, rpo) for v in ids]
        else:
            store = self.snapshots().primary
            points = [restore_point(store, v, snapshot, now, rpo).to_dict() for v in ids]
        stale = [p["volume_id"] for p in points if not p["within_rpo"]]
        return {"points": points, "target": self.target, "backend": self.backend,
                "detail": "; ".join(f"{p['volume_id']} from {p['snapshot_id']} ({p['why']}, {p['age_seconds']:.0f}s old)"
                                    for p in points) + (f"; OLDER THAN THE RPO: {', '.join(stale)}" if stale else "")}

    def _ebs_point(self, volume_id: str, snapshot: str | None, now: datetime, rpo: float) -> dict:
        from rehearsal.snapshots.ebs import describe_snapshot, find_snapshot, require_completed

        ec2 = self.snapshots().ec2()
        found = describe_snapshot(ec2, snapshot) if snapshot else find_snapshot(ec2, volume_id)
        require_completed(found)
        created = datetime.fromisoformat(found.start_time) if found.start_time else now
        age = (now - created).total_seconds()
        return {"volume_id": volume_id, "snapshot_id": found.snapshot_id, "key": found.snapshot_id,
                "created_at": created.isoformat(), "age_seconds": age, "rpo_seconds": rpo,
                "within_rpo": age <= rpo, "size_gb": found.size_gb,
                "why": "asked for" if snapshot else "the newest completed EBS snapshot tagged with the volume"}


class VolumeRestoreApprovalOperator(RecoveryApprovalOperator):
    """An in-place restore in an incident waits once for a person (it replaces the volume's bytes)."""

    template_fields: Sequence[str] = (*RecoveryApprovalOperator.template_fields, "points")

    def __init__(self, *, points: Any, **kwargs) -> None:
        kwargs.setdefault("subject", "Volume restore: approve the in-place restore")
        super().__init__(decision={}, assessment={}, **kwargs)
        self.points = points

    def needed(self) -> str | None:
        if needs_approval(self.mode, self.approve, self.target):
            return None
        if self.target != "in_place":
            return f"target {self.target}: nothing in place is replaced"
        return super().needed()

    def request(self) -> tuple[str, str]:
        lines = [f"- **{p['volume_id']}** from snapshot `{p['snapshot_id']}` ({p['why']}), taken {p['created_at']}, "
                 f"{p['age_seconds'] / 3600:.1f} h old" for p in self.points["points"]]
        body = "\n".join(["Restoring **in place** replaces each volume's current bytes with the snapshot's (the current "
                          "bytes are kept beside it until the run's report).", "", *lines, "",
                          "Approve to proceed; Reject to end the run with nothing changed."])
        return f"Volume restore in place: {', '.join(p['volume_id'] for p in self.points['points'])}", body


class SnapshotRestoreOperator(StoreMixin, DrillStepOperator):
    """Restore each chosen volume. ``object_store``: every chunk fetched and checked into a scratch folder of the
    run, or in place (restored beside the volume, then swapped in; the old bytes kept beside it). ``ebs``: a new
    volume from the snapshot (copied across regions when ``region`` differs), waited for, tagged with the run,
    attached when asked; its content is not checked on this backend. Idempotent on retry; never writes to a source
    snapshot."""

    template_fields: Sequence[str] = ("points", "mode", "region", "instance_id")

    def __init__(self, *, points: Any, mode: str, region: str = "", instance_id: str = "", wait_timeout: float = 3600,
                 deferrable: bool | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.points, self.mode, self.region, self.instance_id = points, mode, region, instance_id
        self.wait_timeout = wait_timeout
        from rehearsal_airflow.operators.postgres_recovery import _deferrable_default

        self.deferrable = _deferrable_default() if deferrable is None else deferrable

    def run_step(self, context: Context) -> dict:
        chosen = self.points
        if chosen["backend"] == "ebs":
            created = [self._ebs_create(context, p) for p in chosen["points"]]
            if self.deferrable:  # the wait for "available" holds no worker slot
                from rehearsal_airflow.triggers.ebs import EbsVolumesAvailableTrigger

                context["ti"].xcom_push(key="ebs_created", value=created)
                self.defer(trigger=EbsVolumesAvailableTrigger([(c["region"], c["ebs_volume_id"]) for c in created],
                                                              self.aws_conn_id, self.wait_timeout),
                           method_name="resume_ebs_available", timeout=timedelta(seconds=self.wait_timeout + 60))
            from rehearsal.snapshots.ebs import wait_volume_available

            for c in created:
                wait_volume_available(self.snapshots().ec2(c["region"]), c["ebs_volume_id"], self.wait_timeout, poll=1.0)
            return self._summary([self._ebs_finish(c) for c in created], "ebs", chosen["target"])
        restores = [self._object_store(context, p, chosen["target"]) for p in chosen["points"]]
        return self._summary(restores, chosen["backend"], chosen["target"])

    @staticmethod
    def _summary(restores: list[dict], backend: str, target: str) -> dict:
        total = sum(r.get("bytes") or 0 for r in restores)
        seconds = sum(r["seconds"] for r in restores)
        return {"restores": restores, "backend": backend, "target": target,
                "resources": [r["resource"] for r in restores if r.get("resource")],
                "detail": "; ".join(r["detail"] for r in restores)
                          + (f" (total {total / 1e6:.1f} MB in {seconds:.1f}s)" if total else "")}

    def _object_store(self, context: Context, point: dict, target: str) -> dict:
        if target == "in_place":
            return self._in_place(context, point)
        from rehearsal.snapshots import restore_snapshot

        env = current_environment()
        if not env.scratch_root:
            raise PreconditionFailed("the rehearsal_environment Variable sets no scratch_root for restored volumes")
        dest = Path(env.scratch_root) / key_of(context) / "volumes" / point["volume_id"]
        started = time.monotonic()
        record = restore_snapshot(self.snapshots().primary, point["key"], dest, volume_id=point["volume_id"])
        seconds = time.monotonic() - started
        return {"volume_id": point["volume_id"], "snapshot_id": point["snapshot_id"], "key": point["key"],
                "path": str(dest), "on_host": None, "previous_bytes_kept_at": None, "bytes": record.bytes,
                "files": record.file_count, "seconds": seconds, "throughput_mb_s": record.throughput_mb_s,
                "content_checked": True, "resource": f"dir:{dest}",
                "detail": f"{point['volume_id']} restored from {point['snapshot_id']} into {dest}: {record.file_count} "
                          f"files, {record.bytes / 1e6:.1f} MB in {seconds:.2f}s ({record.throughput_mb_s:.0f} MB/s), "
                          "every chunk checked"}

    def _in_place(self, context: Context, point: dict) -> dict:
        """On the volume's own host, through the provisioner: restored beside the volume, verified byte for byte
        before the swap, the previous bytes kept. The worker never writes a host's disk."""
        from rehearsal.platform import VolumeHosts

        env = current_environment()
        provisioner = load_provisioner(env.provisioner, environment=env)
        if not isinstance(provisioner, VolumeHosts):
            raise PreconditionFailed(f"an in-place restore of volume {point['volume_id']} runs on the volume's own host, "
                                     f"and environment {env.name!r} names no provisioner with hands on volume hosts "
                                     "(restore_volume_in_place); restore into scratch instead")
        done = provisioner.restore_volume_in_place(point["volume_id"], point["key"], key_of(context))
        kept = done.get("previous_bytes_kept_at")
        rate = f" ({done['throughput_mb_s']:.0f} MB/s)" if done.get("throughput_mb_s") else ""
        return {"volume_id": point["volume_id"], "snapshot_id": point["snapshot_id"], "key": point["key"],
                "path": done["path"], "on_host": done.get("host"), "previous_bytes_kept_at": kept, "bytes": done["bytes"],
                "files": done["files"], "seconds": done["seconds"], "throughput_mb_s": done.get("throughput_mb_s"),
                "content_checked": True, "resource": None,
                "detail": f"{point['volume_id']} restored in place on host {done.get('host')} from {point['snapshot_id']} "
                          f"into {done['path']}: {done['files']} files, {done['bytes'] / 1e6:.1f} MB in "
                          f"{done['seconds']:.2f}s{rate}, verified byte for byte before the swap"
                          + (f"; the previous bytes kept at {kept}" if kept else "")}

    def _ebs_create(self, context: Context, point: dict) -> dict:
        """The volume from the snapshot (a cross-region copy first, awaited), not yet waited for."""
        from rehearsal.snapshots.ebs import copy_snapshot, create_volume_from_snapshot, wait_snapshot_completed

        hook = self.snapshots()
        source = hook.ec2()
        source_region = source.meta.region_name
        region = self.region or source_region
        ec2 = hook.ec2(region)
        started = time.time()
        tags = {"rehearsal:volume": point["volume_id"], "rehearsal:run": key_of(context), "rehearsal:mode": self.mode,
                "rehearsal:drill": "true" if self.mode == "drill" else "false"}
        existing = ec2.describe_volumes(Filters=[{"Name": f"tag:{k}", "Values": [v]} for k, v in
                                                 (("rehearsal:run", key_of(context)), ("rehearsal:volume", point["volume_id"]))])
        snapshot_id, copied = point["snapshot_id"], None
        if existing["Volumes"]:  # a retry: the volume this run created already
            volume_id = existing["Volumes"][0]["VolumeId"]
        else:
            if region != source_region:
                earlier = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
                    {"Name": "tag:rehearsal:run", "Values": [key_of(context)]},
                    {"Name": "tag:rehearsal:volume", "Values": [point["volume_id"]]}])["Snapshots"]
                if earlier:  # a retry: this run's copy exists already
                    snapshot_id = earlier[0]["SnapshotId"]
                else:
                    copied = copy_snapshot(ec2, source_region, snapshot_id, f"rehearsal restore of {point['volume_id']}",
                                           tags=tags, ec2_source=source)
                    snapshot_id = copied.snapshot_id
                wait_snapshot_completed(ec2, snapshot_id, self.wait_timeout, poll=1.0)
            volume_id = create_volume_from_snapshot(ec2, snapshot_id, f"{region}a", tags).volume_id
        return {"volume_id": point["volume_id"], "snapshot_id": point["snapshot_id"], "from_snapshot": snapshot_id,
                "ebs_volume_id": volume_id, "region": region, "copied_snapshot": copied.snapshot_id if copied else None,
                "size_gb": point.get("size_gb"), "tags": tags, "started_at_unix": started, "bytes": None,
                "content_checked": False, "resource": f"ebs:{region}/{volume_id}",
                "content_reason": "an EBS volume's bytes are not readable from here (and the local endpoint holds none)"}

    def _ebs_finish(self, created: dict) -> dict:
        """Once available: attached when asked; how long it took."""
        attached = None
        if self.instance_id:
            self.snapshots().ec2(created["region"]).attach_volume(VolumeId=created["ebs_volume_id"],
                                                                  InstanceId=self.instance_id, Device="/dev/sdf")
            attached = self.instance_id
        seconds = time.time() - created["started_at_unix"]
        return {**created, "attached_to": attached, "seconds": seconds,
                "detail": f"{created['volume_id']}: EBS volume {created['ebs_volume_id']} in {created['region']} from "
                          f"{created['from_snapshot']} available after {seconds:.1f}s"
                          + (f", attached to {attached}" if attached else "") + "; content NOT checked on this backend"}

    def resume_ebs_available(self, context: Context, event: dict) -> dict:
        def finish() -> dict:
            if event.get("status") != "done":
                raise RecoveryTimedOut(event.get("message", str(event)))
            created = context["ti"].xcom_pull(task_ids=self.task_id, key="ebs_created")
            return self._summary([self._ebs_finish(c) for c in created], "ebs", self.points["target"])

        return self.execute_resumed(context, finish)


class VerifyRestoredVolumesOperator(StoreMixin, DrillStepOperator):
    """Byte for byte (object store): every file's chunks against the index, sizes, no file missing or extra. EBS:
    size, tags, state and zone. Reports each volume's restore time against the 4 h RTO and snapshot age against the
    24 h RPO (``rto_seconds``/``rpo_seconds``: the worst volume)."""

    template_fields: Sequence[str] = ("restored", "points")

    def __init__(self, *, restored: Any, points: Any, targets_critical: bool = False, **kwargs) -> None:
        super().__init__(**kwargs)
        self.restored, self.points, self.targets_critical = restored, points, targets_critical

    def run_step(self, context: Context) -> dict:
        target = _volume_target()
        ages = {p["volume_id"]: p["age_seconds"] for p in self.points["points"]}
        checks, failed, volumes = [], [], []
        for r in self.restored["restores"]:
            if self.restored["backend"] == "ebs":
                named = self._verify_ebs(r)
            else:
                named = self._verify_files(r)
            checks += named
            failed += [f"{r['volume_id']}: {c['name']}: {c['detail']}" for c in named
                       if not c["ok"] and c.get("verdict") != "unverified"]
            rto_ok, rpo_ok = r["seconds"] <= target.rto.total_seconds(), ages[r["volume_id"]] <= target.rpo.total_seconds()
            volumes.append({"volume_id": r["volume_id"], "restore_seconds": round(r["seconds"], 3),
                            "snapshot_age_seconds": round(ages[r["volume_id"]], 1), "rto_met": rto_ok, "rpo_met": rpo_ok,
                            "content_checked": r["content_checked"], "throughput_mb_s": r.get("throughput_mb_s")})
            checks.append({"name": f"rto:{r['volume_id']}", "ok": rto_ok, "critical": self.targets_critical,
                           "detail": f"restored in {r['seconds']:.1f}s, target {target.rto.total_seconds():.0f}s"})
            checks.append({"name": f"rpo:{r['volume_id']}", "ok": rpo_ok, "critical": self.targets_critical,
                           "detail": f"snapshot {ages[r['volume_id']]:.0f}s old, target {target.rpo.total_seconds():.0f}s"})
        if failed:
            from rehearsal.checks import Check

            raise VerificationFailed("restored volumes", [Check(f, False, "") for f in failed])
        unverified = [v["volume_id"] for v in volumes if not v["content_checked"]]
        degraded = [{"step": self.task_id, "item": f"content of {v} unverified",
                     "what_to_do": "its bytes were never read (an EBS volume): attach it to an instance and compare its "
                                   "files with the snapshot's checksums before trusting it"} for v in unverified]
        return {"volumes": volumes, "checks": checks, "verified_at": time.time(), "degraded": degraded,
                "unverified": unverified,
                "rto_seconds": max(v["restore_seconds"] for v in volumes),
                "rpo_seconds": max(v["snapshot_age_seconds"] for v in volumes),
                "evidence": {"volumes": volumes,
                             "measurement_includes": "restore time: fetching, checking and writing every chunk (object "
                                                     "store) or creating the volume until available (EBS); RPO: the "
                                                     "restored snapshot's age when the run chose it"},
                "detail": "; ".join(f"{v['volume_id']} " + ("byte for byte" if v["content_checked"] else
                                                            "size, tags and state; content UNVERIFIED (not read)")
                                    + f", restored in {v['restore_seconds']:.1f}s, snapshot {v['snapshot_age_seconds']:.0f}s old"
                                    for v in volumes)}

    def _verify_files(self, r: dict) -> list[dict]:
        """Scratch: the worker's own copy, read here. In place: read on the volume's host, by its provisioner."""
        from rehearsal.snapshots import verify_restored

        if r.get("on_host"):
            from rehearsal.platform import VolumeHosts

            env = current_environment()
            provisioner = load_provisioner(env.provisioner, environment=env)
            if not isinstance(provisioner, VolumeHosts):
                raise PreconditionFailed(f"volume {r['volume_id']} was restored on host {r['on_host']}; verifying it needs "
                                         f"the provisioner that has hands there (environment {env.name!r} names none)")
            checks = provisioner.verify_volume_on_host(r["volume_id"], r["key"])
        else:
            entry = self.snapshots().primary.read_snapshot(r["key"])
            checks = [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in verify_restored(entry, Path(r["path"])).checks]
        return [{"name": f"{c['name']}:{r['volume_id']}", "ok": c["ok"], "detail": c["detail"], "critical": True}
                for c in checks]

    def _verify_ebs(self, r: dict) -> list[dict]:
        from rehearsal.snapshots.ebs import verify_volume

        ec2 = self.snapshots().ec2(r["region"])
        size = r.get("size_gb")
        result = verify_volume(ec2, r["ebs_volume_id"], size, r["tags"], f"{r['region']}a")
        out = [{"name": f"{c.name}:{r['volume_id']}", "ok": c.ok, "detail": c.detail, "critical": True}
               for c in result.checks.checks]
        # Never counted as verified: the bytes were not read. Not a failure of the restore either: it is unverified.
        out.append({"name": f"content:{r['volume_id']}", "ok": False, "critical": False, "verdict": "unverified",
                    "detail": f"UNVERIFIED, not read: {r['content_reason']}"})
        return out


class CleanUpRestoredVolumesOperator(StoreMixin, DrillStepOperator):
    """A drill's teardown of what its restores created: the run's scratch folders and the EBS volumes tagged with
    the run (always runs)."""

    runs_after_abort = True
    template_fields: Sequence[str] = ("region",)

    def __init__(self, *, region: str = "", **kwargs) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.region = region

    def run_step(self, context: Context) -> dict:
        from rehearsal.snapshots.ebs import delete_drill_volumes

        env = current_environment()
        cleaned = []
        if env.scratch_root:
            folder = Path(env.scratch_root) / key_of(context) / "volumes"
            if folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
                cleaned.append(f"dir:{folder}")
        hook = self.snapshots()
        regions = dict.fromkeys([hook.ec2().meta.region_name, *([self.region] if self.region else [])])
        for region in regions:
            ec2 = hook.ec2(region)
            gone = delete_drill_volumes(ec2, "rehearsal:run", key_of(context))
            cleaned += [f"ebs:{region}/{v}" for v in gone.deleted]
            copies = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:rehearsal:run",
                                                                         "Values": [key_of(context)]}])["Snapshots"]
            for snap in copies:  # cross-region copies this run made (never a source snapshot: those carry no run tag)
                ec2.delete_snapshot(SnapshotId=snap["SnapshotId"])
                cleaned.append(f"ebs-snapshot:{region}/{snap['SnapshotId']}")
        return {"resources_cleaned": cleaned, "detail": f"cleaned {len(cleaned)} resource(s): " + ", ".join(cleaned)}


class VolumeDrillGuardOperator(StoreMixin, DrillGuardOperator):
    """A volume drill's guard: mode and environment (a disruptive one needs a drill environment and a provisioner
    that can inject its fault), the run recorded and, when disruptive, the environment's lock taken last; and which
    volumes the drill restores (a random sample, the largest, and every volume marked critical, each with why),
    pushed as XCom ``volume_ids``."""

    template_fields: Sequence[str] = ("mode", "volume_ids")

    def __init__(self, *, volume_ids: str = "", sample_size: int = 1, **kwargs) -> None:
        kwargs.setdefault("path", "auto")
        kwargs.setdefault("component", COMPONENT)
        super().__init__(**kwargs)
        self.volume_ids, self.sample_size = volume_ids, sample_size

    def run_step(self, context: Context) -> dict:
        from rehearsal import results
        from rehearsal.runbooks.volume_restore import drill_sample
        from rehearsal_airflow.hooks.results_db import results_endpoint
        from rehearsal_airflow.operators.base import now_iso
        from rehearsal_airflow.operators.snapshot_store import volume_inventory

        env = self.check_mode_and_environment()
        if self.volume_ids not in ("", None, "None"):
            picked = [{"volume_id": v, "why": "asked for"} for v in parse_volume_ids(self.volume_ids)]
        else:
            store = self.snapshots().primary
            inventory = volume_inventory(self.controlplane)
            for v in inventory:
                newest = store.newest_restorable(v["volume_id"])
                v["size_bytes"] = store.read_snapshot(newest).total_bytes if newest else 0
            seed = int(hashlib.sha256(context["run_id"].encode()).hexdigest()[:8], 16)  # the same on a retry
            picked = drill_sample(inventory, self.sample_size, seed=seed)
        started_at = now_iso()
        results.record_start(results_endpoint(), context["dag"].dag_id, context["run_id"], self.scenario, self.mode,
                             env.name, self.component, started_at)
        lock_note = self._take_lock(context, env)
        if self.mode == "disruptive" and self.stop_conditions:
            results.set_stop_conditions(results_endpoint(), env.name, context["dag"].dag_id, context["run_id"],
                                        self.stop_conditions)
        ids = [p["volume_id"] for p in picked]
        context["ti"].xcom_push(key="volume_ids", value=",".join(ids))
        return {"mode": self.mode, "environment": env.name, "run_key": key_of(context), "started_at": started_at,
                "volumes": picked, "volume_ids": ",".join(ids), "lock": lock_note,
                "detail": f"{self.mode} drill on {env.name}: " + "; ".join(f"{p['volume_id']} ({p['why']})" for p in picked)
                          + (f"; {lock_note}" if lock_note else "")}
