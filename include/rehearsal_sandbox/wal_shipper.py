"""Ship archived WAL from the local spool to S3 (asynchronous archiving, as pgBackRest's archive-async).

PostgreSQL's archive_command only copies a finished segment into a spool folder (it runs as the
unprivileged server user and cannot reach S3 credentials); this loop uploads each spooled file,
checks it landed with the same size, and removes it from the spool.
"""
from __future__ import annotations

import hashlib
import logging
import signal
import time
from pathlib import Path

from rehearsal.backups.store import BackupStore

log = logging.getLogger(__name__)


def archive_command(spool: Path) -> str:
    """Atomic copy into the spool; refuses to overwrite a segment already waiting there."""
    return (f'test ! -f "{spool}/%f" && cp "%p" "{spool}/.%f.tmp" && mv "{spool}/.%f.tmp" "{spool}/%f"')


def ship_once(spool: Path, store: BackupStore) -> int:
    shipped = 0
    for path in sorted(spool.iterdir()):
        if path.name.startswith("."):
            continue
        data = path.read_bytes()
        key = store.wal_key(path.name)
        existing = store.head(key)
        if existing is not None:
            same = existing["ContentLength"] == len(data) and existing.get("ETag", "").strip('"') == hashlib.md5(data).hexdigest()  # noqa: S324 - S3 ETag
            if not same:
                log.error("WAL %s already archived with different content; kept in spool as .conflict", path.name)
                path.rename(path.with_name(f".{path.name}.conflict"))
                continue
        else:
            store.put_bytes(key, data, overwrite=False)
        path.unlink()
        shipped += 1
    return shipped


def run(spool: Path, store: BackupStore, interval: float = 0.2) -> None:
    running = True

    def _stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, _stop)
    while running:
        try:
            ship_once(spool, store)
        except Exception:  # noqa: BLE001 - keep shipping; the error is logged
            log.exception("WAL shipping failed; retrying")
        time.sleep(interval)
