"""Every bad input of the Postgres path, gathered in one place. Each asserts the failure and its named
reason; afterwards the source backups are byte-identical and nothing is left behind (clusters,
processes, ports, scratch directories, scratch objects)."""
from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from rehearsal.backups.store import BackupStore
from rehearsal.backups.verification import check_wal_continuity, verify_base_backup, verify_logical_dump
from rehearsal.catalog import BACKUP_KINDS, DEFAULT_CATALOG, load_catalog
from rehearsal.checks import CheckSet
from rehearsal.errors import PreconditionFailed
from rehearsal.freshness import check_assets
from rehearsal.postgres.cluster import LocalCluster
from rehearsal.postgres.connection import accepts_writes, connect
from rehearsal.postgres.failover import promote
from rehearsal.postgres.restore import RecoveryTarget, restore_pitr
from rehearsal.wal import parse_lsn, parse_segment_name, segno_of
from tests.backup_fixtures import failed, wait_archived
from tests.e2e.test_drill_primary_loss import DRILL, report_of, run_dag

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("nothing_lost_nothing_left")]


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


def test_a_truncated_base_tar_is_named(store, tmp_path, scratch_objects):
    """Fetched in parallel ranged GETs, a shortened base.tar fails its size and its SHA-256, naming the object."""
    scratch_objects.copy_backup("base_backup", store.backup_ids("base_backup")[-1], "base-test-truncated")
    key = store.backup_key("base_backup", "base-test-truncated", "base.tar")
    data = store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    scratch_objects.put(key, data[: len(data) - 4096])
    checks, _ = verify_base_backup(store, "base-test-truncated", tmp_path)
    reasons = failed(checks)
    assert set(reasons) == {"object_size:base.tar", "sha256:base.tar", "pg_verifybackup"}
    assert reasons["object_size:base.tar"] == f"{len(data) - 4096} bytes, manifest says {len(data)}"
    assert f"s3://{store.bucket}/{key}" in reasons["sha256:base.tar"]


def test_a_file_changed_inside_a_base_tar_whose_manifest_matches_it_is_named_by_its_path(store, tmp_path,
                                                                                          scratch_objects):
    """base.tar altered and our manifest re-signed to match: the SHA-256 of the files inside, checked against
    PostgreSQL's backup_manifest while the tar streams, names the file."""
    import hashlib
    import io
    import tarfile
    from dataclasses import replace

    source = store.latest_manifest("base_backup")
    scratch_objects.copy_backup("base_backup", source.backup_id, "base-test-resigned", with_manifest=False)
    key = store.backup_key("base_backup", "base-test-resigned", "base.tar")
    data = bytearray(store.s3.get_object(Bucket=store.bucket, Key=key)["Body"].read())
    with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
        member = next(m for m in tar.getmembers() if m.isfile() and m.name.startswith("base/") and m.size > 8192)
    data[member.offset_data + member.size // 2] ^= 0x01
    scratch_objects.put(key, bytes(data))
    objects = [replace(o, key=store.backup_key("base_backup", "base-test-resigned", o.name),
                       sha256=hashlib.sha256(data).hexdigest() if o.name == "base.tar" else o.sha256)
               for o in source.objects]
    scratch_objects.put(store.backup_key("base_backup", "base-test-resigned", "manifest.json"),
                        replace(source, backup_id="base-test-resigned", objects=objects).to_json().encode())
    checks, _ = verify_base_backup(store, "base-test-resigned", tmp_path, check_wal=False)
    reasons = failed(checks)
    assert set(reasons) == {"file_checksums", "pg_verifybackup"}
    assert reasons["file_checksums"].startswith("1 of ")
    assert f"differ from backup_manifest: {member.name}: {member.size} bytes, sha256 " in reasons["file_checksums"]


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
        # Written as the application role: a superuser-owned table would break the app role's pg_dump.
        with connect(sandbox.endpoint(sandbox.primary)) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS wal_filler (x int); INSERT INTO wal_filler VALUES (1)")
        with connect(sandbox.endpoint(sandbox.primary, "admin")) as conn:
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


def test_a_pitr_whose_archive_lacks_a_segment_fails_naming_it_before_any_cluster_starts(sandbox, store, scratch,
                                                                                        scratch_objects):
    from rehearsal.errors import WalGapError

    copy = BackupStore(store.s3, store.bucket, "controlplane-walcopy")
    manifest = store.latest_manifest("base_backup")
    for _ in range(3):  # at least three archived segments after the backup
        with connect(sandbox.endpoint(sandbox.primary, "admin")) as conn:
            segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
            conn.execute("SELECT pg_switch_wal()")
        wait_archived(store, segment)
    # The copy's manifest still names the source objects: the restore only reads them.
    scratch_objects.copy(store.backup_key("base_backup", manifest.backup_id, "manifest.json"),
                         copy.backup_key("base_backup", manifest.backup_id, "manifest.json"))
    src_prefix = store.prefix("wal_archive")
    first = segno_of(parse_lsn(manifest.start_lsn), manifest.wal_segment_size)
    needed = []
    for obj in store.iter_objects(src_prefix):
        name = obj.key[len(src_prefix):]
        parsed = parse_segment_name(name, manifest.wal_segment_size)
        if name.endswith(".history") or (parsed and parsed[0] >= manifest.timeline and parsed[1] >= first):
            scratch_objects.copy(obj.key, copy.wal_key(name))
            if parsed and parsed[0] == manifest.timeline:
                needed.append(name)
    assert len(needed) >= 3, needed
    victim = sorted(needed)[len(needed) // 2]
    scratch_objects.delete(copy.wal_key(victim))
    dest = scratch("pitr-gap")
    with pytest.raises(WalGapError) as err:
        restore_pitr(copy, RecoveryTarget(), dest, [(sandbox.primary.host, sandbox.primary.port)])
    assert str(err.value).startswith(f"PITR from base backup {manifest.backup_id} to latest needs WAL the archive does "
                                     "not have: 1 segment(s) missing between ")
    assert victim in str(err.value) and str(err.value).endswith("; no cluster was started")
    assert not dest.data_dir.exists() and not dest.is_running()


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
    backups = [a for a in catalog.assets.values() if a.kind in BACKUP_KINDS]
    results = {r.asset: r for r in check_assets(store, backups, later)}
    assert not any(r.ok for r in results.values())
    wal = results["controlplane_wal_archive"]
    assert wal.detail.startswith("controlplane_wal_archive: newest wal_archive ") and "over its 900s limit" in wal.detail
    fresh = {r.asset: r.ok for r in check_assets(store, backups, datetime.now(UTC))}
    assert fresh == {"controlplane_wal_archive": True, "controlplane_base_backup": True, "controlplane_logical_dump": True}


def test_a_restore_onto_the_production_address_is_refused(sandbox, store):
    production = sandbox.primary
    dest = LocalCluster("would-clobber", Path(sandbox.runtime) / "scratch" / "never" / "x", production.port,
                        production.host)
    with pytest.raises(PreconditionFailed) as err:
        restore_pitr(store, RecoveryTarget(), dest, [(production.host, production.port)])
    assert str(err.value) == (f"restore target {production.address} is the production control-plane database; "
                              "refusing to restore over it")
    assert not dest.data_dir.exists()


def test_promotion_is_refused_while_the_old_primary_accepts_writes(sandbox):
    standby = sandbox.endpoint(sandbox.standby, "admin")
    primary = sandbox.endpoint(sandbox.primary, "admin")
    with pytest.raises(PreconditionFailed) as err:
        promote(standby, primary, max_lag_seconds=900)
    assert str(err.value) == (f"refusing to promote: old primary {sandbox.primary.address} still accepts writes "
                              "and has not been fenced; promoting now would split the brain")
    with connect(standby) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True


def test_a_restored_schema_version_that_differs_from_the_expected_one_is_named(sandbox, store, scratch):
    from rehearsal.postgres.restore import restore_logical
    from rehearsal.postgres.validate import validate_controlplane

    dest = scratch("schema-drift")
    result = restore_logical(store, None, dest, sandbox.passwords["postgres"], [(sandbox.primary.host, sandbox.primary.port)])
    admin = sandbox.endpoint(sandbox.primary, "admin").with_(host=result.host, port=result.port)
    with connect(admin) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES ('20261201_0006_unreleased')")
    manifest = store.manifest("logical_dump", result.backup_id)
    checks = validate_controlplane(admin, manifest.schema_version, manifest.row_counts, count_tolerance=0.0)
    assert failed(checks) == {"schema_version": "schema_migrations at 20261201_0006_unreleased, expected 20261129_0008_ipv4_allocations"}


def test_a_disruptive_drill_aimed_at_an_environment_not_marked_for_drills_is_refused(sandbox, airflow_db, monkeypatch):
    env = json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"])
    env.update(name="production-eu", drill_environment=False)
    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", json.dumps(env))
    primary = sandbox.endpoint(sandbox.primary, "admin").with_(dbname="postgres")
    dag_run = run_dag(DRILL, {"mode": "disruptive", "path": "auto"})
    assert str(dag_run.state) == "failed"
    report = report_of(dag_run)
    assert report["status"] == "aborted"
    assert ("guard_drill_environment: PreconditionFailed: refusing to run a disruptive drill (it kills the primary and "
            "loses its data): environment 'production-eu' is not marked as a drill environment") in report["failure"]
    assert {s["name"]: s["status"] for s in report["steps"]}["inject_primary_loss"] == "upstream_failed"
    assert accepts_writes(primary) == (True, "accepts writes")
