"""The download and hash path of backup verification, without a sandbox: parallel ranged GETs reassemble an
object byte for byte, in order; a short part is named; a tar stream's files are hashed as it passes; a file
that differs from the PostgreSQL backup manifest is named."""
from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile

import pytest
from botocore.exceptions import ClientError

from rehearsal.backups.store import BackupStore
from rehearsal.backups.verification import TarMemberHashes, check_file_checksums, streamable_file_checksums
from rehearsal.checks import CheckSet


class RangedS3:
    """get_object with Range and If-Match over in-memory objects, as S3 answers them; ``short`` cuts one part."""

    def __init__(self, objects: dict[str, bytes], short: int | None = None) -> None:
        self.objects = objects
        self.short = short
        self.ranges: list[str] = []

    def get_object(self, Bucket: str, Key: str, Range: str | None = None, IfMatch: str | None = None) -> dict:
        data = self.objects[Key]
        etag = f'"{hashlib.md5(data).hexdigest()}"'
        assert IfMatch in (None, etag)
        if Range is None:
            return {"Body": io.BytesIO(data), "ETag": etag}
        self.ranges.append(Range)
        start, end = (int(x) for x in Range.removeprefix("bytes=").split("-"))
        if start >= len(data):  # as S3 answers, also for any range of an empty object
            raise ClientError({"Error": {"Code": "InvalidRange"}}, "GetObject")
        part = data[start:end + 1]
        if self.short is not None and start == self.short:
            part = part[:-1]
        return {"Body": io.BytesIO(part), "ETag": etag,
                "ContentRange": f"bytes {start}-{start + len(part) - 1}/{len(data)}"}


@pytest.mark.parametrize("size", [0, 1, 1000, 1024, 1025, 4096 * 3 + 17])
@pytest.mark.parametrize("parallel", [1, 3])
def test_a_ranged_download_reassembles_the_object_byte_for_byte_in_order(size, parallel):
    data = random.Random(size).randbytes(size)
    s3 = RangedS3({"k": data})
    received = bytearray()
    got = BackupStore(s3, "bucket").stream("k", received.extend, parallel=parallel, part_size=1024)
    assert got == (size, hashlib.sha256(data).hexdigest())
    assert bytes(received) == data
    if parallel > 1 and size > 1024:
        assert len(s3.ranges) == -(-size // 1024)  # one GET per part, none twice


def test_a_part_that_comes_back_short_is_named_by_object_and_range():
    s3 = RangedS3({"controlplane/base/b1/base.tar": bytes(5000)}, short=2048)
    with pytest.raises(RuntimeError, match=r"s3://bucket/controlplane/base/b1/base.tar: bytes 2048-3071 came back as "
                                           r"1023 bytes"):
        BackupStore(s3, "bucket").stream("controlplane/base/b1/base.tar", parallel=2, part_size=1024)


def tar_of(files: dict[str, bytes], fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo("base")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        link = tarfile.TarInfo("pg_tblspc/16400")
        link.type, link.linkname = tarfile.SYMTYPE, "/somewhere"
        tar.addfile(link)
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
@pytest.mark.parametrize("chunk", [1, 511, 513, 7000, 10 ** 7])
def test_every_file_in_a_tar_stream_is_hashed_as_it_passes(fmt, chunk):
    long = "base/16384/" + "x" * 80 + "/" + "y" * 60  # over 100 bytes: GNU long name, pax path, ustar prefix
    files = {"global/pg_control": random.Random(1).randbytes(8192), "PG_VERSION": b"18\n", "empty": b"",
             "base/16384/2619": random.Random(2).randbytes(3 * 512 + 5), long: b"long name"}
    stream = tar_of(files, fmt)
    hashes = TarMemberHashes()
    for i in range(0, len(stream), chunk):
        hashes(stream[i:i + chunk])
    assert hashes.close() == {n: (len(b), hashlib.sha256(b).hexdigest()) for n, b in files.items()}


def test_a_tar_stream_that_ends_inside_a_file_is_named():
    stream = tar_of({"base/1/1259": bytes(4096)}, tarfile.GNU_FORMAT)
    hashes = TarMemberHashes()
    hashes(stream[:512 * 3 + 100])  # the directory's and symlink's headers, the file's header, 100 of its bytes
    with pytest.raises(ValueError, match=r"ended inside base/1/1259 \(3996 bytes missing\)"):
        hashes.close()


def test_a_file_that_differs_from_backup_manifest_is_named(tmp_path):
    good, bad = b"good bytes", b"bad bytes"
    pg_manifest = {"PostgreSQL-Backup-Manifest-Version": 2, "Files": [
        {"Path": "PG_VERSION", "Size": 3, "Checksum-Algorithm": "SHA256", "Checksum": hashlib.sha256(b"18\n").hexdigest()},
        {"Path": "base/1/1259", "Size": len(good), "Checksum-Algorithm": "SHA256",
         "Checksum": hashlib.sha256(good).hexdigest()},
        {"Path": "global/1262", "Size": 0, "Checksum-Algorithm": "SHA256", "Checksum": hashlib.sha256().hexdigest()}]}
    (tmp_path / "backup_manifest").write_text(json.dumps(pg_manifest))
    expected = streamable_file_checksums(tmp_path / "backup_manifest")
    hashes = TarMemberHashes()
    hashes(tar_of({"PG_VERSION": b"18\n", "base/1/1259": bad}, tarfile.GNU_FORMAT))
    checks = CheckSet("base backup b1")
    check_file_checksums(expected, hashes, "controlplane/base/b1/base.tar", checks)
    [check] = checks.failed
    assert check.name == "file_checksums"
    assert check.detail == (
        f"2 of 3 files in controlplane/base/b1/base.tar differ from backup_manifest: base/1/1259: 9 bytes, sha256 "
        f"{hashlib.sha256(bad).hexdigest()[:16]}..., backup_manifest says 10 bytes, {hashlib.sha256(good).hexdigest()[:16]}"
        "...; global/1262 is not in the tar")


def test_a_manifest_with_crc32c_checksums_is_left_to_pg_verifybackup(tmp_path):
    (tmp_path / "backup_manifest").write_text(json.dumps({"Files": [
        {"Path": "PG_VERSION", "Size": 3, "Checksum-Algorithm": "CRC32C", "Checksum": "abcd1234"}]}))
    assert streamable_file_checksums(tmp_path / "backup_manifest") is None
