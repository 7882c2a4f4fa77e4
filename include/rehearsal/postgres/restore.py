"""Restores into new clusters: point-in-time (base backup + archived WAL) and logical (pg_restore -j).

A restored copy never acts like production (as Barman does on recovery): archiving goes to a
quarantine folder beside it, no primary_conninfo, no synchronous standbys. A retry after a crash
converges: a finished restore is reused, leftovers of an unfinished one are wiped first.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rehearsal.backups.manifest import BackupManifest
from rehearsal.backups.store import BackupStore
from rehearsal.backups.verification import ArchiveListing, list_archive, stream_into_tar
from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, RestoreError, WalGapError
from rehearsal.postgres.archiving import PRODUCTION_RESETS, neutralized_settings  # noqa: F401 - re-exported
from rehearsal.postgres.binaries import chown_to_server, pg_tool, run_as_server, server_env
from rehearsal.postgres.cluster import LocalCluster
from rehearsal.postgres.connection import Endpoint, connect, query_one
from rehearsal.wal import ContinuityResult, check_continuity, parse_lsn, parse_segment_name, segment_name, segno_of

log = logging.getLogger(__name__)
RESULT_FILE = "restore-result.json"
LSN_RE = re.compile(r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")


@dataclass(frozen=True)
class RecoveryTarget:
    kind: str = "latest"  # latest | time | lsn
    value: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> RecoveryTarget:
        text = (text or "latest").strip()
        if text == "latest":
            return cls()
        if LSN_RE.match(text):
            return cls("lsn", text.upper())
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise PreconditionFailed(f"recovery target {text!r} is neither 'latest', an LSN (0/3000060) nor an ISO time") from None
        if moment.tzinfo is None:
            raise PreconditionFailed(f"recovery target time {text!r} needs a timezone")
        return cls("time", moment.isoformat())


def archive_cutoff(text: str | None) -> datetime | None:
    """``archived_before`` as given to a restore (an ISO time with timezone, or empty for none)."""
    if text in (None, "", "None"):
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise PreconditionFailed(f"archived_before {text!r} needs a timezone")
    return moment.astimezone(UTC)


@dataclass
class RestoreResult:
    method: str
    cluster: str
    host: str
    port: int
    data_dir: str
    backup_id: str
    target: str
    restored_lsn: str | None = None
    timeline: int | None = None
    finished_at: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    reused: bool = False
    neutralized: dict[str, object] = field(default_factory=dict)
    archive: dict[str, object] = field(default_factory=dict)  # what the PITR replayed: segments, cut-off, end

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def choose_base_backup(manifests: list[BackupManifest], target: RecoveryTarget) -> BackupManifest:
    if not manifests:
        raise RestoreError("no base backup with a manifest exists")
    ordered = sorted(manifests, key=lambda m: m.stop_time)
    if target.kind == "latest":
        return ordered[-1]
    if target.kind == "time":
        moment = datetime.fromisoformat(target.value)
        if moment > datetime.now(UTC):
            raise PreconditionFailed(f"recovery target time {target.value} is in the future")
        usable = [m for m in ordered if m.stop_time <= moment]
        if not usable:
            raise PreconditionFailed(f"no base backup finished before target time {target.value} "
                                     f"(oldest, {ordered[0].backup_id}, finished {ordered[0].stop_time.isoformat()})")
        return usable[-1]
    lsn = parse_lsn(target.value)
    usable = [m for m in ordered if parse_lsn(m.stop_lsn) <= lsn]
    if not usable:
        raise PreconditionFailed(f"no base backup ends before target LSN {target.value}")
    return usable[-1]


def restore_archive_check(store_listing: ArchiveListing, manifest: BackupManifest, target: RecoveryTarget) -> ContinuityResult:
    """Before a cluster is started: every segment that replay from ``manifest`` to the end of the archive needs."""
    result = check_continuity(store_listing.segments, store_listing.histories, parse_lsn(manifest.start_lsn),
                              manifest.timeline, manifest.wal_segment_size)
    if not result.ok and target.kind == "latest":
        raise WalGapError(f"PITR from base backup {manifest.backup_id} to latest needs WAL the archive does not have: "
                          f"{result.describe()}; no cluster was started")
    return result


def check_reached_end(continuity: ContinuityResult, replayed_lsn: str, backup_id: str, segment_size: int) -> None:
    """After a PITR to latest: replay must have reached the newest archived segment of the timeline it followed."""
    if not continuity.last_segment:
        return
    newest = parse_segment_name(continuity.last_segment, segment_size)
    reached = segno_of(parse_lsn(replayed_lsn), segment_size)
    if newest and reached < newest[1]:
        stopped_in = segment_name(continuity.timeline_path[-1], reached, segment_size)
        raise WalGapError(f"PITR from base backup {backup_id} stopped early: replay ended at {replayed_lsn} "
                          f"(segment {stopped_in}) before the newest archived segment {continuity.last_segment}")


def refuse_production_target(dest: LocalCluster, production: list[tuple[str, int]]) -> None:
    for host, port in production:
        if (host, int(port)) == (dest.host, dest.port):
            raise PreconditionFailed(
                f"restore target {dest.address} is the production control-plane database; refusing to restore over it")


@dataclass(frozen=True)
class RestoreRequest:
    """What a runbook asks a provisioner for: a point-in-time restore on a new database host of its own.

    :param run_key: the run asking (a retry of the same run gets the same host back)
    :param purpose: ``production`` (a copy production may adopt as its primary) or ``scratch`` (never used by it)
    """

    run_key: str
    purpose: str
    recovery_target: str = "latest"
    archived_before: str | None = None
    backup_id: str | None = None
    timeout: float = 3600

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PlacedRestore:
    """A restore a provisioner started on a host: where it runs (``address``), and the plan ``complete_pitr`` needs
    once its recovery has ended."""

    host: str  # the host's name in the platform's inventory
    address: str  # host:port clients (and the runbook) reach it at
    cluster: str
    data_dir: str
    plan: dict

    def to_dict(self) -> dict:
        return asdict(self)


def _reuse_finished(dest: LocalCluster, method: str) -> RestoreResult | None:
    marker = dest.data_dir.parent / f"{dest.name}.{RESULT_FILE}"
    if marker.exists() and dest.exists():
        result = RestoreResult(**json.loads(marker.read_text()))
        if result.method == method:
            dest.start()
            result.reused = True
            return result
    marker.unlink(missing_ok=True)
    if dest.data_dir.exists() or dest.is_running():
        log.info("wiping leftovers of an unfinished restore in %s", dest.data_dir)
        dest.destroy()
    return None


def _record(dest: LocalCluster, result: RestoreResult) -> RestoreResult:
    marker = dest.data_dir.parent / f"{dest.name}.{RESULT_FILE}"
    marker.write_text(json.dumps(result.to_dict()))
    return result


def stage_wal(store: BackupStore, manifest: BackupManifest, staging: Path, listing: ArchiveListing,
              workers: int = 8) -> int:
    """Fetch every listed segment from the backup's start on, and all listed timeline history files."""
    staging.mkdir(parents=True, exist_ok=True)
    chown_to_server(staging)
    start = segno_of(parse_lsn(manifest.start_lsn), manifest.wal_segment_size)
    wanted = [n for n in listing.segments if (p := parse_segment_name(n, manifest.wal_segment_size)) and p[1] >= start]
    for tli, text in listing.histories.items():
        path = staging / f"{tli:08X}.history"
        path.write_text(text)
        chown_to_server(path)

    def fetch(name: str) -> None:
        path = staging / name
        store.download(store.wal_key(name), path)
        chown_to_server(path)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fetch, wanted))
    return len(wanted)


def restore_pitr(store: BackupStore, target: RecoveryTarget, dest: LocalCluster,
                 production: list[tuple[str, int]], timeout: float = 3600,
                 archived_before: datetime | None = None, backup_id: str | None = None) -> RestoreResult:
    """Base backup + archived WAL to ``target`` into a new cluster ``dest``, promoted at the target.

    :param archived_before: use only what the archive held at this moment (base backups and WAL stored before
        it): a non-disruptive drill's simulated fault time, so the copy is what losing the primary then gave
    :raises WalGapError: (before any cluster starts) the archive lacks a segment replay to ``latest`` needs;
        (after) replay stopped before the newest archived segment
    """
    started = begin_pitr(store, target, dest, production, timeout, archived_before, backup_id)
    if isinstance(started, RestoreResult):
        return started
    _wait_promoted(dest, Endpoint(dest.host, dest.port, "postgres", "postgres"), timeout)
    return complete_pitr(dest, started)


def begin_pitr(store: BackupStore, target: RecoveryTarget, dest: LocalCluster, production: list[tuple[str, int]],
               timeout: float = 3600, archived_before: datetime | None = None,
               backup_id: str | None = None) -> dict | RestoreResult:
    """Everything up to starting the copy in recovery: choose the backup, check the archive, fetch, stage,
    neutralize, start. Returns the plan ``complete_pitr`` needs once recovery has ended (a finished earlier
    restore is returned as it is).

    :param backup_id: restore from this base backup (it must still precede the target); default: the newest
        that does"""
    refuse_production_target(dest, production)
    reused = _reuse_finished(dest, "pitr")
    if reused:
        return reused
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    ids = store.backup_ids("base_backup", stored_before=archived_before)
    if backup_id:
        if backup_id not in ids:
            raise PreconditionFailed(f"base backup {backup_id} is not in the store (or was stored after the cut-off)")
        ids = [backup_id]
    manifests = [store.manifest("base_backup", i) for i in ids]
    manifest = choose_base_backup(manifests, target)
    listing = list_archive(store, stored_before=archived_before)
    continuity = restore_archive_check(listing, manifest, target)
    timings["choose_backup"] = time.monotonic() - t0

    t = time.monotonic()
    dest.make_empty_data_dir()
    (dest.data_dir / "pg_wal").mkdir(exist_ok=True)
    chown_to_server(dest.data_dir / "pg_wal")
    for name, into in (("base.tar", dest.data_dir), ("pg_wal.tar", dest.data_dir / "pg_wal")):
        obj = manifest.object(name)
        size, digest = stream_into_tar(store, obj.key, into, as_server_user=True)
        if digest != obj.sha256:
            raise RestoreError(f"base backup {manifest.backup_id}: {name} sha256 {digest} does not match manifest {obj.sha256}")
    timings["fetch_base_backup"] = time.monotonic() - t

    t = time.monotonic()
    wal_dir = dest.data_dir.parent / f"{dest.name}.wal"
    if wal_dir.exists():
        shutil.rmtree(wal_dir)
    staged = stage_wal(store, manifest, wal_dir, listing)
    timings["stage_wal"] = time.monotonic() - t

    quarantine = dest.data_dir.parent / f"{dest.name}.quarantine"
    quarantine.mkdir(exist_ok=True)
    chown_to_server(quarantine)
    neutralized = neutralized_settings(quarantine)
    settings = dict(neutralized)
    settings["restore_command"] = f'cp "{wal_dir}/%f" "%p"'
    settings["recovery_target_timeline"] = "latest"
    settings["recovery_target_action"] = "promote"
    if target.kind == "time":
        settings["recovery_target_time"] = target.value
    elif target.kind == "lsn":
        settings["recovery_target_lsn"] = target.value
    dest.configure(settings)
    for leftover in ("standby.signal", "postmaster.pid"):
        (dest.data_dir / leftover).unlink(missing_ok=True)
    signal_file = dest.data_dir / "recovery.signal"
    signal_file.touch()
    chown_to_server(signal_file)
    dest.start(timeout=int(timeout))
    return {"target_kind": target.kind, "target": target.value or "latest", "backup_id": manifest.backup_id,
            "wal_segment_size": manifest.wal_segment_size, "continuity": asdict(continuity), "staged": staged,
            "timings": timings, "neutralized": {k: str(v) for k, v in neutralized.items()}, "wal_dir": str(wal_dir),
            # Wall-clock stamps: a deferred restore completes in another process, maybe on another worker.
            "started_at_unix": time.time(), "began_at_unix": time.time() - (time.monotonic() - t0),
            "archived_before": archived_before.isoformat() if archived_before else None}


def recovery_finished(dest: LocalCluster) -> bool:
    """Whether a copy started by ``begin_pitr`` on this machine has left recovery (raises when it stopped instead)."""
    if not dest.is_running():
        raise RestoreError(f"restored cluster {dest.name} stopped during recovery: {dest.log_tail()}")
    try:
        return _socket_query(dest, "SELECT pg_is_in_recovery()") == "f"
    except RestoreError:
        return False


def recovery_progress(admin: Endpoint, timeout: int = 2) -> tuple[str, str]:
    """Where a restored copy is, asked over SQL only (a worker or triggerer on another machine can ask):
    ``("done", ...)`` once it has left recovery, ``("recovering", why)`` while it replays or is not yet consistent
    (it answers, or refuses with 'starting up'), ``("down", why)`` when nothing answers at its address."""
    import psycopg

    try:
        with connect(admin, connect_timeout=timeout, statement_timeout_ms=timeout * 1000) as conn:
            in_recovery = conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]
    except psycopg.OperationalError as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "starting up" in text or "not yet accepting connections" in text or "recovery" in text:
            return "recovering", text
        return "down", text
    return ("recovering", "in recovery") if in_recovery else ("done", "out of recovery")


def complete_pitr(dest: LocalCluster, plan: dict, admin: Endpoint | None = None) -> RestoreResult:
    """After recovery ended: where it got to, whether it reached the end of the archive, the result.

    :param admin: a superuser endpoint at the copy's address: the copy is asked over SQL (it runs on a host of its
        own; its staged WAL is that host's to remove). Without it the copy is this machine's own: asked on its
        socket, its staged WAL removed and the result recorded beside it for a retry."""
    timings = dict(plan["timings"])
    now = time.time()
    timings["replay_and_promote"] = now - plan["started_at_unix"]
    timings["total"] = now - plan["began_at_unix"]
    if admin is None:
        shutil.rmtree(plan["wal_dir"], ignore_errors=True)
    lsn, tli, replayed = _position(dest) if admin is None else _position_over_sql(admin)
    continuity = ContinuityResult(**plan["continuity"])
    if plan["target_kind"] == "latest":
        check_reached_end(continuity, replayed, plan["backup_id"], plan["wal_segment_size"])
    log.info("PITR of %s to %s: %s WAL segments staged, restored LSN %s on timeline %s",
             plan["backup_id"], plan["target"], plan["staged"], lsn, tli)
    archive = {"segments_staged": plan["staged"], "newest_archived_segment": continuity.last_segment,
               "continuity": continuity.describe(), "replayed_lsn": replayed, "archived_before": plan["archived_before"]}
    result = RestoreResult(method="pitr", cluster=dest.name, host=dest.host, port=dest.port, data_dir=str(dest.data_dir),
                           backup_id=plan["backup_id"], target=plan["target"], restored_lsn=lsn, timeline=tli,
                           finished_at=datetime.now(UTC).isoformat(), timings=timings, neutralized=plan["neutralized"],
                           archive=archive)
    return _record(dest, result) if admin is None else result


def _socket_query(dest: LocalCluster, sql: str) -> str:
    out = run_as_server([pg_tool("psql"), "-h", str(dest.socket_dir), "-p", str(dest.port), "-U", "postgres",
                         "-d", "postgres", "-Atqc", sql], timeout=30, check=False)
    if out.returncode != 0:
        raise RestoreError(out.stderr.strip())
    return out.stdout.strip()


POSITION_SQL = ("SELECT pg_current_wal_lsn() || ' ' || ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))"
                "::bit(32)::int || ' ' || coalesce(pg_last_wal_replay_lsn(), pg_current_wal_lsn())")


def _position_over_sql(admin: Endpoint) -> tuple[str, int, str]:
    lsn, tli, replayed = query_one(admin, POSITION_SQL)[0].split()
    return lsn, int(tli), replayed


def wait_recovered(admin: Endpoint, timeout: float, interval: float = 0.5, name: str = "",
                   check: Callable[[], None] | None = None) -> None:
    """Until the copy at ``admin``'s address has left recovery, over SQL only.

    :param check: called on every poll (a drill's stop conditions: it raises to end the wait)
    :raises RestoreError: it stopped answering after it had answered (it stopped during recovery)
    :raises RecoveryTimedOut: still in recovery (or never answering) after ``timeout``"""
    deadline = time.monotonic() + timeout
    seen, why = False, ""
    while time.monotonic() < deadline:
        if check is not None:
            check()
        state, why = recovery_progress(admin)
        if state == "done":
            return
        if state == "down" and seen:
            raise RestoreError(f"restored cluster {name or admin.address()} stopped answering during recovery: {why}")
        seen = seen or state == "recovering"
        time.sleep(interval)
    raise RecoveryTimedOut(f"restored cluster {name or admin.address()} still in recovery after {timeout:.0f}s ({why})")


def _wait_promoted(dest: LocalCluster, admin: Endpoint, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if recovery_finished(dest):
            return
        time.sleep(0.1)
    raise RecoveryTimedOut(f"restored cluster {dest.name} still in recovery after {timeout}s: {dest.log_tail()}")


def _position(dest: LocalCluster) -> tuple[str, int, str]:
    """(current LSN, timeline, last replayed LSN) of a promoted copy."""
    row = _socket_query(dest, POSITION_SQL)
    lsn, tli, replayed = row.split()
    return lsn, int(tli), replayed


def restore_logical(store: BackupStore, backup_id: str | None, dest: LocalCluster, superuser_password: str,
                    production: list[tuple[str, int]], jobs: int = 2, dbname: str = "controlplane",
                    owner_password: str | None = None) -> RestoreResult:
    """``pg_restore -j N`` of a dump into a fresh cluster on ``dest``."""
    refuse_production_target(dest, production)
    reused = _reuse_finished(dest, "logical")
    if reused:
        return reused
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    backup_id = backup_id or store.backup_ids("logical_dump")[-1]
    manifest = store.manifest("logical_dump", backup_id)
    obj = manifest.objects[0]
    dest.prepare_parent()
    dump_path = dest.data_dir.parent / f"{dest.name}.dump"
    size, digest = store.download(obj.key, dump_path)
    if digest != obj.sha256:
        dump_path.unlink(missing_ok=True)
        raise RestoreError(f"logical dump {backup_id}: sha256 {digest} does not match manifest {obj.sha256}")
    timings["fetch_dump"] = time.monotonic() - t0

    t = time.monotonic()
    dest.initdb(superuser_password)
    dest.configure({"max_wal_size": "2GB", "checkpoint_timeout": "15min"})
    dest.start()
    timings["initdb"] = time.monotonic() - t
    admin = Endpoint(dest.host, dest.port, "postgres", "postgres", superuser_password)
    with connect(admin) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    t = time.monotonic()
    proc = subprocess.run([pg_tool("pg_restore"), "-h", dest.host, "-p", str(dest.port), "-U", "postgres",
                           "-d", dbname, "-j", str(jobs), "--no-owner", "--no-privileges", "--exit-on-error",
                           str(dump_path)], capture_output=True, text=True,
                          env={**server_env(), "PGPASSWORD": superuser_password}, timeout=7200)
    dump_path.unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RestoreError(f"pg_restore of logical dump {backup_id} failed: {proc.stderr.strip()[-500:]}")
    timings["pg_restore"] = time.monotonic() - t
    if owner_password:
        with connect(admin.with_(dbname=dbname)) as conn:
            conn.execute(f"CREATE ROLE {dbname} LOGIN PASSWORD '" + owner_password.replace("'", "''") + "'")
            conn.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {dbname}")
            conn.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {dbname}")
    timings["total"] = time.monotonic() - t0
    lsn = query_one(admin, "SELECT pg_current_wal_lsn()::text")[0]
    return _record(dest, RestoreResult(method="logical", cluster=dest.name, host=dest.host, port=dest.port,
                                       data_dir=str(dest.data_dir), backup_id=backup_id, target="dump",
                                       restored_lsn=lsn, timeline=1, finished_at=datetime.now(UTC).isoformat(),
                                       timings=timings))
