"""The backup store on S3: layout, listing (paged), streaming with sha256, uploads.

Takes a boto3 S3 client; operators build it from an Airflow connection, the sandbox from its env.
Nothing here ever deletes or overwrites an existing backup object.
"""
from __future__ import annotations

import hashlib
import logging
import re
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from rehearsal.backups.manifest import BackupManifest, parse_manifest
from rehearsal.errors import ManifestError

log = logging.getLogger(__name__)
CHUNK = 8 * 1024 * 1024
MANIFEST_NAME = "manifest.json"
# Ranged downloads: parts of PART_SIZE bytes, PARALLEL_GETS at a time; at most PARALLEL_GETS + 1 parts are held in
# memory (fetched or being fetched, not yet hashed), so a 1 GB object costs about 80 MB of buffers, not 1 GB.
PART_SIZE = 16 * 1024 * 1024
PARALLEL_GETS = 4
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime


class BackupStore:
    """Backups of one cluster under ``s3://bucket/<cluster>/{base,dump,wal}/``."""

    def __init__(self, s3_client, bucket: str, cluster: str = "controlplane") -> None:
        self.s3 = s3_client
        self.bucket = bucket
        self.cluster = cluster
        self.api_calls = 0

    # -- layout ---------------------------------------------------------------------------
    def prefix(self, kind: str) -> str:
        return {"base_backup": f"{self.cluster}/base/", "logical_dump": f"{self.cluster}/dump/",
                "wal_archive": f"{self.cluster}/wal/"}[kind]

    def backup_key(self, kind: str, backup_id: str, name: str) -> str:
        return f"{self.prefix(kind)}{backup_id}/{name}"

    def wal_key(self, name: str) -> str:
        return f"{self.prefix('wal_archive')}{name}"

    # -- listing --------------------------------------------------------------------------
    def iter_objects(self, prefix: str, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Every object under a prefix, one API call per page of up to 1000 keys."""
        kwargs = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
        if start_after:
            kwargs["StartAfter"] = start_after
        while True:
            self.api_calls += 1
            page = self.s3.list_objects_v2(**kwargs)
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], item["Size"], item["LastModified"])
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
            kwargs.pop("StartAfter", None)

    def backup_ids(self, kind: str, stored_before: datetime | None = None) -> list[str]:
        """Ids of backups of a kind that have a manifest, oldest first (ids sort by time).

        :param stored_before: only backups whose manifest was certainly stored before this moment
        """
        prefix = self.prefix(kind)
        ids = {o.key[len(prefix):].split("/", 1)[0] for o in self.iter_objects(prefix)
               if o.key.endswith("/" + MANIFEST_NAME)
               and (stored_before is None or stored_by(o.last_modified, stored_before))}
        return sorted(ids)

    def manifest(self, kind: str, backup_id: str) -> BackupManifest:
        from botocore.exceptions import ClientError  # here, not at import: DAG parsing stays fast

        key = self.backup_key(kind, backup_id, MANIFEST_NAME)
        where = f"{kind} {backup_id} (s3://{self.bucket}/{key})"
        try:
            self.api_calls += 1
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ManifestError(f"{where}: manifest is missing") from None
            raise
        return parse_manifest(body, where)

    def latest_manifest(self, kind: str) -> BackupManifest:
        ids = self.backup_ids(kind)
        if not ids:
            raise ManifestError(f"no {kind} with a manifest under s3://{self.bucket}/{self.prefix(kind)}")
        return self.manifest(kind, ids[-1])

    # -- reading --------------------------------------------------------------------------
    def head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        try:
            self.api_calls += 1
            return self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def stream(self, key: str, sink: Callable[[bytes], None] | None = None, parallel: int | None = None,
               part_size: int = PART_SIZE) -> tuple[int, str]:
        """Stream an object through sha256 (and ``sink``), in order; returns (bytes read, hex digest).

        With ``parallel`` > 1 (default ``PARALLEL_GETS``) the object is fetched as ranged GETs of ``part_size``
        bytes, that many at a time, and hashed and handed to ``sink`` part by part, in order, while later parts
        download; at most ``parallel + 1`` parts are held in memory. The first part's answer gives the object's
        real size and ETag; later parts are asked for with ``If-Match`` on that ETag, so an object replaced half-way
        fails instead of being hashed as a mix of two versions. ``parallel=1`` is one streamed GET.

        :raises RuntimeError: a part came back shorter or longer than asked (named by object and byte range)
        """
        parallel = PARALLEL_GETS if parallel is None else parallel
        digest = hashlib.sha256()
        size = 0
        with closing(self._parts(key, parallel, part_size)) as parts:  # closed at once when the sink fails
            for chunk in parts:
                digest.update(chunk)
                size += len(chunk)
                if sink:
                    sink(chunk)
        return size, digest.hexdigest()

    def _parts(self, key: str, parallel: int, part_size: int) -> Iterator[bytes]:
        if parallel <= 1:
            self.api_calls += 1
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            yield from prefetched(iter(lambda: body.read(CHUNK), b""))  # the next chunk arrives while this one hashes
            return
        from botocore.exceptions import ClientError

        self.api_calls += 1
        try:
            first = self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{part_size - 1}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "InvalidRange":
                raise
            yield from self._parts(key, 1, part_size)  # S3 answers a range of an empty object with 416
            return
        match = CONTENT_RANGE.fullmatch(first.get("ContentRange") or "")
        data = first["Body"].read()
        total = int(match.group(3)) if match else len(data)  # no Content-Range: the whole object came back
        yield data
        if len(data) >= total:
            return
        ranges = [(start, min(start + part_size, total) - 1) for start in range(len(data), total, part_size)]
        pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="ranged-get")
        pending: deque[Future] = deque()
        try:
            for start, end in ranges:
                while len(pending) > parallel:
                    yield pending.popleft().result()
                self.api_calls += 1
                pending.append(pool.submit(self._get_range, key, start, end, first.get("ETag")))
            while pending:
                yield pending.popleft().result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _get_range(self, key: str, start: int, end: int, etag: str | None) -> bytes:
        kwargs = {"IfMatch": etag} if etag else {}
        data = self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end}", **kwargs)["Body"].read()
        if len(data) != end - start + 1:
            raise RuntimeError(f"s3://{self.bucket}/{key}: bytes {start}-{end} came back as {len(data)} bytes")
        return data

    def download(self, key: str, dest: Path) -> tuple[int, str]:
        with dest.open("wb") as fh:
            return self.stream(key, fh.write)

    def read_text(self, key: str) -> str:
        self.api_calls += 1
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()

    # -- writing --------------------------------------------------------------------------
    def upload_file(self, path: Path, key: str) -> None:
        if self.head(key) is not None:
            raise FileExistsError(f"refusing to overwrite s3://{self.bucket}/{key}")
        self.api_calls += 1
        self.s3.upload_file(str(path), self.bucket, key)

    def put_bytes(self, key: str, data: bytes, overwrite: bool = False) -> None:
        if not overwrite and self.head(key) is not None:
            raise FileExistsError(f"refusing to overwrite s3://{self.bucket}/{key}")
        self.api_calls += 1
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=data)


def prefetched(chunks: Iterator[bytes], depth: int = 2) -> Iterator[bytes]:
    """``chunks``, produced by a thread of its own up to ``depth`` ahead of the consumer (socket reads release the
    GIL, so the download overlaps the consumer's hashing and writing)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        pending: deque[Future] = deque(pool.submit(next, chunks, None) for _ in range(depth))
        try:
            while (chunk := pending.popleft().result()) is not None:
                pending.append(pool.submit(next, chunks, None))
                yield chunk
        finally:
            for future in pending:
                future.cancel()


class ChunkConsumer:
    """Hands chunks to ``consume`` on a thread of its own, in order, at most ``depth`` waiting (bounded memory): a
    second hash over the same stream runs beside the first. :meth:`close` waits and re-raises its error."""

    def __init__(self, consume: Callable[[bytes], None], depth: int = 4) -> None:
        import queue
        import threading

        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._consume = consume
        self._thread = threading.Thread(target=self._run, name="chunk-consumer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._consume(chunk)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller by close()
                    self._error = exc

    def __call__(self, chunk: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(bytes(chunk))

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


LAST_MODIFIED_RESOLUTION = timedelta(seconds=1)


def stored_by(last_modified: datetime, moment: datetime) -> bool:
    """Whether an object whose LastModified is ``last_modified`` was certainly stored by ``moment``
    (S3 keeps LastModified to the second, so an object counts only a full second after it)."""
    return last_modified + LAST_MODIFIED_RESOLUTION <= moment


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
