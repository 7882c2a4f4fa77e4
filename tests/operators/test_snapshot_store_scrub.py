"""The snapshot store's scrub on the session sandbox's store (its moto endpoint, its replicator running): the scrub
operator names a flipped and a deleted chunk with every volume and snapshot that references them, the freshness
operator holds the affected volume red, and the next snapshot (taken as the sandbox's snapshotter takes them)
re-uploads both and restores byte for byte.

The damage is done to volumes the test makes itself (their own bytes, so no other volume shares a damaged chunk),
after the replicator copied them (the replica keeps good copies), and is undone whatever happens.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import time

import pytest

from rehearsal.snapshots import restore_snapshot, take_snapshot, tree_digest
from rehearsal.snapshots.scrub import read_state, scrub_store
from tests.operators.test_edge_config_keys import run

pytestmark = pytest.mark.sandbox

CHUNK = 64 * 1024


def replicated(sandbox, store, keys: list[str], timeout: float = 30) -> None:
    """Wait until the sandbox's replicator (every 5 s) copied these index keys (and so, first, their chunks): it then
    remembers them and never copies the damaged bytes over the replica's good ones."""
    replica = sandbox.snapshot_store.replica_store()
    deadline = time.monotonic() + timeout
    while True:
        there = {k.key for k in replica.index_entries()}
        if set(keys) <= there:
            return
        assert time.monotonic() < deadline, f"the replicator did not copy {keys} within {timeout}s"
        time.sleep(0.5)


def test_the_scrub_names_a_flipped_and_a_deleted_chunk_and_the_next_snapshot_restores_byte_for_byte(sandbox, tmp_path):
    from rehearsal_airflow.operators.backup_freshness import StaleBackup, VolumeSnapshotFreshnessOperator
    from rehearsal_airflow.operators.snapshot_store_scrub import SnapshotStoreDamaged, SnapshotStoreScrubOperator

    store = sandbox.snapshot_store.primary_store()
    store.chunk_size = CHUNK
    tag = secrets.token_hex(3)
    shared = os.urandom(CHUNK)
    volumes = {}
    for name in ("a", "b"):
        path = tmp_path / name
        path.mkdir()
        (path / "own.bin").write_bytes(os.urandom(CHUNK * 2))
        (path / "shared.bin").write_bytes(shared)
        volumes[f"vol-scrub-{tag}-{name}"] = path
    vol_a, vol_b = volumes
    snaps: dict[str, list[str]] = {}
    for volume_id, path in volumes.items():
        first = take_snapshot(store, volume_id, path)
        second = take_snapshot(store, volume_id, path, parent=first.snapshot_id)
        snaps[volume_id] = [first.snapshot_id, second.snapshot_id]
    replicated(sandbox, store, [store.find(s, v).key for v, ids in snaps.items() for s in ids])
    entry_b = store.read_snapshot(snaps[vol_b][1], vol_b)
    shared_chunk = next(f for f in entry_b.files if f.path == "shared.bin").chunks[0]
    own_chunk = next(f for f in entry_b.files if f.path == "own.bin").chunks[1]
    originals = {d: store.read_chunk(d) for d in (shared_chunk, own_chunk)}
    flipped = bytearray(originals[shared_chunk])
    flipped[4096] ^= 0x01
    store.s3.put_object(Bucket=store.bucket, Key=store.chunk_key(shared_chunk), Body=bytes(flipped))
    store.s3.delete_object(Bucket=store.bucket, Key=store.chunk_key(own_chunk))
    try:
        result, step = run(SnapshotStoreScrubOperator(task_id="scrub_snapshot_store", full=True))
        assert isinstance(result, SnapshotStoreDamaged), result
        assert step["kind"] == "verification_failed"
        message = str(result)
        a1, a2 = sorted(snaps[vol_a])
        b1, b2 = sorted(snaps[vol_b])
        assert (f"chunk {shared_chunk} is corrupt (its bytes hash to "
                f"{hashlib.sha256(flipped).hexdigest()}): referenced by volume {vol_a} (snapshots {a1}, "
                f"{a2}), volume {vol_b} (snapshots {b1}, {b2})") in message
        assert (f"chunk {own_chunk} is missing (not in the store's chunk listing "
                f"({store.location(store.chunk_key(own_chunk))})): referenced by volume {vol_b} (snapshots {b1}, {b2})"
                ) in message
        assert set(read_state(store).bad) == {shared_chunk, own_chunk}

        result, step = run(VolumeSnapshotFreshnessOperator(task_id="check_volume_snapshots", volume_ids=[vol_a, vol_b]))
        assert isinstance(result, StaleBackup), result
        assert (f"volume {vol_b}: newest completed snapshot {snaps[vol_b][1]} " in str(result)
                and "depends on 2 chunk(s) the scrub found bad" in str(result)), result
        assert f"volume {vol_a}: newest completed snapshot {snaps[vol_a][1]} " in str(result)

        # The snapshotter's next snapshot of vol-b (parent: its newest, as the sandbox's snapshotter takes them)
        # uploads both chunks again, though the parent names them and a HEAD finds the flipped one.
        again = take_snapshot(store, vol_b, volumes[vol_b], parent=store.newest_restorable(vol_b))
        assert (again.chunks_new, again.bytes_uploaded) == (2, 2 * CHUNK)
        restored = restore_snapshot(store, again.key, tmp_path / "restored")
        assert restored.content_checked and tree_digest(tmp_path / "restored") == tree_digest(volumes[vol_b])
        result, _ = run(VolumeSnapshotFreshnessOperator(task_id="check_volume_snapshots", volume_ids=[vol_b]))
        assert not isinstance(result, Exception), result

        result, _ = run(SnapshotStoreScrubOperator(task_id="scrub_snapshot_store"))  # its share, and the marked ones
        assert not isinstance(result, Exception), result
        assert result["repaired"] == sorted([shared_chunk, own_chunk]) and read_state(store).bad == {}
    finally:  # whatever happened: the good bytes back, and no mark left for the next test's freshness
        for digest, body in originals.items():
            store.s3.put_object(Bucket=store.bucket, Key=store.chunk_key(digest), Body=body)
        if read_state(store).bad:
            scrub_store(store)
