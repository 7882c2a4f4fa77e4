"""The sandbox's hands on hosts: a ``Provisioner`` for runbooks, and the fault injector for drills.

The environment Variable names this class (``provisioner``); runbook operators load it by that name and never
import the sandbox. Everything else a runbook does to the sandbox goes through its connections, as it would
against a real platform.
"""
from __future__ import annotations

import fcntl
import functools
import shutil
import threading
import time
from pathlib import Path

from rehearsal.environment import Environment
from rehearsal.platform import split_address
from rehearsal_sandbox.components.control_plane import CONTROL_PLANE_SERVICES, SERVICES, kill_all
from rehearsal_sandbox.components.snapshot_store import DRILL_TAG
from rehearsal_sandbox.hosts import REGIONS
from rehearsal_sandbox.sandbox import Sandbox

API_MODES = ("read-write", "read-only", "frozen")
STORE_SCOPES = ("bucket", "prefix")


_HELD = threading.local()


def _state_locked(method):
    """Runs holding the sandbox's state lock (``<state dir>/state.lock``): ``state.json`` is read, changed and written
    whole, and two drills at once (two tasks, two processes) must not lose each other's hosts and copies. Reentrant
    within a thread."""

    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        depth = getattr(_HELD, "depth", 0)
        if depth:
            _HELD.depth = depth + 1
            try:
                return method(self, *args, **kwargs)
            finally:
                _HELD.depth -= 1
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "state.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            _HELD.depth = 1
            try:
                return method(self, *args, **kwargs)
            finally:
                _HELD.depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    return locked


class SandboxProvisioner:
    def __init__(self, environment: Environment) -> None:
        if not environment.sandbox_state:
            raise ValueError(f"environment {environment.name!r} names no sandbox_state for the sandbox provisioner")
        self.state_dir = Path(environment.sandbox_state)

    def _sandbox(self) -> Sandbox:
        return Sandbox(self.state_dir)  # re-read every time: runbooks and drills change the topology

    # ------------------------------------------------------------------ database hosts
    @_state_locked
    def adopt_primary(self, address: str, data_dir: str | None = None) -> list[str]:
        """Record the recovered primary in the inventory: a promoted standby, or a copy restored on a host this
        provisioner placed (``restore_database``). Any other address is refused, naming it: nothing else is a host
        of the platform."""
        sb = self._sandbox()
        db = sb.controlplane_db
        old = db.primary_name
        if sb.primary.address == address and db.role(old) == "primary":
            return [f"{sb.primary.name} at {address} is already the primary"]
        known = db.named_at(address)
        if known is None or db.role(known) not in ("standby", "restoring"):
            raise ValueError(f"{address} is not a database host of the sandbox that may become the primary "
                             f"(hosts: {', '.join(self.database_hosts())})")
        db.mark_lost(old)  # replaced: it will be destroyed, as a real host would be reimaged
        staged = db.cluster(known).data_dir.parent / f"{known}.wal"  # a restore's staged WAL, on its host
        shutil.rmtree(staged, ignore_errors=True)
        sb.adopt_primary(known)
        return [f"recorded {known} at {address} as the primary; the old primary {old} is gone"]

    @_state_locked
    def rebuild_standby(self, primary_address: str) -> list[str]:
        sb = self._sandbox()
        if sb.primary.address != primary_address:
            raise ValueError(f"the sandbox's primary is {sb.primary.name} at {sb.primary.address}, not {primary_address}")
        standby = sb.rebuild_standby()
        return [f"new streaming standby {standby.name} on host {sb.controlplane_db.clusters()[standby.name].get('host_name')} "
                f"at {standby.address}"]

    @_state_locked
    def restore_database(self, request: dict) -> dict:
        """A point-in-time restore on a new database host (``db-<n>``, its own address): the base backup and WAL
        fetched from the backup store by the host itself, neutralized, started in recovery. A retry of the same run
        gets its host back (still recovering or done); a host left half-made is wiped and restored again.

        :param request: ``RestoreRequest`` as a dict (``run_key``, ``purpose``, ``recovery_target``, ...)
        :returns: ``PlacedRestore`` as a dict: the host, its address, the plan ``complete_pitr`` needs"""
        from rehearsal.postgres.restore import (
            PlacedRestore,
            RecoveryTarget,
            RestoreRequest,
            archive_cutoff,
            begin_pitr,
        )

        req = RestoreRequest(**request)
        if req.purpose not in ("production", "scratch"):
            raise ValueError(f"unknown restore purpose {req.purpose!r} (production or scratch)")
        sb = self._sandbox()
        db = sb.controlplane_db
        cluster, made = db.run_copy(req.run_key, req.purpose)
        record = db.clusters()[cluster.name]
        placed = {"host": record.get("host_name", cluster.name), "address": cluster.address, "cluster": cluster.name,
                  "data_dir": str(cluster.data_dir)}
        if not made and record.get("plan") and cluster.is_running():
            return PlacedRestore(**placed, plan=record["plan"]).to_dict()
        production = [split_address(sb.primary.address)]
        plan = begin_pitr(sb.store(), RecoveryTarget.parse(req.recovery_target), cluster, production, timeout=req.timeout,
                          archived_before=archive_cutoff(req.archived_before), backup_id=req.backup_id or None)
        if not isinstance(plan, dict):  # only a restore finished on this machine leaves a result to reuse
            raise RuntimeError(f"{cluster.name}: a finished local restore was found where a host's restore was expected")
        sb = self._sandbox()
        sb.controlplane_db.clusters()[cluster.name]["plan"] = plan
        sb.save()
        return PlacedRestore(**placed, plan=plan).to_dict()

    def database_hosts(self) -> list[str]:
        """The address of every database host in the inventory: members, and copies placed for runs."""
        sb = self._sandbox()
        return [sb.controlplane_db.cluster(name).address for name in sb.controlplane_db.clusters()]

    @_state_locked
    def release_run(self, run_key: str) -> list[str]:
        """Destroy the copies a run asked for that production did not adopt, and give their hosts back."""
        sb = self._sandbox()
        db = sb.controlplane_db
        done = []
        for name in db.run_copies(run_key):
            cluster = db.cluster(name)
            host = db.clusters()[name].get("host_name")
            db.forget_cluster(name)
            done.append(f"cluster:{name}@{cluster.address} (host {host} released)")
        if done:
            sb.save()
        return done

    def inventory_data_dirs(self) -> set[str]:
        return {str(i["data_dir"]) for i in self._sandbox().clusters.values()}

    # ------------------------------------------------------------------ services (docs/control-plane-services.md)
    @_state_locked
    def start_service(self, name: str, mode: str | None = None, region: str | None = None) -> list[str]:
        """Start ``api``, ``scheduler``, ``reconciler`` (or ``agents``, ``prober``, ``load``) unless it runs, at its
        address; ``mode`` is the API's (``read-write``, ``read-only``, ``frozen``), set on a running API too.

        ``region``: start the control-plane service there (the standby control plane's, installed); from then on the
        control plane runs in that region (the sandbox's clients find it through its SRV record, which the runbook
        points there)."""
        sb = self._sandbox()
        if mode is not None and name != "api":
            raise ValueError(f"only the API has a mode, not {name}")
        if mode is not None and mode not in API_MODES:
            raise ValueError(f"unknown API mode {mode!r} (modes: {', '.join(API_MODES)})")
        done: list[str] = []
        if region and region != sb.control_plane_region and name in CONTROL_PLANE_SERVICES:
            if region not in sb.components() and region not in REGIONS:
                raise ValueError(f"no region {region!r}")
            done.append(f"the control plane now runs in {region} (it ran in {sb.control_plane_region})")
            sb.set_control_plane_region(region)
        service = sb.components(region)[name] if region and name in CONTROL_PLANE_SERVICES else sb.service(name)
        return done + (service.start(mode) if name == "api" else service.start())

    @_state_locked
    def stop_service(self, name: str) -> list[str]:
        """Stop a service (TERM, KILL after 10 s); a stopped service is left as is."""
        service = self._sandbox().service(name)
        if not service.alive():
            return [f"{name} is not running"]
        pid = service.pid
        service.stop()
        return [f"stopped {name} (pid {pid})"]

    def service_running(self, name: str) -> bool:
        """Its process runs and answers ``GET /healthz``."""
        return self._sandbox().service(name).running()

    # ------------------------------------------------------------------ volumes and their snapshots
    def volume_path(self, volume_id: str) -> str:
        """Where the volume ``vol-<id>`` lives on its host."""
        return str(self._sandbox().volumes.path(volume_id))

    @_state_locked
    def restore_volume_in_place(self, volume_id: str, snapshot_key: str, run_key: str) -> dict:
        """On the volume's host: the snapshot restored into a folder of this run's beside the volume (every chunk's
        checksum checked), verified byte for byte against the snapshot, then swapped in with one rename each way,
        the previous bytes kept beside. A retry of a run that already swapped only verifies."""
        from rehearsal.snapshots import restore_snapshot, verify_restored

        sb = self._sandbox()
        store = sb.snapshot_store.primary_store()
        final = sb.volumes.path(volume_id)
        host = sb.volumes.records()[volume_id].get("host")
        dest = final.with_name(f"{final.name}.restoring-{run_key}")
        kept = final.with_name(f"{final.name}.before-restore-{run_key}")
        entry = store.read_snapshot(snapshot_key)
        started = time.monotonic()
        if kept.exists():  # this run swapped already: the volume is the restored one
            verify_restored(entry, final).raise_if_failed()
            return {"path": str(final), "host": host, "previous_bytes_kept_at": str(kept), "bytes": entry.total_bytes,
                    "files": len(entry.files), "seconds": time.monotonic() - started, "throughput_mb_s": None,
                    "retried": True}
        shutil.rmtree(dest, ignore_errors=True)  # a failed earlier try of this run
        record = restore_snapshot(store, snapshot_key, dest, volume_id=volume_id)
        verify_restored(entry, dest).raise_if_failed()  # before anything of the volume is touched
        if final.exists():
            final.rename(kept)
        dest.rename(final)
        return {"path": str(final), "host": host, "previous_bytes_kept_at": str(kept) if kept.exists() else None,
                "bytes": record.bytes, "files": record.file_count, "seconds": time.monotonic() - started,
                "throughput_mb_s": record.throughput_mb_s, "retried": False}

    def verify_volume_on_host(self, volume_id: str, snapshot_key: str) -> list[dict]:
        """The volume's bytes on its host against the snapshot, as named checks."""
        from rehearsal.snapshots import verify_restored

        sb = self._sandbox()
        entry = sb.snapshot_store.primary_store().read_snapshot(snapshot_key)
        checks = verify_restored(entry, sb.volumes.path(volume_id))
        return [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks.checks]

    def set_snapshot_interval(self, seconds: float) -> list[str]:
        """The snapshotter's interval (it takes effect within a second); ``restore_environment`` sets it back."""
        store = self._sandbox().snapshot_store
        previous = store.set_interval(seconds)
        return [f"set the snapshot interval to {float(seconds):g}s (was {previous:g}s)"]

    def snapshot_interval(self) -> float:
        return self._sandbox().snapshot_store.interval()

    # ------------------------------------------------------------------ drills only
    @_state_locked
    def kill_primary(self, address: str, lose_disks: bool = True) -> dict:
        """The fault: SIGKILL the primary at ``address`` and lose its disks (data directory and WAL spool)."""
        sb = self._sandbox()
        if sb.primary.address != address:
            raise ValueError(f"the sandbox's primary is {sb.primary.address}, not {address}; not injecting")
        return sb.kill_primary(lose_data=lose_disks)

    @_state_locked
    def create_snapshot_bucket(self) -> list[str]:
        """The snapshot store's primary bucket recreated as the platform configures it (versioned, replicated)."""
        component = self._sandbox().snapshot_store
        component.create_primary()
        return [f"created s3://{component.bucket}, versioned, with its replication configuration"]

    # ------------------------------------------------------------------ regions
    @_state_locked
    def region_down(self, region: str) -> dict:
        """The fault: a whole region lost (``Sandbox.region_down``)."""
        return self._sandbox().region_down(region)

    def region_down_since(self, region: str) -> str | None:
        """When the region was taken down, while it is down (a fault whose injecting task died with the region)."""
        return self._sandbox().region_down_since(region)

    @_state_locked
    def region_up(self, region: str) -> dict:
        return self._sandbox().region_up(region)

    @_state_locked
    def bring_up_fleet(self, region: str, minimum: int) -> dict:
        """The region's hosts back for the data plane: its agents and its edge (the sandbox's fleet of that region is
        what comes back; ``minimum`` is checked, not exceeded)."""
        sb = self._sandbox()
        agents, edge = sb.components(region)["agents"], sb.components(region)["edge"]
        done = agents.start() + edge.start()
        down = sb.sandbox_state.data.setdefault("regions_down", [])
        if region in down:
            down.remove(region)
            sb.save()
        hosts = sorted(agents.hosts)
        if len(hosts) < minimum:
            raise RuntimeError(f"only {len(hosts)} host(s) in {region}, fewer than the {minimum} asked for")
        return {"hosts": hosts, "edge": edge.url, "detail": "; ".join(done)}

    @_state_locked
    def kill_services(self, names: list[str]) -> dict:
        """The fault: SIGKILL these services at once. ``{"killed": {name: pid}, "killed_at": unix time}``, the time
        when every one was really dead (a service that was not running is not in ``killed``)."""
        sb = self._sandbox()
        killed, killed_at = kill_all([sb.service(name) for name in names])
        return {"killed": killed, "killed_at": killed_at}

    def delete_snapshot_store(self, scope: str = "bucket") -> dict:
        """The fault: the primary snapshot store lost. ``bucket``: every object (every version) and then the bucket
        itself; ``prefix``: only the index (the objects under ``<prefix>/index/``, as ``aws s3 rm --recursive``
        would: delete markers on the versioned bucket). The replica and the index backup are untouched.
        ``{"deleted_at": unix time when it was all gone, "scope", "objects_deleted", "bucket"}``."""
        if scope not in STORE_SCOPES:
            raise ValueError(f"unknown scope {scope!r} (scopes: {', '.join(STORE_SCOPES)})")
        from botocore.exceptions import ClientError

        from rehearsal.snapshots.store import error_code

        component = self._sandbox().snapshot_store
        s3, store = component.client("s3"), component.primary_store()
        bucket = store.bucket
        if scope == "prefix":
            deleted = _delete_keys(s3, bucket, [{"Key": o["Key"]} for o in store.iter_objects(store.index_prefix())])
        else:
            deleted = 0
            for attempt in range(3):  # a snapshot round may write between the last delete and the bucket's
                deleted += _delete_keys(s3, bucket, list(_versions(s3, bucket)))
                try:
                    s3.delete_bucket(Bucket=bucket)
                    break
                except ClientError as exc:
                    if attempt == 2 or error_code(exc) != "BucketNotEmpty":
                        raise
        return {"deleted_at": time.time(), "scope": scope, "objects_deleted": deleted, "bucket": bucket}

    @_state_locked
    def restore_environment(self) -> list[str]:
        """Make the sandbox whole after a drill, whatever the runbook got to: lost disks deleted, the inventory
        following what runs, a streaming standby and a base backup of the current timeline; every service
        running, the API read-write, the reconciler at its default rate, no agent faults; the primary snapshot
        store whole (rebuilt from its replica and index backup when its bucket or part of its index is gone), the
        snapshotter running at its default interval, no EBS volume a drill created."""
        try:
            done = self._restore_regions() + self._restore_database()
        finally:
            try:
                services = self._restore_services()
            finally:
                snapshots = self._restore_snapshot_store()
        return done + services + snapshots

    def _restore_snapshot_store(self) -> list[str]:
        from rehearsal.snapshots import rebuild_store
        from rehearsal.snapshots.ebs import delete_drill_volumes

        sb = self._sandbox()
        component = sb.snapshot_store
        primary, replica, backup = component.primary_store(), component.replica_store(), component.index_backup_store()
        done: list[str] = []
        if component.reset_interval():  # first: no snapshot round at a drill's pace while the store is rebuilt
            done.append(f"set the snapshot interval back to {component.default_interval:g}s")
        rebuild = not component.primary_exists()
        if rebuild:
            component.create_primary()
            done.append(f"created the primary snapshot bucket {primary.bucket} again (versioned, replication configured)")
        else:
            lacking = _lacking(primary, replica, backup)
            if lacking:
                done.append(f"the primary snapshot store {primary.url} lacks {lacking}")
                rebuild = True
        if rebuild:
            record = rebuild_store(replica, backup, primary)
            record.raise_if_failed()
            done.append(f"rebuilt {primary.url} from {replica.url} and {backup.url}: {record.chunks_copied} chunk(s) "
                        f"copied, {record.chunks_already_present} present, {record.index_entries} index entries")
        if not component.alive():
            component.spawn_sandbox_command()
            done.append(f"started the snapshotter and replicator (pid {component.pid})")
        cleanup = delete_drill_volumes(component.client("ec2"), *DRILL_TAG)
        if cleanup.deleted:
            done.append(f"deleted EBS volumes a drill created: {', '.join(cleanup.deleted)}")
        if cleanup.skipped_in_use:
            done.append(f"left EBS volumes a drill created that are attached: {', '.join(cleanup.skipped_in_use)}")
        return done

    def _restore_regions(self) -> list[str]:
        """Every region back (a region drill took one down): its data plane runs again, its old database stays
        fenced (the new standby goes there, see ``_restore_database``). The control plane stays where the drill
        moved it: the environment is whole the other way round."""
        sb = self._sandbox()
        done: list[str] = []
        for region in sb.regions_down():
            up = sb.region_up(region)
            done += [f"{region} back: {d}" for d in up["done"]]
        return done

    def _restore_services(self) -> list[str]:
        sb = self._sandbox()
        done: list[str] = []
        for name in SERVICES:
            service = sb.service(name)
            if not service.running():
                if service.alive():  # runs but does not answer: replaced
                    service.stop()
                    done.append(f"stopped {name}, which did not answer")
                done += service.start()
            if name in CONTROL_PLANE_SERVICES and service.publish_record():
                done.append(f"pointed {name}'s record at {service.url} ({sb.control_plane_region})")
        api = sb.control_plane_api
        if api.mode().get("mode") != "read-write":
            api.set_mode("read-write", "restored after a drill")
            done.append("set the API's mode to read-write")
        reconciler = sb.reconciler
        if reconciler.metrics().get("rate") != reconciler.default_rate:
            reconciler.set_rate(reconciler.default_rate)
            done.append(f"set the reconciler's rate back to {reconciler.default_rate}/s")
        cleared = sb.host_agents.clear_faults()
        if cleared:
            done.append(f"cleared fault flags on {', '.join(cleared)}")
        return done

    def _restore_database(self) -> list[str]:
        sb = self._sandbox()
        done = [f"deleted lost data {p}" for p in sb.discard_lost_data()]
        done += sb.heal()
        sb = self._sandbox()
        standby = sb.standby
        same_region = (standby is not None and sb.region_of(standby.host) == sb.region_of(sb.primary.host)
                       and sb.controlplane_db.region_for("standby") != sb.region_of(sb.primary.host))
        if same_region:  # built while the other region was down: the standby control plane belongs there
            done.append(f"the standby {standby.name} is in the primary's region: a new one goes to "
                        f"{sb.controlplane_db.region_for('standby')}")
        if standby is None or same_region or not standby.is_running() or not _streams(sb, standby):
            standby, backups = sb.rebuild_standby_and_back_up(dump=False)
            done.append(f"new streaming standby {standby.name} at {standby.address}")
            done += [f"backup {b}" for b in backups.values()]
        return done


def _versions(s3, bucket: str):
    """Every object version and delete marker in the bucket, as ``delete_objects`` takes them."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            yield {"Key": item["Key"], "VersionId": item["VersionId"]}


def _delete_keys(s3, bucket: str, objects: list[dict]) -> int:
    """``delete_objects`` in batches of 1000; how many were deleted."""
    for start in range(0, len(objects), 1000):
        answer = s3.delete_objects(Bucket=bucket, Delete={"Objects": objects[start:start + 1000], "Quiet": True})
        if answer.get("Errors"):
            raise RuntimeError(f"s3://{bucket}: could not delete {answer['Errors'][:3]}")
    return len(objects)


def _lacking(primary, replica, backup) -> str:
    """What the primary store lacks that a copy holds (index entries of the replica or the index backup, chunks of
    the replica), in words; empty when nothing."""
    from rehearsal.snapshots import StoreUnavailable

    index = {k.relative_key for k in primary.index_entries()}
    copies = set()
    for store in (replica, backup):
        try:
            copies |= {k.relative_key for k in store.index_entries()}
        except StoreUnavailable:
            continue
    chunks = {c.digest for c in primary.iter_chunks()}
    try:
        replica_chunks = {c.digest for c in replica.iter_chunks()}
    except StoreUnavailable:
        replica_chunks = set()
    parts = []
    if copies - index:
        parts.append(f"{len(copies - index)} of {len(copies)} index entries its copies hold")
    if replica_chunks - chunks:
        parts.append(f"{len(replica_chunks - chunks)} chunk(s) its replica holds")
    return " and ".join(parts)


def _streams(sb: Sandbox, standby) -> bool:
    from rehearsal.postgres.connection import connect

    try:
        with connect(sb.endpoint(standby, "admin").with_(dbname="postgres"), connect_timeout=2) as conn:
            row = conn.execute("SELECT pg_is_in_recovery(), (SELECT status FROM pg_stat_wal_receiver)").fetchone()
        return bool(row[0]) and row[1] == "streaming"
    except Exception:  # noqa: BLE001 - a standby that does not answer does not stream
        return False
