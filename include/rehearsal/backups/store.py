"""The backup store on S3: layout, listing (paged), streaming with sha256, uploads.

Takes a boto3 S3 client; operators build it from an Airflow connection, the sandbox from its env.
Nothing here ever deletes or overwrites an existing backup object.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from rehearsal.backups.manifest import BackupManifest, parse_manifest
from rehearsal.errors import ManifestError

log = logging.getLogger(__name__)
CHUNK = 8 * 1024 * 1024
MANIFEST_NAME = "manifest.json"


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

    def stream(self, key: str, sink: Callable[[bytes], None] | None = None) -> tuple[int, str]:
        """Stream an object through sha256 (and ``sink``); returns (bytes read, hex digest)."""
        self.api_calls += 1
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        digest = hashlib.sha256()
        size = 0
        for chunk in iter(lambda: body.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
            if sink:
                sink(chunk)
        return size, digest.hexdigest()

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
