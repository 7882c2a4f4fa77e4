"""The pgbench client (``pgbench``, on a global host): a second, real client of the control-plane database that
finds it by name, through the sandbox's DNS server, as an application with a connection string does.

A loop: resolve ``controlplane-db.rehearsal.internal.`` (A, through the DNS server with dnspython: its cache honours
the record's TTL), run the embedded ``pgbench --connect`` (a new connection per transaction) with a script of its own
(an upsert of its row in ``rehearsal_pgbench``) against that address on the port every database host listens on,
log the run, pause, repeat. After a failed run the cached answer is dropped and the name resolved afresh, as a client
reconnecting does.

One JSON line per run in its log (``rehearsal.drills.pgbench`` reads it)::

    {"at": end (epoch s), "started": start (epoch s), "address", "ok", "transactions", "error"}

``ok``: every transaction of the run committed; ``transactions``: how many did; ``address``: the address it resolved
(None when the name did not resolve); ``error``: pgbench's own words.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.resolver

log = logging.getLogger(__name__)

TABLE = "rehearsal_pgbench"
# One row per client, upserted: every transaction is a committed write, and the table does not grow.
CREATE_TABLE = (f"CREATE TABLE IF NOT EXISTS {TABLE} (client text PRIMARY KEY, runs bigint NOT NULL, "
                "committed_at timestamptz NOT NULL)")
SCRIPT = (f"INSERT INTO {TABLE} (client, runs, committed_at) VALUES ('pgbench', 1, clock_timestamp()) "
          f"ON CONFLICT (client) DO UPDATE SET runs = {TABLE}.runs + 1, committed_at = clock_timestamp();\n")
RUN_TIMEOUT = 10.0

_PROCESSED = re.compile(r"number of transactions actually processed: (\d+)")


class PgbenchLoop:
    """:param resolver: a dnspython resolver asking the sandbox's DNS server
    :param name: the database's A record
    :param port: the port every database host listens on
    """

    def __init__(self, resolver: dns.resolver.Resolver, name: str, port: int, dbname: str, user: str, password: str,
                 pgbench: str, script: Path, transactions: int = 3) -> None:
        self.resolver, self.name, self.port = resolver, name, port
        self.dbname, self.user, self.password = dbname, user, password
        self.pgbench, self.script, self.transactions = pgbench, script, transactions

    def forget_answer(self) -> None:
        """Drop the cached answer: the next run asks the DNS server again."""
        if self.resolver.cache is not None:
            self.resolver.cache.flush((dns.name.from_text(self.name), dns.rdatatype.A, dns.rdataclass.IN))

    def run_once(self) -> dict:
        started = time.time()
        try:
            address = self.resolver.resolve(self.name, "A")[0].address
        except (dns.exception.DNSException, OSError) as exc:
            return {"at": time.time(), "started": started, "address": None, "ok": False, "transactions": 0,
                    "error": f"resolve {self.name}: {type(exc).__name__}: {exc}"[:300]}
        args = [self.pgbench, "--connect", "--no-vacuum", "--client=1", f"--transactions={self.transactions}",
                f"--file={self.script}", f"--host={address}", f"--port={self.port}", f"--username={self.user}", self.dbname]
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "2", "PGAPPNAME": "rehearsal-pgbench",
               "PGOPTIONS": "-c statement_timeout=5000"}
        try:
            proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return {"at": time.time(), "started": started, "address": address, "ok": False, "transactions": 0,
                    "error": f"pgbench against {address}:{self.port} ran over {RUN_TIMEOUT:.0f}s"}
        match = _PROCESSED.search(proc.stdout)
        done = int(match.group(1)) if match else 0
        ok = proc.returncode == 0 and done == self.transactions
        error = None
        if not ok:
            lines = [line.strip() for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
            why = next((line for line in lines if "error" in line.lower() or "fatal" in line.lower()),
                       lines[0] if lines else f"exit {proc.returncode}")
            error = f"pgbench against {address}:{self.port} (exit {proc.returncode}): {why[:300]}"
        return {"at": time.time(), "started": started, "address": address, "ok": ok, "transactions": done, "error": error}


def run(loop: PgbenchLoop, log_path: Path, stopping: threading.Event, interval: float = 0.5) -> None:
    """A run every ``interval`` seconds until SIGTERM, one line each in ``log_path``; the name is resolved afresh
    after a failed run."""
    log.info("pgbench through %s port %s via DNS %s:%s (pid %s), writing %s", loop.name, loop.port,
             loop.resolver.nameservers[0], loop.resolver.port, os.getpid(), log_path)
    with log_path.open("a") as out:
        while not stopping.is_set():
            try:
                line = loop.run_once()
            except Exception as exc:  # noqa: BLE001 - never exits: a broken run is a failed run in the log
                log.exception("pgbench run failed")
                line = {"at": time.time(), "started": time.time(), "address": None, "ok": False, "transactions": 0,
                        "error": f"{type(exc).__name__}: {exc}"[:300]}
            out.write(json.dumps(line) + "\n")
            out.flush()
            if not line["ok"]:
                loop.forget_answer()
            stopping.wait(interval)
