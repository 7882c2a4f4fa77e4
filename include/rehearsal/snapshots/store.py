"""The snapshot store on S3: content-addressed chunks plus a metadata index whose keys alone say what exists.

Layout under ``s3://<bucket>/<prefix>``::

    chunks/<sha256[:2]>/<sha256>                                          one chunk, named by its content
    index/<volume_id>/<created_at %Y%m%dT%H%M%S%fZ>--<snapshot_id>--<state>.json   one per finished snapshot

A chunk's name is the sha256 of its bytes, so identical content is stored once and every snapshot after the
first is incremental. An index key carries volume, time, id and state, so freshness, lag and "what is the
newest restorable snapshot" come from listing alone (one call per 1000 keys), never a GET per snapshot.
Keys within a volume sort by time, so the newest is the last one listed.

Takes a boto3 S3 client (operators build it from an Airflow connection, the sandbox from its env).
Nothing here deletes anything; a chunk PUT can only rewrite the same bytes under the same name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from rehearsal.errors import ManifestError, PreconditionFailed, RestoreError

log = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 4 * 1024 * 1024
READ_PIECE = 1024 * 1024
STATE_COMPLETED = "completed"
STATE_ERROR = "error"
STATES = (STATE_COMPLETED, STATE_ERROR)
TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
INDEX_FORMAT = "rehearsal-snapshot-index/1"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+=@-]*$")
MISSING_CODES = ("NoSuchKey", "404", "NotFound")


# -- errors ------------------------------------------------------------------------------------------------------
# Each names volume, snapshot, file and chunk where it knows them, and carries them as attributes for the report.


def _where(volume_id: str | None, snapshot_id: str | None) -> str:
    parts = [f"volume {volume_id}" if volume_id else "", f"snapshot {snapshot_id}" if snapshot_id else ""]
    return " ".join(p for p in parts if p) or "snapshot store"


class SnapshotNotFound(PreconditionFailed):
    """The snapshot is not in the store's index (or, for EBS, not in the region): nothing was touched.

    ``where`` completes "is not in ...": ``the index of s3://bucket/prefix/`` or ``EBS in us-east-1``.
    """

    def __init__(self, snapshot_id: str, where: str, volume_id: str | None = None) -> None:
        self.snapshot_id, self.volume_id, self.where = snapshot_id, volume_id, where
        scope = f" (volume {volume_id})" if volume_id else ""
        super().__init__(f"snapshot {snapshot_id}{scope} is not in {where}")


class SnapshotInError(PreconditionFailed):
    """The snapshot finished in state ``error`` (or any state but completed): it is not restorable."""

    def __init__(self, snapshot_id: str, volume_id: str | None, state: str, where: str) -> None:
        self.snapshot_id, self.volume_id, self.state, self.where = snapshot_id, volume_id, state, where
        super().__init__(f"{_where(volume_id, snapshot_id)} is in state {state!r}, not 'completed': "
                         f"not restorable ({where})")


class ChunkMissing(RestoreError):
    """A chunk the index names is not in the store."""

    def __init__(self, chunk: str, where: str, volume_id: str | None = None, snapshot_id: str | None = None,
                 path: str | None = None, position: str = "") -> None:
        self.chunk, self.where, self.volume_id, self.snapshot_id, self.path = chunk, where, volume_id, snapshot_id, path
        of_file = f" of file {path}{position}" if path else ""
        super().__init__(f"{_where(volume_id, snapshot_id)}: chunk {chunk}{of_file} is missing from {where}")


class ChunkCorrupt(RestoreError):
    """A chunk's bytes do not hash to its name (sha256 mismatch)."""

    def __init__(self, chunk: str, actual: str, where: str, volume_id: str | None = None,
                 snapshot_id: str | None = None, path: str | None = None, position: str = "") -> None:
        self.chunk, self.actual, self.where = chunk, actual, where
        self.volume_id, self.snapshot_id, self.path = volume_id, snapshot_id, path
        of_file = f" of file {path}{position}" if path else ""
        super().__init__(f"{_where(volume_id, snapshot_id)}: chunk {chunk}{of_file} is corrupt in {where}: "
                         f"its bytes hash to {actual}")


class SizeMismatch(RestoreError):
    """A restored file's (or chunk's) size differs from what the index says."""

    def __init__(self, path: str, actual: int, expected: int, volume_id: str | None = None,
                 snapshot_id: str | None = None, chunk: str | None = None, detail: str = "") -> None:
        self.path, self.actual, self.expected, self.chunk = path, actual, expected, chunk
        self.volume_id, self.snapshot_id = volume_id, snapshot_id
        what = f"chunk {chunk} of file {path}" if chunk else f"file {path}"
        super().__init__(f"{_where(volume_id, snapshot_id)}: {what} restored {actual} bytes, "
                         f"the index says {expected}{detail}")


class IndexEntryInvalid(ManifestError):
    """An index object (or key) is missing, unreadable or malformed; the message names the key."""


class StoreUnavailable(RestoreError):
    """The store's bucket does not exist (NoSuchBucket) or cannot be listed."""

    def __init__(self, bucket: str, detail: str) -> None:
        self.bucket = bucket
        super().__init__(f"s3://{bucket}: {detail}")


# -- records -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One regular file of a snapshot: relative POSIX path, size, permission bits and its chunks in order."""

    path: str
    size: int
    mode: int
    chunks: tuple[str, ...]

    def to_dict(self) -> dict:
        return {"path": self.path, "size": self.size, "mode": self.mode, "chunks": list(self.chunks)}


@dataclass(frozen=True)
class IndexKey:
    """What an index key says without reading the object: volume, time, snapshot id, state."""

    volume_id: str
    created_at: datetime
    snapshot_id: str
    state: str
    key: str  # the full object key, prefix included
    size: int = 0
    last_modified: datetime | None = None
    etag: str = ""
    prefix: str = ""  # the store's prefix the key sits under

    @property
    def restorable(self) -> bool:
        return self.state == STATE_COMPLETED

    @property
    def relative_key(self) -> str:
        """The key from ``index/`` on: the same in every copy of the store, whatever its prefix."""
        return self.key[len(self.prefix):]

    def to_dict(self) -> dict:
        return {"volume_id": self.volume_id, "created_at": self.created_at.isoformat(), "snapshot_id": self.snapshot_id,
                "state": self.state, "key": self.key}


@dataclass(frozen=True)
class SnapshotEntry:
    """One index object: a finished snapshot of a volume and the chunks of every file in it."""

    snapshot_id: str
    volume_id: str
    created_at: datetime
    parent: str | None
    state: str
    files: tuple[FileEntry, ...]
    total_bytes: int
    chunk_size: int

    @property
    def restorable(self) -> bool:
        return self.state == STATE_COMPLETED

    def chunk_names(self) -> set[str]:
        return {c for f in self.files for c in f.chunks}

    def to_dict(self) -> dict:
        return {"format": INDEX_FORMAT, "snapshot_id": self.snapshot_id, "volume_id": self.volume_id,
                "created_at": self.created_at.isoformat(), "parent": self.parent, "state": self.state,
                "files": [f.to_dict() for f in self.files], "total_bytes": self.total_bytes,
                "chunk_size": self.chunk_size}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


@dataclass(frozen=True)
class ChunkInfo:
    digest: str
    key: str
    size: int
    etag: str = ""


@dataclass
class ApiCalls:
    """S3 calls a store made, total and by operation (thread-safe: restores call from many threads)."""

    total: int = 0
    by_operation: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, operation: str) -> None:
        with self._lock:
            self.total += 1
            self.by_operation[operation] += 1

    def to_dict(self) -> dict:
        return {"total": self.total, **dict(self.by_operation)}


# -- parsing -----------------------------------------------------------------------------------------------------


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str) -> datetime:
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def check_name(kind: str, value: str) -> str:
    """Volume and snapshot ids go into keys: letters, digits and ``._:+=@-``, no ``/`` and no ``--``."""
    if not isinstance(value, str) or not NAME.match(value) or "--" in value:
        raise PreconditionFailed(f"{kind} {value!r} cannot name a snapshot key: use letters, digits and ._:+=@- "
                                 "(no '/', no '--')")
    return value


def parse_index_key(key: str, prefix: str = "") -> IndexKey | None:
    """An index key's parts, or None when the key is not an index key of this layout."""
    rest = key[len(prefix):] if key.startswith(prefix) else None
    if rest is None or not rest.startswith("index/") or not rest.endswith(".json"):
        return None
    parts = rest[len("index/"):-len(".json")].split("/")
    if len(parts) != 2:
        return None
    volume_id, name = parts
    pieces = name.split("--")
    if len(pieces) != 3 or pieces[2] not in STATES or not pieces[1]:
        return None
    try:
        created_at = parse_time(pieces[0])
    except ValueError:
        return None
    return IndexKey(volume_id, created_at, pieces[1], pieces[2], key, prefix=prefix)


def parse_entry(body: bytes | str, where: str) -> SnapshotEntry:
    """An index object, checked field by field; IndexEntryInvalid names the key and the field."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise IndexEntryInvalid(f"{where}: index entry is not valid JSON") from None
    if not isinstance(data, dict):
        raise IndexEntryInvalid(f"{where}: index entry is not a JSON object")
    for name in ("snapshot_id", "volume_id", "created_at", "state", "files", "total_bytes", "chunk_size"):
        if name not in data:
            raise IndexEntryInvalid(f"{where}: index entry lacks field {name!r}")
    if data["state"] not in STATES:
        raise IndexEntryInvalid(f"{where}: index entry has unknown state {data['state']!r}")
    files = []
    for i, item in enumerate(data["files"]):
        try:
            entry = FileEntry(str(item["path"]), int(item["size"]), int(item["mode"]), tuple(item["chunks"]))
        except (KeyError, TypeError, ValueError):
            raise IndexEntryInvalid(f"{where}: file #{i} lacks path, size, mode or chunks") from None
        bad = next((c for c in entry.chunks if not isinstance(c, str) or not SHA256_HEX.match(c)), None)
        if bad is not None:
            raise IndexEntryInvalid(f"{where}: file {entry.path} names chunk {bad!r}, not a sha256")
        files.append(entry)
    try:
        created_at = datetime.fromisoformat(data["created_at"])
    except (TypeError, ValueError):
        raise IndexEntryInvalid(f"{where}: created_at {data['created_at']!r} is not an ISO timestamp") from None
    return SnapshotEntry(str(data["snapshot_id"]), str(data["volume_id"]), created_at, data.get("parent"),
                         data["state"], tuple(files), int(data["total_bytes"]), int(data["chunk_size"]))


def error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


# -- the store ---------------------------------------------------------------------------------------------------


class SnapshotStore:
    """Chunks and index of volume snapshots under ``s3://bucket/prefix``; counts every S3 call in ``api_calls``."""

    def __init__(self, s3_client: Any, bucket: str, prefix: str = "", chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        if chunk_size <= 0:
            raise PreconditionFailed(f"chunk size must be positive, not {chunk_size}")
        self.s3 = s3_client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.chunk_size = chunk_size
        self.calls = ApiCalls()

    def __repr__(self) -> str:
        return f"SnapshotStore({self.url})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def api_calls(self) -> int:
        return self.calls.total

    # -- layout -------------------------------------------------------------------------------------------------
    def chunk_key(self, digest: str) -> str:
        return f"{self.prefix}chunks/{digest[:2]}/{digest}"

    def index_prefix(self, volume_id: str | None = None) -> str:
        return f"{self.prefix}index/{volume_id}/" if volume_id else f"{self.prefix}index/"

    def index_key(self, entry: SnapshotEntry) -> str:
        return (f"{self.index_prefix(entry.volume_id)}{format_time(entry.created_at)}--"
                f"{entry.snapshot_id}--{entry.state}.json")

    def location(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    # -- bucket -------------------------------------------------------------------------------------------------
    def create_bucket(self, region: str | None = None) -> None:
        """Create the bucket (for a rebuild into a new primary); ``region`` other than us-east-1 is a constraint."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        self.calls.add("create_bucket")
        self.s3.create_bucket(**kwargs)

    # -- listing ------------------------------------------------------------------------------------------------
    def iter_objects(self, prefix: str, start_after: str | None = None) -> Iterator[dict]:
        """Every object under a prefix, one call per page of up to 1000 keys; StoreUnavailable on NoSuchBucket."""
        from botocore.exceptions import ClientError  # here, not at import: DAG parsing stays fast

        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            self.calls.add("list_objects_v2")
            try:
                page = self.s3.list_objects_v2(**kwargs)
            except ClientError as exc:
                if error_code(exc) == "NoSuchBucket":
                    raise StoreUnavailable(self.bucket, "bucket does not exist (NoSuchBucket)") from None
                raise
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
            kwargs.pop("StartAfter", None)

    def index_entries(self, volume_id: str | None = None) -> Iterator[IndexKey]:
        """Index keys parsed (no GET), oldest first within each volume; keys of another layout are logged and skipped."""
        for item in self.iter_objects(self.index_prefix(volume_id)):
            parsed = parse_index_key(item["Key"], self.prefix)
            if parsed is None:
                log.warning("%s: not an index key of this layout, skipped", self.location(item["Key"]))
                continue
            yield replace(parsed, size=int(item.get("Size", 0)), last_modified=item.get("LastModified"),
                          etag=str(item.get("ETag", "")).strip('"'))

    def iter_chunks(self) -> Iterator[ChunkInfo]:
        """Every chunk in the store, from listing (one call per 1000 chunks)."""
        for item in self.iter_objects(f"{self.prefix}chunks/"):
            digest = item["Key"].rsplit("/", 1)[-1]
            yield ChunkInfo(digest, item["Key"], int(item["Size"]), str(item.get("ETag", "")).strip('"'))

    def newest_restorable(self, volume_id: str) -> IndexKey | None:
        """The volume's newest snapshot in state completed, from listing its index keys alone."""
        newest = None
        for key in self.index_entries(check_name("volume", volume_id)):
            if key.restorable:
                newest = key
        return newest

    def find(self, snapshot_id: str, volume_id: str | None = None) -> IndexKey:
        """A snapshot's index key by id, by listing (only the volume's keys when ``volume_id`` is given)."""
        for key in self.index_entries(volume_id):
            if key.snapshot_id == snapshot_id:
                return key
        raise SnapshotNotFound(snapshot_id, f"the index of {self.url}", volume_id)

    # -- chunks -------------------------------------------------------------------------------------------------
    def put_chunk(self, data: bytes, digest: str | None = None) -> str:
        """Store one chunk under the sha256 of its bytes (computed, or checked when given); returns the digest."""
        actual = hashlib.sha256(data).hexdigest()
        if digest is not None and digest != actual:
            raise ChunkCorrupt(digest, actual, "the bytes handed to put_chunk")
        self.calls.add("put_object")
        self.s3.put_object(Bucket=self.bucket, Key=self.chunk_key(actual), Body=data)
        return actual

    def has_chunk(self, digest: str) -> bool:
        """Whether the chunk is stored (one HEAD)."""
        from botocore.exceptions import ClientError

        self.calls.add("head_object")
        try:
            self.s3.head_object(Bucket=self.bucket, Key=self.chunk_key(digest))
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                return False
            raise
        return True

    def get_chunk(self, digest: str, sink: Callable[[bytes], None], piece: int = READ_PIECE) -> tuple[int, str]:
        """Stream one chunk through sha256 into ``sink`` in pieces (never the whole chunk at once).

        Returns (bytes, sha256 of those bytes); the caller compares the digest with the name. ChunkMissing when
        the store lacks it (the caller re-raises with volume, snapshot and file).
        """
        from botocore.exceptions import ClientError

        key = self.chunk_key(digest)
        self.calls.add("get_object")
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                raise ChunkMissing(digest, self.location(key)) from None
            raise
        hasher = hashlib.sha256()
        size = 0
        try:
            for data in iter(lambda: body.read(piece), b""):
                hasher.update(data)
                size += len(data)
                sink(data)
        finally:
            body.close()
        return size, hasher.hexdigest()

    def read_chunk(self, digest: str) -> bytes:
        """A whole chunk, checked against its name (chunks are at most ``chunk_size``; for copies, not restores)."""
        parts: list[bytes] = []
        _, actual = self.get_chunk(digest, parts.append)
        if actual != digest:
            raise ChunkCorrupt(digest, actual, self.location(self.chunk_key(digest)))
        return b"".join(parts)

    # -- index --------------------------------------------------------------------------------------------------
    def write_index_entry(self, entry: SnapshotEntry) -> str:
        """Write a finished snapshot's index object (after all its chunks); returns its key."""
        check_name("volume", entry.volume_id)
        check_name("snapshot", entry.snapshot_id)
        key = self.index_key(entry)
        self.write_index_object(key, entry.to_json().encode())
        return key

    def write_index_object(self, key: str, body: bytes) -> None:
        """Write an index object as is (a rebuild copies them from backups)."""
        self.calls.add("put_object")
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    def read_index_object(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        self.calls.add("get_object")
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                raise IndexEntryInvalid(f"{self.location(key)}: index entry is missing") from None
            if error_code(exc) == "NoSuchBucket":
                raise StoreUnavailable(self.bucket, "bucket does not exist (NoSuchBucket)") from None
            raise

    def read_snapshot(self, snapshot: str | IndexKey, volume_id: str | None = None) -> SnapshotEntry:
        """A snapshot's index entry, by index key (one GET) or by snapshot id (a listing, then one GET).

        :param snapshot: an ``IndexKey``, a full object key ending in ``.json``, or a snapshot id
        :param volume_id: narrows the listing to one volume when looking up by id
        """
        if isinstance(snapshot, IndexKey):
            key = snapshot
        elif snapshot.endswith(".json") and "index/" in snapshot:
            parsed = parse_index_key(snapshot, self.prefix)
            if parsed is None:
                raise IndexEntryInvalid(f"{self.location(snapshot)}: not an index key of {self.url}")
            key = parsed
        else:
            key = self.find(snapshot, volume_id)
        where = self.location(key.key)
        entry = parse_entry(self.read_index_object(key.key), where)
        if (entry.snapshot_id, entry.volume_id, entry.state) != (key.snapshot_id, key.volume_id, key.state):
            raise IndexEntryInvalid(f"{where}: entry says volume {entry.volume_id} snapshot {entry.snapshot_id} "
                                    f"state {entry.state}, its key says volume {key.volume_id} snapshot "
                                    f"{key.snapshot_id} state {key.state}")
        return entry


def record_dict(record: Any) -> dict:
    """``asdict`` for records, datetimes as ISO strings."""
    def convert(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value
    return convert(asdict(record))
