"""The sandbox's customer volumes and their snapshot store, on the session's sandbox: real bytes, exactly their rows,
restore points in the primary, the replica and the index backup, and the store made whole after a drill deleted it.

Every test leaves the primary store whole, the snapshotter at its default interval and no drill EBS volume.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from rehearsal.environment import Environment
from rehearsal.postgres.connection import connect
from rehearsal.snapshots import replica_lag, restore_snapshot, store_health, tree_digest
from rehearsal.snapshots.ebs import create_volume_from_snapshot, describe_volume, find_snapshot
from rehearsal_sandbox.components.snapshot_store import UnhealthyStore
from rehearsal_sandbox.provisioner import SandboxProvisioner

pytestmark = pytest.mark.sandbox


@pytest.fixture
def provisioner(sandbox):
    return SandboxProvisioner(Environment.from_mapping(json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])))


@pytest.fixture
def environment():
    return json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def relative_index(store) -> set[str]:
    return {k.relative_key for k in store.index_entries()}


def restores_byte_for_byte(sandbox, store, volume_id: str, dest) -> None:
    newest = store.newest_restorable(volume_id)
    assert newest is not None, f"{volume_id} has no completed snapshot in {store.url}"
    done = restore_snapshot(store, newest, dest)
    assert done.content_checked and done.volume_id == volume_id
    assert tree_digest(dest) == sandbox.volumes.digest(volume_id)


def test_volumes_hold_real_bytes_and_the_table_holds_exactly_them(sandbox, environment):
    volumes = sandbox.volumes
    ids = volumes.volume_ids()
    assert len(ids) == 6 and all(v.startswith("vol-") for v in ids)
    sizes = volumes.sizes()
    large, small = ids[0], ids[1]
    assert sizes[large] >= 48 * 2**20 and all(0 < sizes[v] < 16 * 2**20 for v in ids[1:])
    assert sum(1 for p in volumes.path(small).rglob("*") if p.is_file()) == 1_500
    assert volumes.critical() == [large, small]
    assert environment["volumes_root"] == str(volumes.root)
    assert all(volumes.path(v) == volumes.root / v and volumes.path(v).is_dir() for v in ids)
    with connect(sandbox.endpoint(sandbox.primary)) as conn:
        rows = conn.execute("SELECT 'vol-' || v.id, v.name, v.critical, v.path, h.hostname, d.app_id IS NOT NULL "
                            "FROM volumes v JOIN hosts h ON h.id = v.host_id LEFT JOIN deployments d ON d.app_id = v.app_id "
                            "ORDER BY v.id").fetchall()
        version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
    records = volumes.records()
    assert [r[0] for r in rows] == ids
    for volume_id, name, critical, path, host, deployed in rows:
        assert (name, critical, path, host) == (records[volume_id]["name"], volume_id in volumes.critical(),
                                                str(volumes.path(volume_id)), records[volume_id]["host"])
        assert host.startswith("agent-") and deployed
    assert version == "20261129_0008_ipv4_allocations"


def test_every_volume_has_a_completed_snapshot_that_restores_byte_for_byte(sandbox, environment, tmp_path):
    store = sandbox.snapshot_store.primary_store()
    assert (environment["snapshot_bucket"], environment["snapshot_prefix"]) == ("rehearsal-snapshots", "volumes")
    assert store.url == "s3://rehearsal-snapshots/volumes/"
    for volume_id in sandbox.volumes.volume_ids():
        restores_byte_for_byte(sandbox, store, volume_id, tmp_path / volume_id)


def test_the_replica_and_the_index_backup_follow_the_primary(sandbox, environment):
    component = sandbox.snapshot_store
    assert (environment["snapshot_replica_bucket"], environment["snapshot_replica_region"],
            environment["snapshot_index_backup_bucket"]) == ("rehearsal-snapshots-replica", "us-west-2",
                                                             "rehearsal-snapshots-index-backup")
    replica, backup = component.replica_store(), component.index_backup_store()
    assert replica.s3.get_bucket_location(Bucket=replica.bucket)["LocationConstraint"] == "us-west-2"
    rules = component.client("s3").get_bucket_replication(Bucket=component.bucket)["ReplicationConfiguration"]["Rules"]
    assert rules[0]["Destination"]["Bucket"] == "arn:aws:s3:::rehearsal-snapshots-replica"
    taken = component.snapshot_now()
    assert set(taken) == set(sandbox.volumes.volume_ids())
    assert all(r.state == "completed" and r.bytes_uploaded == 0 and r.parent for r in taken.values())  # incremental
    copied = component.replicate_now()  # the replicator's own pass (every 5 s) may have copied them first
    assert "skipped" not in copied, copied
    for volume_id, record in taken.items():
        assert replica.newest_restorable(volume_id).snapshot_id == record.snapshot_id
        assert backup.newest_restorable(volume_id).snapshot_id == record.snapshot_id
    lag = replica_lag(component.primary_store(), replica)
    assert lag.ok and lag.lag_seconds is not None and lag.lag_seconds < 5, lag.detail
    assert store_health(component.primary_store(), replica, backup, check_references=False).ok


def test_a_deleted_bucket_is_not_recreated_by_the_snapshotter_and_is_rebuilt_by_restore_environment(sandbox, provisioner,
                                                                                                      tmp_path):
    component = sandbox.snapshot_store
    log = sandbox.dir / "snapshot-store.log"
    seen = log.stat().st_size
    fault = provisioner.delete_snapshot_store("bucket")
    try:
        assert fault["scope"] == "bucket" and fault["bucket"] == "rehearsal-snapshots" and fault["objects_deleted"] > 150
        assert fault["deleted_at"] <= time.time() and not component.primary_exists()
        assert provisioner.set_snapshot_interval(1) == ["set the snapshot interval to 1s (was 300s)"]
        assert provisioner.snapshot_interval() == 1.0
        wait_for(lambda: "snapshot round skipped: the primary bucket rehearsal-snapshots does not exist"
                 in log.read_text()[seen:], 10, "the snapshotter to skip the missing bucket")
        assert not component.primary_exists()
        assert not sandbox.status()["us-east-1/snapshot_store"]["ok"]
        with pytest.raises(UnhealthyStore, match="does not exist"):
            component.snapshot_now()
    finally:
        done = provisioner.restore_environment()
    assert "set the snapshot interval back to 300s" in done
    assert any(line.startswith("rebuilt s3://rehearsal-snapshots/volumes/ from s3://rehearsal-snapshots-replica/") for line in done)
    assert provisioner.snapshot_interval() == 300.0
    primary, replica = component.primary_store(), component.replica_store()
    assert relative_index(replica) <= relative_index(primary)
    assert {c.digest for c in replica.iter_chunks()} <= {c.digest for c in primary.iter_chunks()}
    volume = sandbox.volumes.volume_ids()[2]
    restores_byte_for_byte(sandbox, primary, volume, tmp_path / volume)
    assert sandbox.is_up(), sandbox.status()


def test_a_deleted_index_stops_the_snapshots_and_is_rebuilt_by_restore_environment(sandbox, provisioner, tmp_path):
    component = sandbox.snapshot_store
    primary = component.primary_store()
    entries = len(relative_index(primary))
    fault = provisioner.delete_snapshot_store("prefix")
    try:
        assert (fault["scope"], fault["objects_deleted"]) == ("prefix", entries)
        assert relative_index(primary) == set() and next(primary.iter_chunks(), None) is not None
        with pytest.raises(UnhealthyStore, match="has chunks but no index"):
            component.snapshot_now()
    finally:
        done = provisioner.restore_environment()
    assert any("lacks" in line and "index entries its copies hold" in line for line in done), done
    assert relative_index(component.replica_store()) <= relative_index(primary)
    volume = sandbox.volumes.volume_ids()[3]
    restores_byte_for_byte(sandbox, primary, volume, tmp_path / volume)


def test_every_volume_has_a_tagged_ebs_mirror_and_snapshots_and_drill_volumes_are_cleaned_up(sandbox, provisioner):
    component = sandbox.snapshot_store
    ec2 = component.client("ec2")
    mirrors = component.ebs_volumes()
    assert set(mirrors) == set(sandbox.volumes.volume_ids())
    for volume_id, ebs_id in mirrors.items():
        volume = describe_volume(ec2, ebs_id)
        assert volume.availability_zone == "us-east-1a" and volume.tags["rehearsal:volume"] == volume_id
        snapshot = find_snapshot(ec2, volume_id)
        assert snapshot.state == "completed" and snapshot.volume_id == ebs_id
    drill = create_volume_from_snapshot(ec2, find_snapshot(ec2, sandbox.volumes.volume_ids()[0]).snapshot_id, "us-east-1a",
                                        {"rehearsal:drill": "true", "rehearsal:volume": "vol-restored"})
    assert provisioner.volume_path(sandbox.volumes.volume_ids()[0]) == str(sandbox.volumes.path(sandbox.volumes.volume_ids()[0]))
    with pytest.raises(ValueError, match="no volume 'vol-nope'"):
        provisioner.volume_path("vol-nope")
    assert f"deleted EBS volumes a drill created: {drill.volume_id}" in provisioner.restore_environment()
    assert set(component.ebs_volumes().values()) <= {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}


def test_an_in_place_restore_runs_on_the_volumes_host_verifies_before_the_swap_and_keeps_the_old_bytes(sandbox, provisioner):
    """A damaged volume (one file overwritten, one added) restored in place by its host: the result is the snapshot
    byte for byte, the damaged bytes are kept beside it, and the host verifies it where it is."""
    import shutil

    store = sandbox.snapshot_store.primary_store()
    volume_id = sandbox.volumes.volume_ids()[-1]
    newest = store.newest_restorable(volume_id)
    path = sandbox.volumes.path(volume_id)
    before = sandbox.volumes.digest(volume_id)
    victim = next(p for p in sorted(path.rglob("*")) if p.is_file())
    victim.write_bytes(b"damaged")
    (path / "stray.bin").write_bytes(b"not in the snapshot")
    failed = {c["name"] for c in provisioner.verify_volume_on_host(volume_id, newest.key) if not c["ok"]}
    assert failed == {"no_extra_files", "sizes"}, failed
    kept = path.with_name(f"{path.name}.before-restore-drill-test")
    try:
        done = provisioner.restore_volume_in_place(volume_id, newest.key, "drill-test")
        assert done["host"] == sandbox.volumes.records()[volume_id]["host"] and done["path"] == str(path)
        assert done["previous_bytes_kept_at"] == str(kept) and (kept / "stray.bin").exists()
        assert all(c["ok"] for c in provisioner.verify_volume_on_host(volume_id, newest.key))
        assert sandbox.volumes.digest(volume_id) == before
        again = provisioner.restore_volume_in_place(volume_id, newest.key, "drill-test")  # a retry only verifies
        assert again["retried"] and sandbox.volumes.digest(volume_id) == before
    finally:
        shutil.rmtree(kept, ignore_errors=True)
