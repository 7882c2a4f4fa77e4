"""The volume snapshot store (``rehearsal.snapshots``) on the local AWS endpoint, its replica in a second region and
its index backup; the snapshotter and the replicator that keep them (``python -m rehearsal_sandbox
run-snapshot-store``: one process, two threads); and an EBS mirror of every volume for the EBS path.

Buckets: the primary ``rehearsal-snapshots`` (us-east-1, versioned, with a replication configuration that moto
stores but never acts on: the replicator here is what copies), the replica ``rehearsal-snapshots-replica``
(us-west-2, created by a us-west-2 client: moto keeps the regions apart) and the index backup
``rehearsal-snapshots-index-backup``; each store under the prefix ``volumes``.

- snapshotter: every ``interval`` seconds (``SANDBOX_SNAPSHOT_INTERVAL``, 300; changed at run time through
  ``snapshot-interval.json`` in the sandbox dir, re-read every second) an incremental snapshot of every volume
  (parent: its newest), and an EBS snapshot of each volume's EBS mirror. It never writes into an unhealthy store: a
  missing primary bucket (never recreated here) or an index gone while chunks remain is logged and skipped.
- replicator: every 5 s, new chunk objects and then new index objects from the primary to the replica, and index
  objects to the index backup, by listing; it remembers what it copied and never deletes. The replica's lag is
  measurable (``rehearsal.snapshots.replica_lag``). Without a primary bucket it does nothing.

``up()`` takes a first snapshot of every volume and replicates it, so a fresh sandbox has restore points in every
copy.

Slice: ``{"bucket", "prefix", "replica_bucket", "replica_region", "index_backup_bucket", "default_interval",
"interval_file", "ebs_volumes": {"vol-1": "vol-0123..."}, "pid"}``.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import boto3
from botocore.config import Config

from rehearsal.snapshots import SnapshotRecord, SnapshotStore, StoreUnavailable, take_snapshot
from rehearsal.snapshots.ebs import DEFAULT_TAG_KEY, tag_specification
from rehearsal.snapshots.store import error_code
from rehearsal_sandbox.components.aws_endpoint import _CLIENT_LOCK
from rehearsal_sandbox.components.base import DaemonComponent, ok, progress

log = logging.getLogger(__name__)

BUCKET = "rehearsal-snapshots"
REPLICA_BUCKET = "rehearsal-snapshots-replica"
INDEX_BACKUP_BUCKET = "rehearsal-snapshots-index-backup"
PREFIX = "volumes"
REPLICA_REGION = "us-west-2"
DEFAULT_INTERVAL = 300.0
REPLICATE_EVERY = 5.0
REPLICATION_ROLE = "arn:aws:iam::123456789012:role/rehearsal-snapshot-replication"
DRILL_TAG = ("rehearsal:drill", "true")  # EBS volumes a drill creates: deleted by restore_environment
MISSING_BUCKET = ("NoSuchBucket", "404", "NotFound")


class UnhealthyStore(RuntimeError):
    """The primary store must not be written now (its bucket is missing, or its index is gone)."""


class SnapshotStoreComponent(DaemonComponent):
    name = "snapshot_store"
    daemon = "snapshot-store"

    # ------------------------------------------------------------------ clients and stores
    @property
    def bucket(self) -> str:
        return self.state.get("bucket", BUCKET)

    @property
    def prefix(self) -> str:
        return self.state.get("prefix", PREFIX)

    @property
    def replica_bucket(self) -> str:
        return self.state.get("replica_bucket", REPLICA_BUCKET)

    @property
    def replica_region(self) -> str:
        return self.state.get("replica_region", REPLICA_REGION)

    @property
    def index_backup_bucket(self) -> str:
        return self.state.get("index_backup_bucket", INDEX_BACKUP_BUCKET)

    @property
    def availability_zone(self) -> str:
        return f"{self.region}a"

    def client(self, service: str, region: str | None = None):
        """A client of the local AWS endpoint in ``region`` (this region's by default), with connections enough for
        snapshots and copies side by side."""
        with _CLIENT_LOCK:  # boto3's default session is not safe to create clients from two threads at once
            return boto3.client(service, endpoint_url=self.peer("aws_endpoint").url, region_name=region or self.region,
                                aws_access_key_id="testing", aws_secret_access_key="testing",
                                config=Config(connect_timeout=2, read_timeout=600, retries={"max_attempts": 2},
                                              max_pool_connections=32))

    def primary_store(self) -> SnapshotStore:
        return SnapshotStore(self.client("s3"), self.bucket, self.prefix)

    def replica_store(self) -> SnapshotStore:
        return SnapshotStore(self.client("s3", self.replica_region), self.replica_bucket, self.prefix)

    def index_backup_store(self) -> SnapshotStore:
        return SnapshotStore(self.client("s3"), self.index_backup_bucket, self.prefix)

    def ebs_volumes(self) -> dict[str, str]:
        """``{"vol-<id>": EBS volume id}``: each sandbox volume's EBS mirror."""
        return dict(self.state.get("ebs_volumes", {}))

    # ------------------------------------------------------------------ the interval
    @property
    def default_interval(self) -> float:
        return float(self.state.get("default_interval", DEFAULT_INTERVAL))

    @property
    def interval_file(self) -> Path:
        return Path(self.state.get("interval_file") or self.sandbox.dir / "snapshot-interval.json")

    def interval(self) -> float:
        """Seconds between the snapshotter's rounds: the interval file's, else the default."""
        try:
            return float(json.loads(self.interval_file.read_text())["interval"])
        except (OSError, ValueError, KeyError, TypeError):
            return self.default_interval

    def set_interval(self, seconds: float) -> float:
        """Set the snapshotter's interval (it re-reads it every second); returns the previous one."""
        seconds = float(seconds)
        if not seconds > 0:
            raise ValueError(f"a snapshot interval must be positive, not {seconds}")
        previous = self.interval()
        tmp = self.interval_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"interval": seconds}))
        tmp.replace(self.interval_file)
        return previous

    def reset_interval(self) -> bool:
        """Back to the default interval; whether it was another."""
        changed = self.interval() != self.default_interval
        self.interval_file.unlink(missing_ok=True)
        return changed

    # ------------------------------------------------------------------ buckets
    def primary_exists(self) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client("s3").head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if error_code(exc) in MISSING_BUCKET:
                return False
            raise
        return True

    @property
    def drill_marker(self) -> str | None:
        """The tag the drill environment recorded as the primary bucket's identity (``rehearsal.drills.targets``)."""
        return self.state.get("drill_marker")

    def create_primary(self) -> None:
        """The primary bucket, versioned, with its replication configuration (moto stores it, never acts on it), tagged
        with the drill environment's marker (its identity, which a drill checks before it deletes anything)."""
        self.primary_store().create_bucket(self.region)
        self.configure_primary()

    def configure_primary(self) -> None:
        """The primary bucket's settings as the platform keeps them: versioned, replicated, tagged (idempotent)."""
        from rehearsal.drills.targets import BUCKET_TAG

        s3 = self.client("s3")
        s3.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        if self.drill_marker:
            s3.put_bucket_tagging(Bucket=self.bucket, Tagging={"TagSet": [{"Key": BUCKET_TAG, "Value": self.drill_marker}]})
        s3.put_bucket_replication(Bucket=self.bucket, ReplicationConfiguration={
            "Role": REPLICATION_ROLE,
            "Rules": [{"ID": "volumes-to-replica", "Priority": 1, "Status": "Enabled", "Filter": {"Prefix": f"{self.prefix}/"},
                       "DeleteMarkerReplication": {"Status": "Disabled"},
                       "Destination": {"Bucket": f"arn:aws:s3:::{self.replica_bucket}"}}]})

    def health_problem(self) -> str | None:
        """Why the primary store must not be written now, or None: its bucket is missing, or its index is empty
        while chunks remain (the index was lost)."""
        store = self.primary_store()
        try:
            has_index = next(store.iter_objects(store.index_prefix()), None) is not None
            if has_index:
                return None
            has_chunks = next(store.iter_objects(f"{store.prefix}chunks/"), None) is not None
        except StoreUnavailable:
            return f"the primary bucket {self.bucket} does not exist (NoSuchBucket); not recreating it"
        if has_chunks:
            return f"the primary store {store.url} has chunks but no index: its index was lost"
        return None

    # ------------------------------------------------------------------ snapshots and replication
    def snapshot_now(self, workers: int = 4) -> dict[str, SnapshotRecord]:
        """An incremental snapshot of every volume now, side by side (parent: the volume's newest completed one),
        and an EBS snapshot of each volume's mirror. UnhealthyStore, before writing anything to the store, when
        its bucket is missing (never recreated here) or its index was lost."""
        problem = self.health_problem()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ebs-snapshot") as pool:
            ebs = pool.submit(self.ebs_snapshots)  # the EBS path does not depend on the store's health
            if problem:
                ebs.result()
                raise UnhealthyStore(problem)
            records = self.snapshot_volumes(self.primary_store(), workers)
            ebs.result()
        return records

    def snapshot_volumes(self, store: SnapshotStore, workers: int = 4) -> dict[str, SnapshotRecord]:
        """A snapshot of every volume into ``store``, ``workers`` volumes at a time (no health check: see
        ``snapshot_now``)."""
        volumes = self.peer("volumes")

        def one(volume_id: str) -> SnapshotRecord:
            return take_snapshot(store, volume_id, volumes.path(volume_id), parent=store.newest_restorable(volume_id),
                                 workers=4)

        ids = volumes.volume_ids()
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids))), thread_name_prefix="snapshot") as pool:
            return dict(zip(ids, pool.map(one, ids), strict=True))

    def ebs_snapshots(self) -> dict[str, str]:
        """An EBS snapshot of every volume's mirror, tagged ``rehearsal:volume=vol-<id>``: ``{volume: snapshot id}``."""
        ec2 = self.client("ec2")
        at = datetime.now(UTC).isoformat(timespec="seconds")
        return {volume_id: ec2.create_snapshot(VolumeId=ebs_id, Description=f"{volume_id} at {at}",
                                               TagSpecifications=tag_specification("snapshot", {DEFAULT_TAG_KEY: volume_id})
                                               )["SnapshotId"]
                for volume_id, ebs_id in self.ebs_volumes().items()}

    def replicator(self) -> Replicator:
        return Replicator(self.primary_store(), self.replica_store(), self.index_backup_store())

    def replicate_now(self) -> dict:
        """One replication pass (what the replicator does every 5 s): ``{"chunks": n, "index": n, "index_backup": n}``
        copied, or ``{"skipped": why}``."""
        return self.replicator().run_once()

    # ------------------------------------------------------------------ up / run / status / down
    def up(self) -> None:
        progress(f"creating the snapshot store s3://{self.bucket}/{PREFIX}/, its replica in {REPLICA_REGION} and its "
                 "index backup; the first snapshot of every volume")
        self.state.update({"bucket": BUCKET, "prefix": PREFIX, "replica_bucket": REPLICA_BUCKET,
                           "drill_marker": secrets.token_hex(8),
                           "replica_region": REPLICA_REGION, "index_backup_bucket": INDEX_BACKUP_BUCKET,
                           "default_interval": float(os.environ.get("SANDBOX_SNAPSHOT_INTERVAL", DEFAULT_INTERVAL)),
                           "interval_file": str(self.sandbox.dir / "snapshot-interval.json")})
        self.interval_file.unlink(missing_ok=True)
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ebs") as pool:
            ebs = pool.submit(self._create_ebs_mirrors)  # beside the first snapshot: EC2 and S3 do not wait on each other
            replica = self.client("s3", self.replica_region)
            self.replica_store().create_bucket(self.replica_region)
            replica.put_bucket_versioning(Bucket=self.replica_bucket, VersioningConfiguration={"Status": "Enabled"})
            self.index_backup_store().create_bucket(self.region)
            self.create_primary()
            records = self.snapshot_volumes(_NewStore(self.client("s3"), self.bucket, self.prefix), workers=8)
            ebs.result()
        self.sandbox.save()
        copied = self.replicate_now()
        progress(f"snapshotted {len(records)} volumes ({sum(r.bytes_uploaded for r in records.values()) / 2**20:.0f} MiB) "
                 f"and replicated {copied.get('chunks', 0)} chunks in {time.monotonic() - started:.1f}s")
        self.spawn_sandbox_command()

    def _create_ebs_mirrors(self) -> None:
        """Each volume's EBS mirror (in the region's first zone, tagged ``rehearsal:volume=vol-<id>``), and its first
        EBS snapshot."""
        ec2 = self.client("ec2")
        mirrors = {}
        for volume_id, record in self.peer("volumes").records().items():
            tags = {DEFAULT_TAG_KEY: volume_id, "Name": record["name"]}
            mirrors[volume_id] = ec2.create_volume(
                AvailabilityZone=self.availability_zone, Size=max(1, -(-record["bytes"] // 1024**3)), VolumeType="gp3",
                TagSpecifications=tag_specification("volume", tags))["VolumeId"]
        self.state["ebs_volumes"] = mirrors
        self.ebs_snapshots()

    def run(self) -> None:
        """The daemon's body: the snapshotter and the replicator, each on its own thread."""
        from rehearsal_sandbox.services.common import stop_event

        stopping = stop_event()
        threads = [threading.Thread(target=self._snapshotter, args=(stopping,), name="snapshotter"),
                   threading.Thread(target=self._replicator, args=(stopping,), name="replicator")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _snapshotter(self, stopping: threading.Event) -> None:
        last = time.monotonic()  # up() took the first round
        while not stopping.wait(1.0):
            interval = self.interval()
            if time.monotonic() - last < interval:
                continue
            last = time.monotonic()
            try:
                records = self.snapshot_now()
                log.info("snapshot round (interval %.0fs): %s", interval,
                         ", ".join(f"{v} {r.snapshot_id} ({r.bytes_uploaded} bytes new)" for v, r in records.items()))
            except UnhealthyStore as exc:
                log.warning("snapshot round skipped: %s", exc)
            except Exception:  # noqa: BLE001 - logged; the next round tries again
                log.exception("snapshot round failed")

    def _replicator(self, stopping: threading.Event) -> None:
        replicator = None
        while not stopping.wait(REPLICATE_EVERY):
            try:
                replicator = replicator or self.replicator()
                copied = replicator.run_once()
                if copied.get("skipped") or any(copied.values()):
                    log.info("replication pass: %s", copied)
            except Exception:  # noqa: BLE001 - logged; the next pass tries again
                log.exception("replication pass failed")

    def status(self) -> dict[str, dict]:
        if "bucket" not in self.state:
            return {self.name: ok(False, "not created")}
        if not self.alive():
            return self.daemon_status("not running")
        try:
            exists = self.primary_exists()
        except Exception as exc:  # noqa: BLE001 - the endpoint does not answer
            return {self.name: ok(False, f"cannot reach s3://{self.bucket}: {exc}"[:300])}
        if not exists:
            return {self.name: ok(False, f"{self.daemon} pid {self.pid}, the primary bucket {self.bucket} does not exist")}
        return self.daemon_status(f"s3://{self.bucket}/{self.prefix}/, replica s3://{self.replica_bucket} "
                                  f"({self.replica_region}), interval {self.interval():.0f}s")

    def down(self) -> None:
        self.stop()
        self.interval_file.unlink(missing_ok=True)  # the buckets and EBS volumes go with the endpoint


class _NewStore(SnapshotStore):
    """The primary store the moment its bucket was created: no chunk can be in it yet, so the first snapshot skips the
    HEAD before each PUT (a PUT of a chunk already there would rewrite the same bytes anyway)."""

    def has_chunk(self, digest: str) -> bool:
        return False


class Replicator:
    """Copies what the primary holds and its copies lack, by listing: chunks first, then index objects (to the replica
    and to the index backup), so a copied index entry never names a chunk its copy lacks. It remembers what it
    copied (primed from the copies' listings), never overwrites a key it copied and never deletes."""

    def __init__(self, primary: SnapshotStore, replica: SnapshotStore, index_backup: SnapshotStore,
                 workers: int = 8) -> None:
        self.primary, self.replica, self.index_backup = primary, replica, index_backup
        self.workers = workers
        self.copied: dict[str, set[str]] | None = None  # bucket -> keys known there

    def _keys(self, store: SnapshotStore, prefix: str) -> set[str]:
        return {item["Key"] for item in store.iter_objects(prefix)}

    def run_once(self) -> dict:
        try:
            index = self._keys(self.primary, self.primary.index_prefix())  # the index first: its chunks are listed after
            chunks = self._keys(self.primary, f"{self.primary.prefix}chunks/")
        except StoreUnavailable as exc:
            return {"skipped": str(exc)}
        if self.copied is None:
            self.copied = {self.replica.bucket: self._keys(self.replica, self.replica.prefix),
                           self.index_backup.bucket: self._keys(self.index_backup, self.index_backup.index_prefix())}
        return {"chunks": self._copy(self.replica, sorted(chunks)), "index": self._copy(self.replica, sorted(index)),
                "index_backup": self._copy(self.index_backup, sorted(index))}

    def _copy(self, target: SnapshotStore, keys: list[str]) -> int:
        """Copy the keys the target lacks (server side: one call each); returns how many were copied."""
        known = self.copied[target.bucket]
        todo = [key for key in keys if key not in known]

        def copy(key: str) -> str:
            target.calls.add("copy_object")
            target.s3.copy_object(Bucket=target.bucket, Key=key, CopySource={"Bucket": self.primary.bucket, "Key": key})
            return key

        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="replicate") as pool:
            for key in pool.map(copy, todo):
                known.add(key)
        return len(todo)

