"""The snapshot store's scrub against moto in-process: the rotation reads every chunk once per period, a corrupt and
a missing chunk are named with every volume and snapshot referencing them, freshness stays red until a new snapshot
no longer depends on them, and the snapshotter re-uploads them."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest

from rehearsal.errors import PreconditionFailed
from rehearsal.snapshots import SnapshotEntry, restore_snapshot, take_snapshot, tree_digest, volume_freshness
from rehearsal.snapshots.scrub import (
    ScrubState,
    damaged_snapshots,
    due_slots,
    read_state,
    run_number,
    scrub_store,
    slot_count,
    slot_of,
)
from rehearsal.snapshots.store import STATE_ERROR, FileEntry
from tests.unit.test_snapshots import CHUNK, NOW, s3, store  # noqa: F401 - fixtures

WEEK, SIX_HOURS = timedelta(days=7), timedelta(hours=6)


def test_every_slot_is_read_within_the_period_and_missed_runs_are_caught_up():
    slots = slot_count(WEEK, SIX_HOURS)
    assert slots == 27  # (27 + 1) runs x 6 h = 7 days: every slot read again within a week even when a run is late
    state, read = None, []
    first = run_number(NOW, SIX_HOURS)
    for run in range(first, first + slots):
        due = due_slots(state, slots, run)
        read += due
        state = ScrubState(slots, SIX_HOURS.total_seconds(), run)
    assert sorted(read) == list(range(slots))  # each slot exactly once in `slots` consecutive runs
    assert due_slots(state, slots, run) == []  # a retry in the same run reads nothing new
    assert due_slots(state, slots, run + 4) == sorted((run + i) % slots for i in (1, 2, 3, 4))  # 3 runs were missed
    assert due_slots(state, slots, run + 100) == list(range(slots))  # a long outage: everything at once
    assert due_slots(ScrubState(5, 3600, run), slots, run + 1) == [(run + 1) % slots]  # geometry changed: restart
    digests = [os.urandom(32).hex() for _ in range(2000)]
    per_slot = [sum(slot_of(d, slots) == s for d in digests) for s in range(slots)]
    assert min(per_slot) > 0.5 * 2000 / slots  # the share of each run is even


def test_a_scrub_too_rare_for_its_period_is_refused():
    with pytest.raises(PreconditionFailed, match="a scrub every 4 days, 0:00:00 cannot read every chunk within 7 days"):
        slot_count(WEEK, timedelta(days=4))


def volume(root, name: str, shared: bytes) -> tuple[str, object]:
    path = root / name
    path.mkdir()
    (path / "own.bin").write_bytes(os.urandom(CHUNK * 2))
    (path / "shared.bin").write_bytes(shared)
    return name, path


def test_the_scrub_names_a_flipped_and_a_deleted_chunk_then_a_new_snapshot_repairs_them(store, tmp_path):  # noqa: F811
    shared = os.urandom(CHUNK)
    vols = dict([volume(tmp_path, "vol-a", shared), volume(tmp_path, "vol-b", shared)])
    taken = {}
    for v, path in vols.items():
        taken[v] = [take_snapshot(store, v, path, snapshot_id=f"{v}-s1", now=NOW - timedelta(hours=2)),
                    take_snapshot(store, v, path, parent=f"{v}-s1", snapshot_id=f"{v}-s2", now=NOW - timedelta(hours=1))]
    clean = scrub_store(store, now=NOW, full=True)
    assert clean.ok and clean.chunks_checked == clean.chunks_listed == 5, clean.detail
    shared_chunk = store.read_snapshot("vol-a-s2").files[1].chunks[0]
    own_chunk = store.read_snapshot("vol-b-s2").files[0].chunks[1]
    key = store.chunk_key(shared_chunk)
    body = bytearray(store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    body[100] ^= 0xFF
    store.s3.put_object(Bucket=store.bucket, Key=key, Body=bytes(body))
    store.s3.delete_object(Bucket=store.bucket, Key=store.chunk_key(own_chunk))

    found = scrub_store(store, now=NOW + SIX_HOURS, full=True)
    assert not found.ok
    assert list(found.corrupt) == [shared_chunk] and list(found.missing) == [own_chunk]
    failed = {c["name"]: c["detail"] for c in found.checks if not c["ok"]}
    assert f"chunk {shared_chunk} is corrupt (its bytes hash to " in failed["chunk_hashes"]
    assert ("referenced by volume vol-a (snapshots vol-a-s1, vol-a-s2), volume vol-b (snapshots vol-b-s1, vol-b-s2)"
            in failed["chunk_hashes"])
    assert f"chunk {own_chunk} is missing (not in the store's chunk listing" in failed["chunk_references"]
    assert "referenced by volume vol-b (snapshots vol-b-s1, vol-b-s2)" in failed["chunk_references"]
    assert (found.volumes_affected, found.snapshots_affected) == (["vol-a", "vol-b"], ["vol-a-s1", "vol-a-s2",
                                                                                       "vol-b-s1", "vol-b-s2"])
    state = read_state(store)
    assert set(state.bad) == {shared_chunk, own_chunk}

    fresh = volume_freshness(store, list(vols), timedelta(hours=24), NOW, damaged_snapshots(state))
    assert not fresh.ok and fresh.damaged == ["vol-a", "vol-b"] and fresh.stale == []
    b = next(v for v in fresh.volumes if v.volume_id == "vol-b")
    assert b.detail.startswith("volume vol-b: newest completed snapshot vol-b-s2 (3600s old) depends on 2 chunk(s) "
                               "the scrub found bad: ")
    assert f"{own_chunk} (missing)" in b.detail and f"{shared_chunk} (corrupt)" in b.detail

    # The next snapshot of vol-b re-uploads both, though its parent references them and a HEAD finds the corrupt one.
    again = take_snapshot(store, "vol-b", vols["vol-b"], parent="vol-b-s2", snapshot_id="vol-b-s3", now=NOW)
    assert again.chunks_new == 2 and again.bytes_uploaded == 2 * CHUNK
    restore_snapshot(store, "vol-b-s3", tmp_path / "restored-b")
    assert tree_digest(tmp_path / "restored-b") == tree_digest(vols["vol-b"])
    fresh = volume_freshness(store, ["vol-b"], timedelta(hours=24), NOW, damaged_snapshots(read_state(store)))
    assert fresh.ok, fresh.detail  # its newest snapshot no longer depends on a bad copy

    repaired = scrub_store(store, now=NOW + 2 * SIX_HOURS)  # not full: the marked chunks are read again anyway
    assert repaired.ok and repaired.repaired == sorted([shared_chunk, own_chunk]), repaired.detail
    assert read_state(store).bad == {}
    assert volume_freshness(store, list(vols), timedelta(hours=24), NOW, damaged_snapshots(read_state(store))).ok


def test_a_run_reads_only_its_share_and_records_when(store, tmp_path):  # noqa: F811
    path = tmp_path / "v"
    path.mkdir()
    (path / "data.bin").write_bytes(os.urandom(CHUNK * 40))
    take_snapshot(store, "vol-1", path, now=NOW)
    never_stored = os.urandom(32).hex()  # a failed snapshot's entry names a chunk its upload never stored: no damage
    store.write_index_entry(SnapshotEntry("snap-failed", "vol-1", NOW, None, STATE_ERROR,
                                          (FileEntry("data.bin", CHUNK, 0o644, (never_stored,)),), CHUNK, CHUNK))
    first = scrub_store(store, now=NOW)
    slots = first.slots
    expected = sum(slot_of(c.digest, slots) == first.run % slots for c in store.iter_chunks())
    assert first.slots_checked == [first.run % slots] and first.chunks_checked == expected
    assert first.oldest_slot_check is None  # not every slot has been read yet
    assert first.references_checked == 40 and first.index_entries == 1 and first.ok, first.detail
    retry = scrub_store(store, now=NOW + timedelta(minutes=5))
    assert retry.slots_checked == [] and retry.chunks_checked == 0 and retry.references_checked == 40
    state = read_state(store)
    assert state.last_run == first.run and list(state.slot_checked_at) == [str(first.run % slots)]


def test_an_unreadable_scrub_state_fails_the_scrub_by_name_but_never_a_snapshot(store, tmp_path):  # noqa: F811
    from rehearsal.snapshots.scrub import ScrubStateInvalid, state_key

    path = tmp_path / "v"
    path.mkdir()
    (path / "data.bin").write_bytes(os.urandom(CHUNK))
    store.s3.put_object(Bucket=store.bucket, Key=state_key(store), Body=b"{not json")
    assert take_snapshot(store, "vol-1", path, now=NOW).state == "completed"
    with pytest.raises(ScrubStateInvalid, match=r"^s3://snap-primary/volumes/scrub/state.json: scrub state is not valid JSON$"):
        scrub_store(store, now=NOW)
