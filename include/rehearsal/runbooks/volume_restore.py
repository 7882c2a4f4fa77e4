"""The backup-restore runbook for volumes (``docs/ops/07-backup-restore-runbook.md``) as plain functions: which
volumes, which restore point, whether a person must approve, and which volumes a drill samples."""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from datetime import datetime

from rehearsal.errors import PreconditionFailed
from rehearsal.snapshots import IndexKey, SnapshotInError, SnapshotNotFound, SnapshotStore

TARGETS = ("scratch", "in_place")
BACKENDS = ("object_store", "ebs")


def parse_volume_ids(value: object) -> list[str]:
    """``vol-3``, ``vol-3,vol-7``, or a JSON list; duplicates dropped, order kept.

    :raises PreconditionFailed: empty, or an id that cannot be a volume id
    """
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            raise PreconditionFailed(f"volume_id {value!r} is not a JSON list") from None
    items = value if isinstance(value, list) else str(value or "").split(",")
    ids = list(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))
    if not ids:
        raise PreconditionFailed("volume_id is empty: name at least one volume (vol-3, or vol-3,vol-7)")
    bad = [i for i in ids if "/" in i or "--" in i or " " in i]
    if bad:
        raise PreconditionFailed(f"not a volume id: {', '.join(bad)}")
    return ids


def check_target(target: str, backend: str) -> None:
    if target not in TARGETS:
        raise PreconditionFailed(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    if backend not in BACKENDS:
        raise PreconditionFailed(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if backend == "ebs" and target == "in_place":
        raise PreconditionFailed("backend ebs restores into a new volume; target in_place needs backend object_store")


def needs_approval(mode: str, approve: str, target: str) -> bool:
    """Only an in-place restore in an incident waits for a person: it replaces the volume's bytes."""
    return mode == "incident" and approve == "wait" and target == "in_place"


@dataclass(frozen=True)
class RestorePoint:
    volume_id: str
    snapshot_id: str
    key: str
    created_at: str
    age_seconds: float
    rpo_seconds: float
    why: str

    @property
    def within_rpo(self) -> bool:
        return self.age_seconds <= self.rpo_seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "within_rpo": self.within_rpo}


def restore_point(store: SnapshotStore, volume_id: str, snapshot_id: str | None, now: datetime,
                  rpo_seconds: float) -> RestorePoint:
    """The snapshot a volume is restored from: the one asked for (it must be restorable), or its newest restorable.

    :raises SnapshotNotFound: the volume has no restorable snapshot, or the one asked for is not in the index
    :raises SnapshotInError: the one asked for ended in state error
    """
    if snapshot_id:
        key: IndexKey = store.find(snapshot_id, volume_id)
        if not key.restorable:
            raise SnapshotInError(snapshot_id, volume_id, key.state, store.location(key.key))
        why = "asked for"
    else:
        newest = store.newest_restorable(volume_id)
        if newest is None:
            raise SnapshotNotFound("completed", f"the index of {store.url}: volume {volume_id} has no restorable "
                                   "snapshot", volume_id)
        key, why = newest, "the newest restorable snapshot"
    age = (now - key.created_at).total_seconds()
    return RestorePoint(volume_id, key.snapshot_id, key.key, key.created_at.isoformat(), age, rpo_seconds, why)


def drill_sample(volumes: list[dict], sample_size: int = 1, seed: int | None = None) -> list[dict]:
    """What a restore drill restores: a random sample, the largest, and every volume marked critical; each with
    why it was picked. ``volumes``: ``{"volume_id", "size_bytes", "critical"}``."""
    if not volumes:
        raise PreconditionFailed("no volume to restore: the inventory lists none")
    picked: dict[str, list[str]] = {}
    largest = max(volumes, key=lambda v: v.get("size_bytes") or 0)
    picked.setdefault(largest["volume_id"], []).append("the largest")
    for v in volumes:
        if v.get("critical"):
            picked.setdefault(v["volume_id"], []).append("marked critical")
    rng = random.Random(seed)
    for v in rng.sample(volumes, min(sample_size, len(volumes))):
        picked.setdefault(v["volume_id"], []).append("random sample")
    return [{"volume_id": vid, "why": " and ".join(why)} for vid, why in picked.items()]
