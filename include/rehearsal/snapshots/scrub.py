"""Scrub of the snapshot store: read a rotating subset of chunks each run and check each one's sha256, and check every
index entry's chunk references against the chunk listing.

Why: chunks are deduplicated, so one corrupt or lost chunk silently breaks every later snapshot that shares it, and
nothing else reads chunk bytes on a schedule (freshness reads index keys only; drills restore a sample).

The rotation is deterministic and needs no per-chunk state. A chunk belongs to slot ``int(sha256[:16]) % slots``;
run ``n`` (the wall clock divided by the schedule interval) checks slot ``n % slots``. With
``slots = period // interval - 1`` two checks of one slot are at most ``(slots + 1) x interval <= period`` apart
even when each run starts up to one interval late, so every chunk is read at least once per period (default 7 days).
A run that finds earlier runs missing checks their slots too (the cursor ``last_run`` in the state), all slots at
most. A new chunk is first read within one period of its upload.

State lives in the store itself (``<prefix>scrub/state.json``, one GET and one PUT a run), never on a worker: the
geometry, the last run number, when each slot was last read, and the chunks found bad with every volume and
snapshot that references them. The snapshotter reads it (``bad_chunks``) and re-uploads a bad chunk instead of
deduplicating against it; freshness reads it (``damaged_snapshots``) and holds a volume red while its newest
snapshot depends on a bad chunk. Every run reads the chunks marked bad again; one that hashes right again (a
snapshot re-uploaded it) is cleared and reported as repaired.

Nothing here deletes or rewrites a chunk or an index entry: the scrub only reads them.
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from rehearsal.checks import CheckSet
from rehearsal.errors import ManifestError, PreconditionFailed
from rehearsal.snapshots.store import (
    MISSING_CODES,
    SHA256_HEX,
    ChunkMissing,
    IndexEntryInvalid,
    IndexKey,
    SnapshotStore,
    StoreUnavailable,
    error_code,
    parse_entry,
    record_dict,
)

log = logging.getLogger(__name__)

STATE_KEY = "scrub/state.json"
STATE_FORMAT = "rehearsal-snapshot-scrub/1"
DEFAULT_PERIOD = timedelta(days=7)
DEFAULT_INTERVAL = timedelta(hours=6)
CORRUPT, MISSING = "corrupt", "missing"
NAMED = 20  # bad chunks named in a message; every one is in the record and the state
REFERENCES_KEPT = 1000  # references kept per bad chunk in the state; the count is always complete


class ScrubStateInvalid(ManifestError):
    """The scrub's state object is unreadable; the message names its key."""


# -- rotation ----------------------------------------------------------------------------------------------------


def slot_count(period: timedelta, interval: timedelta) -> int:
    """Slots so that every chunk is read at least once per ``period`` when the scrub runs every ``interval``
    (each run up to one interval late): ``period // interval - 1``, at least 1."""
    if interval.total_seconds() <= 0 or period.total_seconds() <= 0:
        raise PreconditionFailed(f"the scrub's period ({period}) and interval ({interval}) must be positive")
    if interval * 2 > period:
        raise PreconditionFailed(f"a scrub every {interval} cannot read every chunk within {period}: run it at least "
                                 "twice per period")
    return max(1, math.floor(period / interval) - 1)


def slot_of(digest: str, slots: int) -> int:
    """The slot a chunk is read in: its sha256's first 64 bits modulo ``slots`` (uniform: the name is a hash)."""
    return int(digest[:16], 16) % slots


def run_number(now: datetime, interval: timedelta) -> int:
    return int(now.timestamp() // interval.total_seconds())


def due_slots(state: ScrubState | None, slots: int, run: int, full: bool = False) -> list[int]:
    """The slots this run reads: its own and those of the runs missed since the last one (all of them at most).

    A first run, or one after the geometry changed, reads its own slot; a second run with the same number (a retry
    or a manual run) reads none beyond the chunks marked bad.
    """
    if full:
        return list(range(slots))
    if state is None or state.slots != slots or state.last_run is None:
        return [run % slots]
    behind = run - state.last_run
    if behind <= 0:
        return []
    if behind >= slots:
        return list(range(slots))
    return sorted({(state.last_run + i) % slots for i in range(1, behind + 1)})


# -- state -------------------------------------------------------------------------------------------------------


@dataclass
class BadChunk:
    """A chunk the scrub found corrupt (bytes that do not hash to its name) or missing (referenced, not listed)."""

    chunk: str
    problem: str  # corrupt | missing
    detail: str
    found_at: str
    references: list[dict]  # {"volume_id", "snapshot_id"}, up to REFERENCES_KEPT
    reference_count: int

    def to_dict(self) -> dict:
        return record_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BadChunk:
        return cls(str(data["chunk"]), str(data["problem"]), str(data.get("detail", "")), str(data.get("found_at", "")),
                   [dict(r) for r in data.get("references", [])], int(data.get("reference_count", 0)))

    def describe(self) -> str:
        return f"chunk {self.chunk} is {self.problem} ({self.detail}): {describe_references(self.references, self.reference_count)}"


@dataclass
class ScrubState:
    """What the scrub keeps in the store between runs."""

    slots: int
    interval_seconds: float
    last_run: int | None = None
    last_run_at: str | None = None
    slot_checked_at: dict[str, str] = field(default_factory=dict)  # slot -> when its chunks were last read
    bad: dict[str, BadChunk] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": STATE_FORMAT, "slots": self.slots, "interval_seconds": self.interval_seconds,
                "last_run": self.last_run, "last_run_at": self.last_run_at, "slot_checked_at": self.slot_checked_at,
                "bad": {d: b.to_dict() for d, b in sorted(self.bad.items())}}

    @classmethod
    def from_dict(cls, data: dict, where: str = STATE_KEY) -> ScrubState:
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ScrubStateInvalid(f"{where}: not a scrub state of format {STATE_FORMAT}")
        try:
            return cls(int(data["slots"]), float(data["interval_seconds"]), data.get("last_run"), data.get("last_run_at"),
                       {str(k): str(v) for k, v in (data.get("slot_checked_at") or {}).items()},
                       {d: BadChunk.from_dict(b) for d, b in (data.get("bad") or {}).items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise ScrubStateInvalid(f"{where}: scrub state is malformed ({exc!r})") from None


def state_key(store: SnapshotStore) -> str:
    return f"{store.prefix}{STATE_KEY}"


def read_state(store: SnapshotStore) -> ScrubState | None:
    """The scrub's state (one GET), or None when the store has never been scrubbed."""
    from botocore.exceptions import ClientError

    key = state_key(store)
    store.calls.add("get_object")
    try:
        body = store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if error_code(exc) in MISSING_CODES:
            return None
        if error_code(exc) == "NoSuchBucket":
            raise StoreUnavailable(store.bucket, "bucket does not exist (NoSuchBucket)") from None
        raise
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ScrubStateInvalid(f"{store.location(key)}: scrub state is not valid JSON") from None
    return ScrubState.from_dict(data, store.location(key))


def write_state(store: SnapshotStore, state: ScrubState) -> str:
    key = state_key(store)
    store.calls.add("put_object")
    store.s3.put_object(Bucket=store.bucket, Key=key, Body=json.dumps(state.to_dict(), indent=1).encode(),
                        ContentType="application/json")
    return key


def bad_chunks(store: SnapshotStore) -> set[str]:
    """Chunks the scrub marked bad (one GET): a snapshot re-uploads them instead of deduplicating against them.

    A state that cannot be read does not stop a snapshot (that would lose restore points): it is logged, and the
    snapshot deduplicates as it would without a scrub; the scrub itself fails on it, naming it.
    """
    try:
        state = read_state(store)
    except (ScrubStateInvalid, StoreUnavailable) as exc:
        log.warning("%s: the scrub's marks are not readable, no chunk re-uploaded for them: %s", store.url, exc)
        return set()
    return set(state.bad) if state else set()


def damaged_snapshots(state: ScrubState | None) -> dict[tuple[str, str], list[str]]:
    """(volume, snapshot) -> the bad chunks it references, described (``<sha256> (corrupt)``)."""
    out: dict[tuple[str, str], list[str]] = {}
    for bad in (state.bad.values() if state else ()):
        for ref in bad.references:
            out.setdefault((ref["volume_id"], ref["snapshot_id"]), []).append(f"{bad.chunk} ({bad.problem})")
    return out


def describe_references(refs: list[dict], count: int | None = None) -> str:
    """``referenced by volume v1 (snapshots s1, s2), volume v2 (snapshot s3)``, or ``referenced by no snapshot``."""
    if not refs:
        return "referenced by no snapshot"
    by_volume: dict[str, list[str]] = {}
    for ref in refs:
        by_volume.setdefault(ref["volume_id"], []).append(ref["snapshot_id"])
    parts = [f"volume {v} (snapshot{'s' if len(s) > 1 else ''} {', '.join(sorted(s))})" for v, s in sorted(by_volume.items())]
    more = f" and {count - len(refs)} more reference(s)" if count and count > len(refs) else ""
    return "referenced by " + ", ".join(parts) + more


# -- the scrub ---------------------------------------------------------------------------------------------------


@dataclass
class ScrubRecord:
    """What one scrub run read and found."""

    store: str
    state_key: str
    slots: int
    run: int
    slots_checked: list[int]
    full: bool
    period_seconds: float
    interval_seconds: float
    chunks_listed: int
    chunks_checked: int
    bytes_checked: int
    index_entries: int
    references_checked: int
    seconds: float
    mb_per_second: float
    corrupt: dict[str, dict]  # chunk -> BadChunk as a dict
    missing: dict[str, dict]
    repaired: list[str]  # chunks marked bad before that read right again now
    index_unreadable: dict[str, str]  # index key -> why
    volumes_affected: list[str]
    snapshots_affected: list[str]
    oldest_slot_check: str | None  # when the least recently read slot was read (None: some slot never was)
    api_calls: int
    checks: list[dict]
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return record_dict(self)


def _hash_chunk(store: SnapshotStore, digest: str) -> tuple[str, int, str | None]:
    """(digest, bytes read, actual sha256 or None when the chunk vanished since the listing)."""
    try:
        size, actual = store.get_chunk(digest, lambda _data: None, piece=store.chunk_size)
    except ChunkMissing:
        return digest, 0, None
    return digest, size, actual


def _read_entry(store: SnapshotStore, key: IndexKey):
    try:
        return key, parse_entry(store.read_index_object(key.key), store.location(key.key)), None
    except IndexEntryInvalid as exc:
        return key, None, str(exc)


def _add_reference(refs: dict[str, list[dict]], counts: dict[str, int], digest: str, volume_id: str,
                   snapshot_id: str) -> None:
    counts[digest] = counts.get(digest, 0) + 1
    kept = refs.setdefault(digest, [])
    if len(kept) < REFERENCES_KEPT:
        kept.append({"volume_id": volume_id, "snapshot_id": snapshot_id})


def scrub_store(store: SnapshotStore, period: timedelta = DEFAULT_PERIOD, interval: timedelta = DEFAULT_INTERVAL,
                now: datetime | None = None, full: bool = False, workers: int = 8) -> ScrubRecord:
    """One scrub run of ``store``: this run's slots of chunks (and every chunk marked bad) read and hashed, every
    index entry's references checked against the chunk listing; the state written back.

    :param period: every chunk is read at least once per period ...
    :param interval: ... when the scrub runs every ``interval`` (the DAG's schedule)
    :param full: read every chunk now (an incident's check, or a benchmark)
    :param workers: parallel GETs
    :returns: the record; its ``checks`` are ``chunk_hashes``, ``chunk_references`` and ``index_entries``, and
        ``ok`` is False when any failed (each bad chunk named with every volume and snapshot referencing it)
    """
    started = time.monotonic()
    calls_before = store.api_calls
    now = (now or datetime.now(UTC)).astimezone(UTC)
    slots = slot_count(period, interval)
    run = run_number(now, interval)
    before = read_state(store)
    due = due_slots(before, slots, run, full)
    due_set = set(due)
    previously_bad = set(before.bad) if before else set()
    listed: set[bytes] = set()  # 32 bytes a chunk, not a 64-character string: the listing is held for the references
    to_read: list[str] = []
    for chunk in store.iter_chunks():
        if not SHA256_HEX.match(chunk.digest):
            log.warning("%s: not a chunk of this layout, skipped", store.location(chunk.key))
            continue
        listed.add(bytes.fromhex(chunk.digest))
        if slot_of(chunk.digest, slots) in due_set or chunk.digest in previously_bad:
            to_read.append(chunk.digest)

    corrupt_actual: dict[str, str] = {}
    vanished: set[str] = set()
    bytes_checked = 0
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="scrub") as pool:
        for digest, size, actual in pool.map(lambda d: _hash_chunk(store, d), to_read):
            bytes_checked += size
            if actual is None:
                vanished.add(digest)
            elif actual != digest:
                corrupt_actual[digest] = actual
        hashed_seconds = time.monotonic() - started

        # every restorable index entry's references against the listing (one GET per entry, in parallel); an entry
        # in state error may name chunks its failed upload never stored, and nothing restores from it
        keys = [k for k in store.index_entries() if k.restorable]
        refs: dict[str, list[dict]] = {}
        counts: dict[str, int] = {}
        unreadable: dict[str, str] = {}
        references = 0
        bad_now = set(corrupt_actual) | vanished
        missing: set[str] = set()
        unlisted: dict[str, bool] = {}  # referenced, not in the listing: present now? (a snapshot that finished
        # after the listing references chunks uploaded after it: one HEAD each tells them from lost ones)
        for key, entry, why in pool.map(lambda k: _read_entry(store, k), keys):
            if entry is None:
                unreadable[key.key] = why or "unreadable"
                continue
            for digest in entry.chunk_names():
                references += 1
                if bytes.fromhex(digest) not in listed and digest not in unlisted:
                    unlisted[digest] = store.has_chunk(digest)
                if digest in vanished or (digest in unlisted and not unlisted[digest]):
                    missing.add(digest)
                    _add_reference(refs, counts, digest, entry.volume_id, entry.snapshot_id)
                elif digest in bad_now:
                    _add_reference(refs, counts, digest, entry.volume_id, entry.snapshot_id)

    found_at = now.isoformat()
    old = before.bad if before else {}
    corrupt = {d: BadChunk(d, CORRUPT, f"its bytes hash to {a}", old[d].found_at if d in old and old[d].problem == CORRUPT
                           else found_at, refs.get(d, []), counts.get(d, 0)) for d, a in sorted(corrupt_actual.items())}
    gone = {d: BadChunk(d, MISSING, f"not in the store's chunk listing ({store.location(store.chunk_key(d))})",
                        old[d].found_at if d in old and old[d].problem == MISSING else found_at,
                        refs.get(d, []), counts.get(d, 0)) for d in sorted(missing)}
    still_bad = {**corrupt, **gone}
    # Every chunk marked bad before was read again (or, missing, looked for again): those not bad now hash right
    # (a snapshot re-uploaded them) or are referenced by nothing any more.
    repaired = sorted(d for d in previously_bad if d not in still_bad)

    same_geometry = before is not None and before.slots == slots and before.last_run is not None
    state = ScrubState(slots, interval.total_seconds(), max(run, before.last_run) if same_geometry else run, found_at,
                       dict(before.slot_checked_at) if same_geometry else {}, still_bad)
    for slot in due:
        state.slot_checked_at[str(slot)] = found_at
    key = write_state(store, state)

    checks = CheckSet(f"scrub of the snapshot store {store.url}")
    checks.add("chunk_hashes", not corrupt,
               f"{len(corrupt)} of {len(to_read)} chunk(s) read are corrupt: " + _named(corrupt.values()) if corrupt else
               f"{len(to_read)} chunk(s) read ({bytes_checked / 1e6:.1f} MB, slot(s) {_slots(due, slots)}), every "
               "sha256 matches its name")
    checks.add("chunk_references", not gone,
               f"{len(gone)} chunk(s) referenced by the index are missing: " + _named(gone.values()) if gone else
               f"all {references} chunk reference(s) of {len(keys)} restorable index entr(y/ies) are in the listing")
    checks.add("index_entries", not unreadable,
               f"{len(unreadable)} index entr(y/ies) unreadable: " + "; ".join(list(unreadable.values())[:NAMED])
               if unreadable else f"all {len(keys)} index entr(y/ies) readable")
    affected = {(r["volume_id"], r["snapshot_id"]) for b in still_bad.values() for r in b.references}
    seen = state.slot_checked_at
    oldest = min(seen.values()) if len(seen) == slots else None
    seconds = time.monotonic() - started
    detail = ("; ".join(c.detail for c in checks.failed) if not checks.ok else
              f"{len(to_read)} chunk(s) read and hashed ({bytes_checked / 1e6:.1f} MB), {references} reference(s) of "
              f"{len(keys)} index entr(y/ies) checked: nothing corrupt or missing")
    if repaired:
        detail += f"; repaired since the last run: {', '.join(repaired[:NAMED])}"
    return ScrubRecord(store.url, store.location(key), slots, run, due, full, period.total_seconds(),
                       interval.total_seconds(), len(listed), len(to_read), bytes_checked, len(keys), references,
                       round(seconds, 3), round(bytes_checked / hashed_seconds / 1e6, 1) if hashed_seconds > 0 else 0.0,
                       {d: b.to_dict() for d, b in corrupt.items()}, {d: b.to_dict() for d, b in gone.items()}, repaired,
                       unreadable, sorted({v for v, _ in affected}), sorted({s for _, s in affected}), oldest,
                       store.api_calls - calls_before, checks.as_dicts(), checks.ok, detail)


def _named(bad: Iterable[BadChunk]) -> str:
    items = list(bad)
    more = f"; and {len(items) - NAMED} more" if len(items) > NAMED else ""
    return "; ".join(b.describe() for b in items[:NAMED]) + more


def _slots(due: list[int], slots: int) -> str:
    if not due:
        return f"none due (of {slots}): only the chunks marked bad"
    if len(due) == slots:
        return f"all {slots}"
    return f"{', '.join(map(str, due))} of {slots}"


def state_summary(state: ScrubState | None) -> dict[str, Any]:
    """For reports: the bad chunks and when the scrub last ran."""
    if state is None:
        return {"scrubbed": False, "bad": {}}
    return {"scrubbed": True, "last_run_at": state.last_run_at, "bad": {d: b.to_dict() for d, b in state.bad.items()}}
