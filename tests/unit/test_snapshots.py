"""Volume snapshots against moto in-process: take, restore, verify, bad inputs named, health, rebuild, freshness, EBS."""
from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from rehearsal.errors import BackupFailed, PreconditionFailed, RestoreError, VerificationFailed, error_kind
from rehearsal.snapshots import (
    ChunkCorrupt,
    ChunkMissing,
    IndexEntryInvalid,
    SizeMismatch,
    SnapshotEntry,
    SnapshotInError,
    SnapshotNotFound,
    SnapshotStore,
    ebs,
    rebuild_store,
    replica_lag,
    restore_snapshot,
    store_health,
    take_snapshot,
    tree_digest,
    verify_restored,
    volume_freshness,
)
from rehearsal.snapshots.store import STATE_ERROR, FileEntry, parse_index_key
from rehearsal.snapshots.verify import file_modes

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
CHUNK = 64 * 1024
BUCKETS = ("snap-primary", "snap-replica", "snap-index-backup", "snap-rebuilt")


@pytest.fixture
def s3(monkeypatch):
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in BUCKETS[:3]:
            client.create_bucket(Bucket=bucket)
        yield client


@pytest.fixture
def store(s3):
    return SnapshotStore(s3, "snap-primary", prefix="volumes", chunk_size=CHUNK)


def make_tree(root: Path, small_files: int = 120) -> Path:
    """A file larger than several chunks (not a multiple of the chunk size), many small files, an empty file,
    a duplicate and a file with its own mode."""
    root.mkdir(parents=True, exist_ok=True)
    big = os.urandom(CHUNK * 3 + 1234)
    (root / "big.bin").write_bytes(big)
    for i in range(small_files):
        sub = root / f"dir{i % 7}"
        sub.mkdir(exist_ok=True)
        (sub / f"small-{i}.txt").write_bytes(f"row {i}\n".encode() * (i + 1))
    (root / "empty").write_bytes(b"")
    (root / "copy-of-big.bin").write_bytes(big)
    (root / "secret.conf").write_bytes(b"password=hunter2\n")
    os.chmod(root / "secret.conf", 0o600)
    return root


def objects_digest(client, bucket: str) -> dict[str, str]:
    """sha256 of every object in a bucket, by key (to prove a restore wrote nothing)."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            out[item["Key"]] = hashlib.sha256(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()).hexdigest()
    return out


def copy_bucket(client, source: str, target: str, prefix: str = "") -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source, Prefix=prefix):
        for item in page.get("Contents", []):
            client.copy_object(Bucket=target, Key=item["Key"], CopySource={"Bucket": source, "Key": item["Key"]})


def first_chunk_of(entry: SnapshotEntry, path: str) -> str:
    return next(f for f in entry.files if f.path == path).chunks[1 if path == "big.bin" else 0]


# -- take and restore ---------------------------------------------------------------------------------------------


def test_restore_matches_source_byte_for_byte(store, tmp_path):
    source = make_tree(tmp_path / "src")
    taken = take_snapshot(store, "vol-data-1", source, snapshot_id="snap-1", now=NOW)
    assert taken.files == 124 and taken.state == "completed"
    assert taken.bytes_read == sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
    assert taken.chunks_total == 4 + 120 + 4 + 1  # big, smalls, its copy, secret; the empty file has none
    assert taken.chunks_new == 4 + 120 + 1 and taken.chunks_reused == 4  # the copy's chunks are stored once
    assert parse_index_key(taken.key, store.prefix).snapshot_id == "snap-1"

    record = restore_snapshot(store, "snap-1", tmp_path / "dest", workers=8)
    assert tree_digest(tmp_path / "dest") == tree_digest(source)
    assert file_modes(tmp_path / "dest") == file_modes(source)
    assert record.bytes == taken.bytes_read and record.file_count == 124 and record.content_checked
    assert {f.path: f.size for f in record.files}["big.bin"] == CHUNK * 3 + 1234
    assert verify_restored(store.read_snapshot(taken.key), tmp_path / "dest").ok
    assert record.to_dict()["throughput_mb_s"] >= 0


def test_second_snapshot_of_the_same_tree_uploads_no_chunk(store, tmp_path):
    source = make_tree(tmp_path / "src")
    first = take_snapshot(store, "vol-data-1", source, snapshot_id="snap-1", now=NOW)
    by_parent = take_snapshot(store, "vol-data-1", source, parent="snap-1", snapshot_id="snap-2",
                              now=NOW + timedelta(hours=1))
    assert (by_parent.chunks_new, by_parent.bytes_uploaded, by_parent.parent) == (0, 0, "snap-1")
    assert by_parent.chunks_reused == first.chunks_total
    # listing + one GET of the parent + one GET of the scrub's marks + the index PUT: no HEAD at all
    assert by_parent.to_dict()["api_calls"] <= 4
    by_head = take_snapshot(store, "vol-data-1", source, snapshot_id="snap-3", now=NOW + timedelta(hours=2))
    assert (by_head.chunks_new, by_head.bytes_uploaded) == (0, 0)
    (source / "dir0" / "small-0.txt").write_bytes(b"changed\n")
    changed = take_snapshot(store, "vol-data-1", source, parent="snap-3", snapshot_id="snap-4",
                            now=NOW + timedelta(hours=3))
    assert (changed.chunks_new, changed.bytes_uploaded) == (1, len(b"changed\n"))
    assert store.newest_restorable("vol-data-1").snapshot_id == "snap-4"
    restore_snapshot(store, "snap-4", tmp_path / "dest")
    assert tree_digest(tmp_path / "dest") == tree_digest(source)


def test_take_never_modifies_the_source(store, tmp_path):
    source = make_tree(tmp_path / "src", small_files=10)
    before = (tree_digest(source), {p: p.stat().st_mtime_ns for p in source.rglob("*")})
    take_snapshot(store, "vol-data-1", source, now=NOW)
    assert (tree_digest(source), {p: p.stat().st_mtime_ns for p in source.rglob("*")}) == before


def test_take_failure_is_recorded_as_error_and_never_restorable(store, tmp_path, monkeypatch):
    source = make_tree(tmp_path / "src", small_files=3)

    def broken(data, digest=None):
        raise OSError("connection reset")
    monkeypatch.setattr(store, "put_chunk", broken)
    with pytest.raises(BackupFailed, match="volume vol-data-1 snapshot snap-1: failed .* recorded as state error"):
        take_snapshot(store, "vol-data-1", source, snapshot_id="snap-1", now=NOW)
    (key,) = list(store.index_entries("vol-data-1"))
    assert (key.snapshot_id, key.state) == ("snap-1", "error")
    assert store.newest_restorable("vol-data-1") is None


def test_names_that_cannot_form_a_key_are_refused(store, tmp_path):
    for volume in ("vol/1", "vol--1", ""):
        with pytest.raises(PreconditionFailed, match="cannot name a snapshot key"):
            take_snapshot(store, volume, tmp_path)
    with pytest.raises(PreconditionFailed, match="volume vol-1: source .* is not a directory"):
        take_snapshot(store, "vol-1", tmp_path / "absent")


def test_restore_is_idempotent_on_retry(store, tmp_path):
    source = make_tree(tmp_path / "src", small_files=10)
    take_snapshot(store, "vol-data-1", source, snapshot_id="snap-1", now=NOW)
    dest = tmp_path / "dest"
    restore_snapshot(store, "snap-1", dest)
    (dest / "big.bin").write_bytes(b"half written by a crashed attempt")
    (dest / ".big.bin.rehearsal-partial").write_bytes(b"leftover")
    restore_snapshot(store, "snap-1", dest, workers=3)
    assert tree_digest(dest) == tree_digest(source)
    assert verify_restored(store.read_snapshot(store.find("snap-1").key), dest).ok


def test_restore_never_writes_to_the_store(s3, store, tmp_path):
    source = make_tree(tmp_path / "src", small_files=20)
    take_snapshot(store, "vol-data-1", source, snapshot_id="snap-1", now=NOW)
    before = objects_digest(s3, "snap-primary")
    puts_before = store.calls.by_operation["put_object"]
    restore_snapshot(store, "snap-1", tmp_path / "dest")
    assert objects_digest(s3, "snap-primary") == before
    assert store.calls.by_operation["put_object"] == puts_before


# -- bad inputs, each named ---------------------------------------------------------------------------------------


def test_snapshot_in_error_state_is_refused(store, tmp_path):
    entry = SnapshotEntry("snap-bad", "vol-data-1", NOW, None, STATE_ERROR, (), 0, CHUNK)
    store.write_index_entry(entry)
    with pytest.raises(SnapshotInError, match=r"volume vol-data-1 snapshot snap-bad is in state 'error', not "
                                              r"'completed': not restorable \(s3://snap-primary/volumes/index/") as err:
        restore_snapshot(store, "snap-bad", tmp_path / "dest")
    assert error_kind(err.value) == "refused" and not (tmp_path / "dest").exists()


def test_snapshot_missing_from_the_index_is_named(store, tmp_path):
    with pytest.raises(SnapshotNotFound, match=r"snapshot snap-nope \(volume vol-data-1\) is not in the index of "
                                               r"s3://snap-primary/volumes/") as err:
        restore_snapshot(store, "snap-nope", tmp_path / "dest", volume_id="vol-data-1")
    assert err.value.snapshot_id == "snap-nope"


def test_missing_chunk_names_volume_snapshot_file_and_chunk(s3, store, tmp_path):
    source = make_tree(tmp_path / "src", small_files=5)
    taken = take_snapshot(store, "vol-data-1", source, snapshot_id="snap-1", now=NOW)
    entry = store.read_snapshot(taken.key)
    digest = first_chunk_of(entry, "dir1/small-1.txt")
    s3.delete_object(Bucket="snap-primary", Key=store.chunk_key(digest))
    with pytest.raises(ChunkMissing) as err:
        restore_snapshot(store, "snap-1", tmp_path / "dest")
    assert str(err.value) == (f"volume vol-data-1 snapshot snap-1: chunk {digest} of file dir1/small-1.txt (chunk 1 of 1) "
                              f"is missing from s3://snap-primary/volumes/chunks/{digest[:2]}/{digest}")
    assert (err.value.volume_id, err.value.snapshot_id, err.value.path, err.value.chunk) == (
        "vol-data-1", "snap-1", "dir1/small-1.txt", digest)
    assert not list((tmp_path / "dest").rglob("*.rehearsal-partial"))
    assert not (tmp_path / "dest" / "dir1" / "small-1.txt").exists()


def test_corrupt_chunk_names_volume_file_and_chunk(s3, store, tmp_path):
    source = make_tree(tmp_path / "src", small_files=5)
    taken = take_snapshot(store, "vol-data-1", source, snapshot_id="snap-1", now=NOW)
    digest = first_chunk_of(store.read_snapshot(taken.key), "big.bin")
    s3.put_object(Bucket="snap-primary", Key=store.chunk_key(digest), Body=b"x" * CHUNK)
    with pytest.raises(ChunkCorrupt, match=rf"volume vol-data-1 snapshot snap-1: chunk {digest} of file "
                                           rf"(big.bin|copy-of-big.bin) \(chunk 2 of 4\) is corrupt in s3://snap-primary/"
                                           rf"volumes/chunks/{digest[:2]}/{digest}: its bytes hash to "
                                           + hashlib.sha256(b"x" * CHUNK).hexdigest()) as err:
        restore_snapshot(store, "snap-1", tmp_path / "dest")
    assert error_kind(err.value) == "recovery_failed"


def test_restored_size_that_differs_from_the_index_is_named(store, tmp_path):
    source = make_tree(tmp_path / "src", small_files=5)
    taken = take_snapshot(store, "vol-data-1", source, snapshot_id="snap-1", now=NOW)
    entry = store.read_snapshot(taken.key)
    files = tuple(replace(f, size=f.size + 10) if f.path == "dir2/small-2.txt" else f for f in entry.files)
    store.write_index_entry(replace(entry, files=files))  # the same key: the index now lies about one size
    with pytest.raises(SizeMismatch, match="volume vol-data-1 snapshot snap-1: file dir2/small-2.txt restored 18 bytes, "
                                           "the index says 28"):
        restore_snapshot(store, "snap-1", tmp_path / "dest")


def test_index_path_outside_the_destination_is_refused(store, tmp_path):
    entry = SnapshotEntry("snap-evil", "vol-data-1", NOW, None, "completed",
                          (FileEntry("../escape", 0, 0o644, ()),), 0, CHUNK)
    store.write_index_entry(entry)
    with pytest.raises(IndexEntryInvalid, match="file path '../escape' would be restored outside the destination"):
        restore_snapshot(store, "snap-evil", tmp_path / "dest")
    assert not (tmp_path / "escape").exists()


def test_verify_restored_names_missing_extra_and_changed_files(store, tmp_path):
    source = make_tree(tmp_path / "src", small_files=5)
    taken = take_snapshot(store, "vol-data-1", source, snapshot_id="snap-1", now=NOW)
    dest = tmp_path / "dest"
    restore_snapshot(store, "snap-1", dest)
    (dest / "dir0" / "small-0.txt").unlink()
    (dest / "stray.log").write_text("not in the snapshot")
    big = bytearray((dest / "big.bin").read_bytes())
    big[CHUNK * 2 + 5] ^= 0xFF
    (dest / "big.bin").write_bytes(bytes(big))
    checks = verify_restored(store.read_snapshot(taken.key), dest)
    failed = {c.name: c.detail for c in checks.failed}
    assert failed["files_present"] == "1 of 9 file(s) missing: dir0/small-0.txt"
    assert failed["no_extra_files"] == "1 file(s) not in the snapshot: stray.log"
    assert failed["content"].startswith("1 file(s) differ: big.bin (chunk 3 of 4, ")
    with pytest.raises(VerificationFailed, match="restore of volume vol-data-1 snapshot snap-1"):
        checks.raise_if_failed()
    assert tree_digest(dest) != tree_digest(source)


# -- health, rebuild, freshness -----------------------------------------------------------------------------------


def replicated(s3, tmp_path, small_files: int = 10):
    """A primary with two volumes' snapshots, its replica (every object) and its index backup (index objects)."""
    primary = SnapshotStore(s3, "snap-primary", prefix="volumes", chunk_size=CHUNK)
    source = make_tree(tmp_path / "src", small_files=small_files)
    take_snapshot(primary, "vol-data-1", source, snapshot_id="snap-1", now=NOW - timedelta(hours=2))
    (source / "new.txt").write_text("second snapshot\n")
    take_snapshot(primary, "vol-data-1", source, snapshot_id="snap-2", now=NOW - timedelta(hours=1))
    take_snapshot(primary, "vol-logs-1", make_tree(tmp_path / "logs", small_files=3), snapshot_id="snap-3",
                  now=NOW - timedelta(hours=1))
    copy_bucket(s3, "snap-primary", "snap-replica")
    copy_bucket(s3, "snap-primary", "snap-index-backup", prefix="volumes/index/")
    replica = SnapshotStore(s3, "snap-replica", prefix="volumes", chunk_size=CHUNK)
    backup = SnapshotStore(s3, "snap-index-backup", prefix="volumes")
    return primary, replica, backup, source


def test_health_of_a_healthy_store(s3, tmp_path):
    primary, replica, backup, _ = replicated(s3, tmp_path)
    health = store_health(primary, replica, backup, max_replica_lag=timedelta(minutes=5))
    assert health.ok, health.problems
    assert (health.primary_entries, health.replica_lag_seconds, health.buckets_missing) == (3, 0.0, [])
    assert health.api_calls == health.pages + health.index_reads  # listings plus one GET per entry, no HEAD


def test_health_names_missing_entries_chunks_and_the_blast_radius(s3, tmp_path):
    primary, replica, backup, _ = replicated(s3, tmp_path)
    keys = {k.snapshot_id: k for k in primary.index_entries()}
    s3.delete_object(Bucket="snap-primary", Key=keys["snap-3"].key)
    s3.put_object(Bucket="snap-primary", Key=keys["snap-1"].key, Body=b"{not json")
    lost = primary.read_snapshot(keys["snap-2"]).files[0].chunks[0]
    s3.delete_object(Bucket="snap-primary", Key=primary.chunk_key(lost))
    health = store_health(primary, replica, backup)
    assert not health.ok
    assert health.index_missing == [keys["snap-3"].relative_key]
    assert list(health.index_unreadable) == [keys["snap-1"].relative_key]
    assert "content differs from every copy" in health.index_unreadable[keys["snap-1"].relative_key]
    assert health.chunks_missing == {lost: ["snap-2"]} and health.chunks_missing_in_replica_too == []
    assert health.snapshots_affected == ["snap-1", "snap-2", "snap-3"]
    assert health.volumes_affected == ["vol-data-1", "vol-logs-1"]
    assert any(f"1 chunk(s) referenced by the index missing from {primary.url}" in p for p in health.problems)


def test_health_names_a_missing_primary_bucket_and_a_stale_replica(s3, tmp_path):
    primary, replica, backup, source = replicated(s3, tmp_path)
    take_snapshot(primary, "vol-data-1", source, snapshot_id="snap-4", now=NOW)  # not replicated
    lag = replica_lag(primary, replica, max_lag=timedelta(minutes=15))
    assert (lag.lag_seconds, lag.ok, lag.replica_newest, lag.primary_newest) == (3600.0, False, "snap-2", "snap-4")
    assert "trails by 3600s, over its 900s limit" in lag.detail
    health = store_health(primary, replica, backup, max_replica_lag=timedelta(minutes=15))
    assert health.replica_lag_seconds == 3600.0 and not health.ok
    gone = SnapshotStore(s3, "snap-primary-lost", prefix="volumes")
    health = store_health(gone, replica, backup)
    assert health.buckets_missing == ["snap-primary-lost"]
    assert "bucket snap-primary-lost does not exist (NoSuchBucket)" in health.problems
    assert health.index_missing_count == 3  # snap-4 never reached a copy


def test_rebuild_from_replica_and_index_backup_then_restore(s3, tmp_path):
    primary, replica, backup, source = replicated(s3, tmp_path)
    s3.delete_object(Bucket="snap-replica", Key=next(k for k in replica.index_entries() if k.snapshot_id == "snap-3").key)
    target = SnapshotStore(s3, "snap-rebuilt", prefix="volumes", chunk_size=CHUNK)
    with pytest.raises(PreconditionFailed, match="create the new primary bucket first"):
        rebuild_store(replica, backup, target)
    target.create_bucket()
    record = rebuild_store(replica, backup, target)
    assert record.ok, record.problems
    assert record.index_entries == 3 and record.chunks_copied == len(list(primary.iter_chunks()))
    assert record.bytes_copied == sum(c.size for c in primary.iter_chunks())
    restore_snapshot(target, "snap-2", tmp_path / "dest")
    assert tree_digest(tmp_path / "dest") == tree_digest(source)
    again = rebuild_store(replica, backup, target)  # a re-run copies nothing twice
    assert again.ok and again.chunks_copied == 0 and again.chunks_already_present == record.chunks_copied


def test_rebuild_names_a_corrupt_replica_chunk(s3, tmp_path):
    primary, replica, backup, _ = replicated(s3, tmp_path)
    bad = next(replica.iter_chunks()).digest
    s3.put_object(Bucket="snap-replica", Key=replica.chunk_key(bad), Body=b"bit rot")
    target = SnapshotStore(s3, "snap-rebuilt", prefix="volumes")
    target.create_bucket()
    record = rebuild_store(replica, backup, target)
    assert not record.ok
    assert record.chunks_corrupt == {bad: hashlib.sha256(b"bit rot").hexdigest()}
    assert bad in record.missing and record.missing_count == 1
    with pytest.raises(RestoreError, match=f"1 corrupt chunk\\(s\\) in the replica s3://snap-replica/volumes/, not copied: {bad}"):
        record.raise_if_failed()


def test_freshness_of_thousands_of_volumes_costs_one_call_per_listing_page(s3):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"] if "aws" in s3_backends[DEFAULT_ACCOUNT_ID] else \
        s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    store = SnapshotStore(s3, "snap-primary", prefix="volumes")
    volumes = [f"vol-{i:05d}" for i in range(2000)]
    stale = set(volumes[::97])
    failing = set(volumes[5::211]) - stale
    for volume in volumes:  # seeded in moto's backend directly: 6,000 keys in a fraction of a second
        newest = NOW - (timedelta(hours=30) if volume in stale else timedelta(minutes=30))
        for age in (2, 1, 0):
            at = newest - timedelta(hours=age)
            state = "error" if volume in failing and age == 0 else "completed"
            key = f"volumes/index/{volume}/{at.strftime('%Y%m%dT%H%M%S%fZ')}--snap-{volume}-{age}--{state}.json"
            backend.put_object("snap-primary", key, b"{}")
    asked = [*volumes, "vol-never-1", "vol-never-2"]
    started = time.monotonic()
    report = volume_freshness(store, asked, max_age=timedelta(hours=24), now=NOW)
    pages = math.ceil(6000 / 1000)
    assert report.pages == pages and report.api_calls <= pages + 1
    assert report.index_keys == 6000
    assert sorted(report.stale) == sorted(stale) and report.missing == ["vol-never-1", "vol-never-2"]
    assert not report.ok and f"{len(stale)} stale, 2 without a completed snapshot" in report.detail
    by_id = {v.volume_id: v for v in report.volumes}
    flaky = sorted(failing)[0]
    assert by_id[flaky].ok and by_id[flaky].failed_since == 1 and by_id[flaky].newest_snapshot == f"snap-{flaky}-1"
    assert by_id[volumes[1]].newest_snapshot == f"snap-{volumes[1]}-0" and by_id[volumes[1]].age_seconds == 1800
    assert time.monotonic() - started < 10


# -- throughput -----------------------------------------------------------------------------------------------------


def test_restore_throughput_against_a_plain_streamed_get(s3, tmp_path, capsys):
    store = SnapshotStore(s3, "snap-primary", prefix="volumes")  # the default 4 MiB chunks
    source = tmp_path / "src"
    source.mkdir()
    (source / "volume.img").write_bytes(os.urandom(48 * 1024 * 1024))
    taken = take_snapshot(store, "vol-big-1", source, now=NOW)
    entry = store.read_snapshot(taken.key)
    started = time.monotonic()
    with (tmp_path / "plain.img").open("wb") as fh:
        for digest in entry.files[0].chunks:
            body = s3.get_object(Bucket="snap-primary", Key=store.chunk_key(digest))["Body"]
            for data in iter(lambda b=body: b.read(1024 * 1024), b""):
                fh.write(data)
    plain = taken.bytes_read / (time.monotonic() - started) / 1e6
    record = restore_snapshot(store, taken.snapshot_id, tmp_path / "dest", workers=8)
    assert tree_digest(tmp_path / "dest") == tree_digest(source)
    with capsys.disabled():
        print(f"\nrestore {record.throughput_mb_s:.0f} MB/s (8 workers, sha256 checked) vs plain streamed GET "
              f"{plain:.0f} MB/s (1 stream, unchecked), {taken.bytes_read / 1e6:.0f} MB")


# -- EBS ------------------------------------------------------------------------------------------------------------


@pytest.fixture
def ec2(monkeypatch):
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # a sandbox's endpoint, once the session loaded one
    with mock_aws():
        yield boto3.client("ec2", region_name="us-east-1"), boto3.client("ec2", region_name="us-west-2")


def test_ebs_snapshot_to_volume_and_across_regions(ec2):
    east, west = ec2
    source = east.create_volume(AvailabilityZone="us-east-1a", Size=20, VolumeType="gp3")["VolumeId"]
    east.create_snapshot(VolumeId=source, Description="nightly", TagSpecifications=ebs.tag_specification(
        "snapshot", {ebs.DEFAULT_TAG_KEY: "data-1"}))
    snapshot = ebs.find_snapshot(east, "data-1")
    assert (snapshot.volume_id, snapshot.state, snapshot.size_gb, snapshot.content_checked) == (source, "completed", 20, False)
    tags = {"rehearsal:drill": "ebs-1", "Name": "restored-data-1"}
    volume = ebs.create_volume_from_snapshot(east, snapshot.snapshot_id, "us-east-1b", tags)
    ready = ebs.wait_volume_available(east, volume.volume_id, timeout=30, poll=0.1)
    assert (ready.state, ready.size_gb, ready.snapshot_id) == ("available", 20, snapshot.snapshot_id)
    verified = ebs.verify_volume(east, volume.volume_id, 20, tags, "us-east-1b")
    assert verified.ok and [c.name for c in verified.checks.checks] == ["size", "tags", "state", "availability_zone"]
    assert verified.to_dict()["content_checked"] is False and "moto" in verified.content_reason
    wrong = ebs.verify_volume(east, volume.volume_id, 30, {"rehearsal:drill": "other"}, "us-east-1a")
    assert {c.name: c.detail for c in wrong.checks.failed} == {
        "size": "20 GiB, expected 30 GiB", "tags": "rehearsal:drill='ebs-1', expected 'other'",
        "availability_zone": "us-east-1b, expected us-east-1a"}

    copy = ebs.copy_snapshot(west, "us-east-1", snapshot.snapshot_id, "DR copy", ec2_source=east)
    assert (copy.region, copy.source_snapshot_id, copy.content_checked) == ("us-west-2", snapshot.snapshot_id, False)
    assert ebs.wait_snapshot_completed(west, copy.snapshot_id, timeout=5).state == "completed"
    there = ebs.create_volume_from_snapshot(west, copy.snapshot_id, "us-west-2a", tags, size_gb=25)
    assert ebs.wait_volume_available(west, there.volume_id, timeout=30, poll=0.1).size_gb == 25
    assert ebs.verify_volume(west, there.volume_id, 25, tags, "us-west-2a").ok

    for client, expected in ((east, [volume.volume_id]), (west, [there.volume_id])):
        cleanup = ebs.delete_drill_volumes(client, "rehearsal:drill", "ebs-1")
        assert cleanup.deleted == expected and cleanup.skipped_in_use == []
    assert [v["VolumeId"] for v in east.describe_volumes()["Volumes"]] == [source]


def test_ebs_refuses_bad_snapshots_by_name(ec2):
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends

    east, _ = ec2
    source = east.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    snap = east.create_snapshot(VolumeId=source)["SnapshotId"]
    ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].snapshots[snap].status = "error"
    with pytest.raises(SnapshotInError, match=f"volume {source} snapshot {snap} is in state 'error', not 'completed': "
                                              "not restorable \\(EBS in us-east-1\\)"):
        ebs.create_volume_from_snapshot(east, snap, "us-east-1a", {"rehearsal:drill": "x"})
    with pytest.raises(SnapshotNotFound, match="snapshot snap-0123456789abcdef0 is not in EBS in us-east-1"):
        ebs.create_volume_from_snapshot(east, "snap-0123456789abcdef0", "us-east-1a", {})
    with pytest.raises(SnapshotNotFound, match="tagged rehearsal:volume=nothing"):
        ebs.find_snapshot(east, "nothing")
    ok = east.create_snapshot(VolumeId=source)["SnapshotId"]
    with pytest.raises(PreconditionFailed, match=f"snapshot {ok} holds 8 GiB: a 4 GiB volume cannot hold it"):
        ebs.create_volume_from_snapshot(east, ok, "us-east-1a", {}, size_gb=4)
    with pytest.raises(PreconditionFailed, match="needs a tag key and value"):
        ebs.delete_drill_volumes(east, "rehearsal:drill", "")
    assert [v["VolumeId"] for v in east.describe_volumes()["Volumes"]] == [source]


def test_index_keys_parse_under_any_prefix(s3):
    store = SnapshotStore(s3, "snap-primary", prefix="dr/index/")
    key = store.write_index_entry(SnapshotEntry("snap-1", "index", NOW, None, "completed", (), 0, CHUNK))
    assert key == "dr/index/index/index/20261128T120000000000Z--snap-1--completed.json"
    (parsed,) = list(store.index_entries())
    assert (parsed.volume_id, parsed.snapshot_id, parsed.created_at, parsed.relative_key) == (
        "index", "snap-1", NOW, "index/index/20261128T120000000000Z--snap-1--completed.json")
    assert parse_index_key("dr/index/index/vol-1/not-a-time--snap-1--completed.json", store.prefix) is None
    assert parse_index_key("dr/index/index/vol-1/20261128T120000000000Z--snap-1--pending.json", store.prefix) is None
    assert store.read_snapshot(key).volume_id == "index"
