"""Volume snapshots: a content-addressed chunk store on S3, taking, restoring and verifying snapshots of a
directory, store health and rebuild, freshness from index keys alone, and the EBS path (``rehearsal.snapshots.ebs``).

Typical use::

    store = SnapshotStore(s3_client, "snapshots-bucket", prefix="volumes")
    taken = take_snapshot(store, "vol-data-1", "/srv/data")               # SnapshotRecord
    done = restore_snapshot(store, taken.snapshot_id, "/restore/data")   # RestoreRecord, every chunk checked
    verify_restored(store.read_snapshot(taken.key), "/restore/data").raise_if_failed()
    volume_freshness(store, ["vol-data-1"], timedelta(hours=1))         # FreshnessReport, listing only

Errors name volume, snapshot, file and chunk: SnapshotNotFound and SnapshotInError (kind ``refused``),
ChunkMissing, ChunkCorrupt, SizeMismatch (kind ``recovery_failed``), IndexEntryInvalid (``verification_failed``).
"""
from rehearsal.snapshots.freshness import FreshnessReport, ReplicaLag, VolumeFreshness, replica_lag, volume_freshness
from rehearsal.snapshots.health import StoreHealth, store_health
from rehearsal.snapshots.rebuild import RebuildRecord, rebuild_store
from rehearsal.snapshots.restore import FileResult, RestoreRecord, restore_snapshot
from rehearsal.snapshots.store import (
    DEFAULT_CHUNK_SIZE,
    STATE_COMPLETED,
    STATE_ERROR,
    ChunkCorrupt,
    ChunkMissing,
    FileEntry,
    IndexEntryInvalid,
    IndexKey,
    SizeMismatch,
    SnapshotEntry,
    SnapshotInError,
    SnapshotNotFound,
    SnapshotStore,
    StoreUnavailable,
)
from rehearsal.snapshots.take import SnapshotRecord, take_snapshot
from rehearsal.snapshots.verify import tree_digest, verify_restored

__all__ = [
    "DEFAULT_CHUNK_SIZE", "STATE_COMPLETED", "STATE_ERROR", "ChunkCorrupt", "ChunkMissing", "FileEntry", "FileResult",
    "FreshnessReport", "IndexEntryInvalid", "IndexKey", "RebuildRecord", "ReplicaLag", "RestoreRecord", "SizeMismatch",
    "SnapshotEntry", "SnapshotInError", "SnapshotNotFound", "SnapshotRecord", "SnapshotStore", "StoreHealth",
    "StoreUnavailable", "VolumeFreshness", "rebuild_store", "replica_lag", "restore_snapshot", "store_health",
    "take_snapshot", "tree_digest", "verify_restored", "volume_freshness",
]
