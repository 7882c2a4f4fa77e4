"""Backups, verification, restores, validation and failover against the real sandbox.

Every bad input asserts the failure and its named reason; after each test the source backups are
byte-identical and no cluster, process or scratch directory is left behind.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from rehearsal.backups.manifest import BackupObject
from rehearsal.backups.store import BackupStore
from rehearsal.backups.verification import check_wal_continuity, verify_base_backup, verify_logical_dump
from rehearsal.catalog import DEFAULT_CATALOG, load_catalog
from rehearsal.checks import CheckSet
from rehearsal.errors import PreconditionFailed
from rehearsal.freshness import check_assets
from rehearsal.postgres.cluster import LocalCluster, free_port, port_is_listening
from rehearsal.postgres.connection import connect
from rehearsal.postgres.failover import promote
from rehearsal.postgres.restore import RecoveryTarget, restore_logical, restore_pitr
from rehearsal.postgres.validate import validate_controlplane
from rehearsal.sandbox.platform import Sandbox
from rehearsal.wal import parse_lsn, parse_segment_name, segno_of
from tests.helpers import leftovers, source_fingerprint

pytestmark = pytest.mark.sandbox


@pytest.fixture(scope="module")
def store(sandbox_session) -> BackupStore:
    return sandbox_session.store()


@pytest.fixture(scope="module")
def originals(store):
    return source_fingerprint(store)


@pytest.fixture(autouse=True)
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
    root = Path(sandbox.state["runtime"]) / "scratch" / f"test-{time.time_ns()}"
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


def test_the_newest_base_backup_verifies(store, tmp_path):
    checks, manifest = verify_base_backup(store, store.backup_ids("base_backup")[-1], tmp_path)
    assert checks.ok, failed(checks)
    names = {c.name for c in checks.checks}
    assert {"sha256:base.tar", "sha256:pg_wal.tar", "pg_verifybackup", "wal_continuity"} <= names
    assert manifest.schema_version == "20261020_0005_audit_log"


def test_the_newest_dump_verifies(store, tmp_path):
    checks, _ = verify_logical_dump(store, store.backup_ids("logical_dump")[-1], tmp_path)
    assert checks.ok, failed(checks)


def test_one_flipped_byte_in_a_base_backup_object_is_named(store, tmp_path, scratch_objects):
    source = store.backup_ids("base_backup")[-1]
    scratch_objects.copy_backup("base_backup", source, "base-test-flipped")
    key = store.backup_key("base_backup", "base-test-flipped", "base.tar")
    data = bytearray(store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    data[len(data) // 2] ^= 0x01
    scratch_objects.put(key, bytes(data))
    checks, _ = verify_base_backup(store, "base-test-flipped", tmp_path)
    assert checks.subject == "base backup base-test-flipped"
    assert set(failed(checks)) == {"sha256:base.tar", "pg_verifybackup"}
    assert f"s3://{store.bucket}/{key}" in failed(checks)["sha256:base.tar"]
    assert "skipped: the backup's objects do not match the manifest" == failed(checks)["pg_verifybackup"]


def test_a_truncated_dump_is_named(store, tmp_path, scratch_objects):
    source = store.backup_ids("logical_dump")[-1]
    scratch_objects.copy_backup("logical_dump", source, "dump-test-truncated")
    key = store.backup_key("logical_dump", "dump-test-truncated", "controlplane.dump")
    data = store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    scratch_objects.put(key, data[: len(data) // 2])
    checks, _ = verify_logical_dump(store, "dump-test-truncated", tmp_path)
    reasons = failed(checks)
    assert {"object_size:controlplane.dump", "sha256:controlplane.dump", "pg_restore_readthrough"} <= set(reasons)
    assert f"{len(data) // 2} bytes, manifest says {len(data)}" == reasons["object_size:controlplane.dump"]


def test_a_wal_segment_deleted_from_the_middle_of_the_archive_is_named(sandbox, store, scratch_objects):
    copy = BackupStore(store.s3, store.bucket, "controlplane-walcopy")
    manifest = store.latest_manifest("base_backup")
    for _ in range(3):  # at least three archived segments after the backup
        with connect(sandbox.endpoint(sandbox.primary, "admin")) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS wal_filler (x int); INSERT INTO wal_filler VALUES (1)")
            segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
            conn.execute("SELECT pg_switch_wal()")
        wait_archived(store, segment)
    src_prefix = store.prefix("wal_archive")
    names = sorted(o.key[len(src_prefix):] for o in store.iter_objects(src_prefix) if len(o.key) - len(src_prefix) == 24)
    first = segno_of(parse_lsn(manifest.start_lsn), manifest.wal_segment_size)
    needed = [n for n in names if parse_segment_name(n, manifest.wal_segment_size) is not None
              and parse_segment_name(n, manifest.wal_segment_size)[0] == manifest.timeline
              and parse_segment_name(n, manifest.wal_segment_size)[1] >= first]
    for name in needed:  # only what replay from this backup needs: the test damages the copy
        scratch_objects.copy(store.wal_key(name), copy.wal_key(name))
    assert len(needed) >= 3, needed
    victim = needed[len(needed) // 2]
    scratch_objects.delete(copy.wal_key(victim))
    checks = CheckSet("archive copy")
    check_wal_continuity(copy, manifest, checks)
    assert failed(checks)["wal_continuity"].startswith("1 segment(s) missing between")
    assert victim in failed(checks)["wal_continuity"]


def test_a_missing_manifest_is_named(store, tmp_path, scratch_objects):
    scratch_objects.copy_backup("base_backup", store.backup_ids("base_backup")[-1], "base-test-nomanifest",
                                with_manifest=False)
    checks, manifest = verify_base_backup(store, "base-test-nomanifest", tmp_path)
    assert manifest is None
    assert failed(checks) == {"manifest": f"base_backup base-test-nomanifest (s3://{store.bucket}/controlplane/base/"
                                          "base-test-nomanifest/manifest.json): manifest is missing"}


def test_a_backup_older_than_its_rpo_is_named(store):
    catalog = load_catalog(DEFAULT_CATALOG)
    later = datetime.now(UTC) + timedelta(days=2)
    results = {r.asset: r for r in check_assets(store, list(catalog.assets.values()), later)}
    assert not any(r.ok for r in results.values())
    wal = results["controlplane_wal_archive"]
    assert wal.detail.startswith("controlplane_wal_archive: newest wal_archive ") and "over its 900s limit" in wal.detail
    fresh = {r.asset: r.ok for r in check_assets(store, list(catalog.assets.values()), datetime.now(UTC))}
    assert fresh == {"controlplane_wal_archive": True, "controlplane_base_backup": True, "controlplane_logical_dump": True}


def wait_archived(store: BackupStore, segment: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.head(store.wal_key(segment)) is not None:
            return
        time.sleep(0.2)
    raise AssertionError(f"segment {segment} not archived within {timeout}s")


def test_pitr_to_a_time_lands_between_two_markers_and_cannot_archive_into_production(sandbox, store, scratch):
    app = sandbox.endpoint(sandbox.primary)
    with connect(app) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pitr_marker (name text PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        conn.execute("INSERT INTO pitr_marker (name) VALUES ('before-' || %s)", (str(time.time_ns()),))
        before = conn.execute("SELECT max(name) FROM pitr_marker WHERE name LIKE 'before-%'").fetchone()[0]
        time.sleep(1.0)
        target = conn.execute("SELECT clock_timestamp()").fetchone()[0]
        time.sleep(1.0)
        conn.execute("INSERT INTO pitr_marker (name) VALUES ('after-' || %s)", (str(time.time_ns()),))
        after = conn.execute("SELECT max(name) FROM pitr_marker WHERE name LIKE 'after-%'").fetchone()[0]
    with connect(sandbox.endpoint(sandbox.primary, "admin")) as conn:
        segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("SELECT pg_switch_wal()")
    wait_archived(store, segment)
    dest = scratch("pitr-markers")
    result = restore_pitr(store, RecoveryTarget.parse(target.isoformat()), dest, [("127.0.0.1", sandbox.primary.port)])
    restored = sandbox.endpoint(sandbox.primary).with_(port=result.port)
    with connect(restored) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM pitr_marker").fetchall()}
    assert before in names and after not in names

    # The restored copy never archives into production.
    admin = sandbox.endpoint(sandbox.primary, "admin").with_(port=result.port)
    with connect(admin) as conn:
        command = conn.execute("SHOW archive_command").fetchone()[0]
        new_segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("INSERT INTO pitr_marker (name) VALUES ('on-the-copy')")
        conn.execute("SELECT pg_switch_wal()")
    assert sandbox.state["spool"] not in command and "quarantine" in command
    quarantine = dest.data_dir.parent / f"{dest.name}.quarantine"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (quarantine / new_segment).exists():
        time.sleep(0.2)
    assert (quarantine / new_segment).exists()
    time.sleep(1.0)  # give a (wrongly configured) shipper time to upload
    assert store.head(store.wal_key(new_segment)) is None
    assert store.head(store.wal_key(f"{result.timeline:08X}.history")) is None

    # A schema version that differs from the expected one is named.
    with connect(admin) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('20261201_0006_unreleased')")
    manifest = store.manifest("base_backup", result.backup_id)
    checks = validate_controlplane(admin, manifest.schema_version, manifest.row_counts, count_tolerance=0.05)
    assert failed(checks) == {"schema_version": "schema_migrations at 20261201_0006_unreleased, expected 20261020_0005_audit_log"}


def test_a_retried_restore_converges(sandbox, store, scratch):
    dest = scratch("pitr-retry")
    first = restore_pitr(store, RecoveryTarget(), dest, [("127.0.0.1", sandbox.primary.port)])
    dest.kill()  # the worker died after the restore finished
    again = restore_pitr(store, RecoveryTarget(), dest, [("127.0.0.1", sandbox.primary.port)])
    assert again.reused and again.port == first.port and dest.is_running()


def test_logical_restore_row_counts_match_the_manifest(sandbox, store, scratch):
    dest = scratch("logical")
    result = restore_logical(store, None, dest, sandbox.state["passwords"]["postgres"], [("127.0.0.1", sandbox.primary.port)])
    manifest = store.manifest("logical_dump", result.backup_id)
    admin = sandbox.endpoint(sandbox.primary, "admin").with_(port=result.port)
    checks = validate_controlplane(admin, manifest.schema_version, manifest.row_counts, count_tolerance=0.0)
    assert checks.ok, failed(checks)
    assert [c.detail for c in checks.checks if c.name == "row_count:orgs"] == [
        f"{manifest.row_counts['orgs']} rows, backup manifest says {manifest.row_counts['orgs']} (drift 0.00%, tolerance 0%)"]


def test_a_restore_onto_the_production_address_is_refused(sandbox, store):
    production = sandbox.primary
    dest = LocalCluster("would-clobber", Path(sandbox.state["runtime"]) / "scratch" / "never" / "x", production.port)
    with pytest.raises(PreconditionFailed) as err:
        restore_pitr(store, RecoveryTarget(), dest, [("127.0.0.1", production.port)])
    assert str(err.value) == (f"restore target 127.0.0.1:{production.port} is the production control-plane database; "
                              "refusing to restore over it")
    assert not dest.data_dir.exists()


def test_promotion_is_refused_while_the_old_primary_accepts_writes(sandbox):
    standby = sandbox.endpoint(sandbox.standby, "admin")
    primary = sandbox.endpoint(sandbox.primary, "admin")
    with pytest.raises(PreconditionFailed) as err:
        promote(standby, primary, max_lag_seconds=900)
    assert str(err.value) == (f"refusing to promote: old primary 127.0.0.1:{sandbox.primary.port} still accepts writes "
                              "and has not been fenced; promoting now would split the brain")
    with connect(standby) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_the_sandbox_passwords_are_required(sandbox):
    wrong = sandbox.endpoint(sandbox.primary).with_(password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(wrong).close()
