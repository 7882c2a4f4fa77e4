"""Backups, verification, restores, validation against the real sandbox (the bad inputs are in tests/faults).

After each test the source backups are
byte-identical and no cluster, process or scratch directory is left behind.
"""
from __future__ import annotations

import time

import psycopg
import pytest

from rehearsal.backups.verification import verify_base_backup, verify_logical_dump
from rehearsal.postgres.connection import connect
from rehearsal.postgres.restore import RecoveryTarget, restore_logical, restore_pitr
from rehearsal.postgres.validate import validate_controlplane
from tests.backup_fixtures import failed, wait_archived

pytestmark = [pytest.mark.sandbox, pytest.mark.usefixtures("nothing_lost_nothing_left")]


def test_the_newest_base_backup_verifies(store, tmp_path):
    checks, manifest = verify_base_backup(store, store.backup_ids("base_backup")[-1], tmp_path)
    assert checks.ok, failed(checks)
    names = {c.name for c in checks.checks}
    assert {"sha256:base.tar", "sha256:pg_wal.tar", "pg_verifybackup", "wal_continuity"} <= names
    assert manifest.schema_version == "20261020_0005_audit_log"


def test_the_newest_dump_verifies(store, tmp_path):
    checks, _ = verify_logical_dump(store, store.backup_ids("logical_dump")[-1], tmp_path)
    assert checks.ok, failed(checks)














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






def test_the_sandbox_passwords_are_required(sandbox):
    wrong = sandbox.endpoint(sandbox.primary).with_(password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(wrong).close()
