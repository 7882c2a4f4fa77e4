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
    assert manifest.schema_version == "20261129_0008_ipv4_allocations"


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
    result = restore_pitr(store, RecoveryTarget.parse(target.isoformat()), dest, [(sandbox.primary.host, sandbox.primary.port)])
    restored = sandbox.endpoint(sandbox.primary).with_(host=result.host, port=result.port)
    with connect(restored) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM pitr_marker").fetchall()}
    assert before in names and after not in names

    # The restored copy never archives into production.
    admin = sandbox.endpoint(sandbox.primary, "admin").with_(host=result.host, port=result.port)
    with connect(admin) as conn:
        command = conn.execute("SHOW archive_command").fetchone()[0]
        new_segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("INSERT INTO pitr_marker (name) VALUES ('on-the-copy')")
        conn.execute("SELECT pg_switch_wal()")
    assert str(sandbox.spool) not in command and "quarantine" in command
    # Nor does it run production's logical replication apply workers or preloaded background workers.
    with connect(admin) as conn:
        shown = {name: conn.execute(f"SHOW {name}").fetchone()[0]
                 for name in ("max_logical_replication_workers", "shared_preload_libraries", "primary_conninfo")}
        workers = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'logical replication launcher'").fetchone()[0]
    assert shown == {"max_logical_replication_workers": "0", "shared_preload_libraries": "", "primary_conninfo": ""}
    assert workers == 0
    assert {"archive_command", "max_logical_replication_workers", "shared_preload_libraries"} <= set(result.neutralized)
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
    first = restore_pitr(store, RecoveryTarget(), dest, [(sandbox.primary.host, sandbox.primary.port)])
    dest.kill()  # the worker died after the restore finished
    again = restore_pitr(store, RecoveryTarget(), dest, [(sandbox.primary.host, sandbox.primary.port)])
    assert again.reused and again.port == first.port and dest.is_running()


def test_logical_restore_row_counts_match_the_manifest(sandbox, store, scratch):
    dest = scratch("logical")
    result = restore_logical(store, None, dest, sandbox.passwords["postgres"], [(sandbox.primary.host, sandbox.primary.port)])
    manifest = store.manifest("logical_dump", result.backup_id)
    admin = sandbox.endpoint(sandbox.primary, "admin").with_(host=result.host, port=result.port)
    checks = validate_controlplane(admin, manifest.schema_version, manifest.row_counts, count_tolerance=0.0)
    assert checks.ok, failed(checks)
    assert [c.detail for c in checks.checks if c.name == "row_count:orgs"] == [
        f"{manifest.row_counts['orgs']} rows, backup manifest says {manifest.row_counts['orgs']} (drift 0.00%, tolerance 0%)"]






def test_a_standby_whose_receiver_stopped_is_refused_naming_its_lag(sandbox):
    """replay_lag used to say 0 (everything received was replayed) while the receiver had been dead for long."""
    from rehearsal.postgres.failover import probe_standby, promotion_limitation, standby_limitation

    standby = sandbox.endpoint(sandbox.standby, "admin").with_(dbname="postgres")
    healthy = probe_standby(standby)
    assert healthy.receiver_status == "streaming" and standby_limitation(healthy, 900, primary_alive=True) is None
    with connect(standby) as conn:
        conninfo = conn.execute("SHOW primary_conninfo").fetchone()[0]
        conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
        conn.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(4)  # the heartbeat keeps committing on the primary; none of it reaches the standby
        stale = probe_standby(standby)
        assert stale.receiver_status is None and stale.received_lsn == stale.replayed_lsn
        assert standby_limitation(stale, 900, primary_alive=True).startswith(
            f"standby {standby.address()} is not streaming from the primary (receiver not running")
        reason = promotion_limitation(None, standby, max_lag_seconds=2)
        assert reason.startswith(f"standby {standby.address()} replay lag ") and "exceeds the RPO of 2s" in reason
    finally:
        with connect(standby) as conn:
            conn.execute("ALTER SYSTEM SET primary_conninfo = %s" .replace("%s", "'" + conninfo.replace("'", "''") + "'"))
            conn.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 20
    while probe_standby(standby).receiver_status != "streaming" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert probe_standby(standby).receiver_status == "streaming"


def test_a_drill_lock_is_shown_and_broken_by_the_documented_command(sandbox, capsys):
    from rehearsal import results

    endpoint = sandbox.results_endpoint()
    results.acquire_drill_lock(endpoint, "lock-test", "dr_drill_postgres_primary_loss", "manual__killed")
    dsn = endpoint.conninfo()
    assert results.main(["show-lock", "--environment", "lock-test", "--dsn", dsn]) == 0
    assert capsys.readouterr().out.startswith("lock-test: held by dr_drill_postgres_primary_loss run manual__killed, held for ")
    assert results.main(["break-lock", "--environment", "lock-test", "--dsn", dsn]) == 0
    assert capsys.readouterr().out.startswith("lock-test: broke the lock held by dr_drill_postgres_primary_loss run manual__killed")
    assert results.drill_lock_holder(endpoint, "lock-test") is None


def test_the_sandbox_passwords_are_required(sandbox):
    wrong = sandbox.endpoint(sandbox.primary).with_(password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(wrong).close()


def test_health_is_a_committed_write_so_a_primary_that_answers_but_cannot_commit_is_unhealthy(sandbox):
    """A primary read-only by default, or holding every commit for a synchronous standby that is gone, still answers
    ``pg_is_in_recovery()`` with false; only a real write, bounded on this side, tells."""
    from rehearsal.postgres.connection import write_health

    admin = sandbox.endpoint(sandbox.primary, "admin")
    assert write_health(admin, timeout=5) == (True, "committed a write to rehearsal_health_probe and read it back")

    def setting(name: str, value: str | None) -> None:
        with connect(admin.with_(dbname="postgres")) as conn:
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'" if value is not None else f"ALTER SYSTEM RESET {name}")
            conn.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)

    try:
        setting("default_transaction_read_only", "on")
        ok, why = write_health(admin, timeout=5)
        assert not ok and why == "cannot commit a write: cannot execute INSERT in a read-only transaction"
    finally:
        setting("default_transaction_read_only", None)
    try:
        setting("synchronous_standby_names", "a_standby_that_is_gone")
        ok, why = write_health(admin, timeout=2)
        assert not ok and why == ("a write did not commit within 2s (a commit waiting on a synchronous standby, or "
                                  "storage that does not answer)")
    finally:
        setting("synchronous_standby_names", None)
    assert write_health(admin, timeout=5)[0]
