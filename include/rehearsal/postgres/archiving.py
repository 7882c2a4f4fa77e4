"""Archiving and a restored copy: switched off when it is restored, given back when it becomes production.

A restored copy never acts like production (as Barman does on recovery): its WAL goes to a quarantine folder
beside it, it follows no primary, runs no logical apply worker and preloads no library. When a runbook makes
such a copy the primary, ``reenable_archiving`` hands the quarantined WAL to the archive, points
``archive_command`` back at production's archive, resets the rest, and proves archiving works by switching a
segment and waiting for it to land.
"""
from __future__ import annotations

import hashlib
import time

from rehearsal.backups.store import BackupStore
from rehearsal.errors import PreconditionFailed, RecoveryTimedOut
from rehearsal.postgres.connection import Endpoint, connect


def neutralized_settings(quarantine) -> dict[str, object]:
    """Settings that keep a restored copy from touching production (written to postgresql.auto.conf, so they
    also override ALTER SYSTEM settings carried inside the backup):

    - its WAL is archived into a quarantine folder beside it, never into production's archive;
    - it follows no primary and holds no synchronous standby;
    - no logical replication apply worker runs, so a subscription carried in the backup never pulls from, or
      advances a slot on, a production publisher;
    - no library is preloaded, so no background worker (pg_cron and the like) runs production's jobs.
    """
    return {"archive_mode": "on", "archive_command": f'cp "%p" "{quarantine}/%f"', "primary_conninfo": "",
            "primary_slot_name": "", "synchronous_standby_names": "", "archive_cleanup_command": "",
            "recovery_end_command": "", "max_logical_replication_workers": 0, "max_sync_workers_per_subscription": 0,
            "shared_preload_libraries": ""}


# What a copy that becomes production gets back (ALTER SYSTEM RESET): the settings the restore overrode that
# production needs again. Archiving is re-pointed separately, at production's archive.
PRODUCTION_RESETS = ("max_logical_replication_workers", "max_sync_workers_per_subscription", "shared_preload_libraries",
                     # The PITR's own recovery settings: a standby cloned from this primary would inherit a
                     # recovery target and stop there ("requested recovery stop point is before consistent
                     # recovery point").
                     "restore_command", "recovery_target_time", "recovery_target_lsn", "recovery_target_timeline",
                     "recovery_target_action")


def quarantined_files(conn, quarantine: str) -> list[str]:
    """The files in a copy's quarantine folder, read over SQL on the copy itself (it runs on a host of its own: the
    worker never has its disk). Empty when the folder does not exist."""
    rows = conn.execute("SELECT name FROM pg_ls_dir(%s, true, false) AS name ORDER BY name", (quarantine,)).fetchall()
    return [r[0] for r in rows if not r[0].startswith(".")]


def hand_quarantine_to_archive(conn, quarantine: str, store: BackupStore) -> list[str]:
    """Upload the WAL a copy archived into quarantine (its new timeline's segments and history file), each read
    over the copy's own superuser connection ``conn``; an object already in the archive with other content is an
    error naming it. Returns the names uploaded."""
    uploaded = []
    for name in quarantined_files(conn, quarantine):
        data = bytes(conn.execute("SELECT pg_read_binary_file(%s)", (f"{quarantine.rstrip('/')}/{name}",)).fetchone()[0])
        key = store.wal_key(name)
        existing = store.head(key)
        if existing is not None:
            same = existing["ContentLength"] == len(data) and \
                existing.get("ETag", "").strip('"') == hashlib.md5(data).hexdigest()  # noqa: S324 - S3 ETag
            if not same:
                raise PreconditionFailed(f"WAL {name} from {quarantine} differs from s3://{store.bucket}/{key} "
                                         "already in the archive; not overwriting it")
            continue
        store.put_bytes(key, data, overwrite=False)
        uploaded.append(name)
    return uploaded


def reenable_archiving(admin: Endpoint, archive_command: str | None, store: BackupStore,
                       quarantine: str | None = None, timeout: float = 60) -> dict:
    """Production archiving on a new primary, proven by a switched segment reaching the archive.

    :param admin: superuser endpoint of the new primary
    :param archive_command: production's archive_command; None keeps the one the server has (a promoted standby
        inherited it), unless it is a quarantine command
    :param quarantine: a restored copy's quarantine folder (a path on the copy's host, read over SQL), whose WAL is
        handed to the archive first
    :raises PreconditionFailed: no production archive_command is known for a copy that archives into quarantine
    :raises RecoveryTimedOut: the switched segment did not reach the archive in time (names it)
    """
    with connect(admin, statement_timeout_ms=60_000) as conn:
        uploaded = hand_quarantine_to_archive(conn, str(quarantine), store) if quarantine else []
        current = conn.execute("SHOW archive_command").fetchone()[0]
        if archive_command is None and "quarantine" in current:
            raise PreconditionFailed(f"{admin.address()} archives into quarantine ({current}) and the environment names "
                                     "no production archive_command to give it back")
        changed = []
        if archive_command is not None and archive_command != current:
            conn.execute("ALTER SYSTEM SET archive_command = " + _literal(archive_command))
            changed.append("archive_command")
        if quarantine is not None:  # only a restored copy was neutralized; a promoted standby keeps its settings
            for setting in PRODUCTION_RESETS:  # restart-only ones (shared_preload_libraries) apply at the next restart
                conn.execute(f"ALTER SYSTEM RESET {setting}")
            changed += list(PRODUCTION_RESETS)
        conn.execute("SELECT pg_reload_conf()")
        mode = conn.execute("SHOW archive_mode").fetchone()[0]
        if mode == "off":
            raise PreconditionFailed(f"{admin.address()} has archive_mode off: archiving needs a restart with it on")
        segment = conn.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()[0]
        conn.execute("SELECT pg_switch_wal()")
    deadline = time.monotonic() + timeout
    while store.head(store.wal_key(segment)) is None:
        if time.monotonic() > deadline:
            raise RecoveryTimedOut(f"archiving from {admin.address()} is not working: segment {segment} did not reach "
                                   f"s3://{store.bucket}/{store.wal_key(segment)} within {timeout:.0f}s")
        time.sleep(0.2)
    return {"uploaded_from_quarantine": uploaded, "changed": changed, "verified_segment": segment}


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
