"""Fixtures shared by the tests that touch backups: the store, proof that source backups never change,
leak checks, scratch clusters and scratch objects."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from rehearsal.backups.manifest import BackupObject
from rehearsal.backups.store import BackupStore
from rehearsal.checks import CheckSet
from rehearsal.postgres.cluster import LocalCluster, free_port, port_is_listening
from rehearsal_sandbox.platform import Sandbox
from tests.helpers import leftovers, source_fingerprint


@pytest.fixture(scope="module")
def store(sandbox_session) -> BackupStore:
    return sandbox_session.store()


@pytest.fixture(scope="module")
def originals(store):
    return source_fingerprint(store)


@pytest.fixture
def nothing_lost_nothing_left(sandbox_session, store, originals):
    yield
    now = source_fingerprint(store)
    changed = {k: (v, now.get(k)) for k, v in originals.items() if now.get(k) != v}
    assert changed == {}, f"source backups changed: {changed}"
    assert leftovers(Sandbox(sandbox_session.dir)) == {"processes": [], "scratch": []}
    test_objects = [o.key for o in store.iter_objects("") if "-test-" in o.key or o.key.startswith("controlplane-walcopy/")]
    assert test_objects == [], "scratch objects left in the bucket"


@pytest.fixture
def scratch(sandbox):
    """A scratch cluster spec; destroyed after the test whatever happened."""
    root = Path(sandbox.runtime) / "scratch" / f"test-{time.time_ns()}"
    clusters = []

    def make(name: str) -> LocalCluster:
        cluster = LocalCluster(name, root / name, free_port())
        clusters.append(cluster)
        return cluster

    yield make
    import shutil

    for cluster in clusters:
        cluster.destroy()
        assert not port_is_listening(cluster.port)
    shutil.rmtree(root, ignore_errors=True)


class ScratchObjects:
    """Objects a test writes into the bucket, every version recorded, so cleanup never has to list the
    (versioned) bucket: moto's list_object_versions copies every version it holds, and grew past the
    machine's memory once."""

    def __init__(self, store: BackupStore) -> None:
        self.store = store
        self.versions: list[tuple[str, str]] = []

    def put(self, key: str, body: bytes) -> None:
        resp = self.store.s3.put_object(Bucket=self.store.bucket, Key=key, Body=body)
        self.versions.append((key, resp["VersionId"]))

    def copy(self, source_key: str, key: str) -> None:
        # get + put rather than copy_object: moto keeps a multipart source's checksum on the copy.
        self.put(key, self.store.s3.get_object(Bucket=self.store.bucket, Key=source_key)["Body"].read())

    def delete(self, key: str) -> None:
        resp = self.store.s3.delete_object(Bucket=self.store.bucket, Key=key)
        self.versions.append((key, resp["VersionId"]))

    def copy_backup(self, kind: str, source_id: str, new_id: str, with_manifest: bool = True) -> None:
        """Copy a backup under a new id (the tests damage copies, never the source)."""
        from dataclasses import replace

        manifest = self.store.manifest(kind, source_id)
        objects = []
        for obj in manifest.objects:
            key = self.store.backup_key(kind, new_id, obj.name)
            self.copy(obj.key, key)
            objects.append(BackupObject(obj.name, key, obj.size, obj.sha256))
        if with_manifest:
            copy = replace(manifest, backup_id=new_id, objects=objects)
            self.put(self.store.backup_key(kind, new_id, "manifest.json"), copy.to_json().encode())

    def cleanup(self) -> None:
        for key, version in self.versions:
            self.store.s3.delete_object(Bucket=self.store.bucket, Key=key, VersionId=version)


@pytest.fixture
def scratch_objects(store):
    objects = ScratchObjects(store)
    yield objects
    objects.cleanup()


def failed(checks: CheckSet) -> dict[str, str]:
    return {c.name: c.detail for c in checks.failed}


def wait_archived(store: BackupStore, segment: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.head(store.wal_key(segment)) is not None:
            return
        time.sleep(0.2)
    raise AssertionError(f"segment {segment} not archived within {timeout}s")
