"""Customers (``customers``): synthetic customer traffic that reaches the platform the way customers do. Every
``interval`` seconds it resolves the apps' name through the sandbox's DNS server with dnspython (its cache honours
the records' TTL, so a traffic shift reaches it when the TTL runs out, not sooner) and GETs a rotating sample of apps
through the edge it resolved to. One JSON line per request in ``customers-log.jsonl``:
``{"at", "resolved", "region", "app", "ok", "status", "served_by", "error"}``.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from pathlib import Path

import dns.exception
import dns.resolver

from rehearsal_sandbox.services.common import call

log = logging.getLogger(__name__)


def resolver(address: str, port: int) -> dns.resolver.Resolver:
    r = dns.resolver.Resolver(configure=False)
    r.nameservers, r.port = [address], port
    r.cache = dns.resolver.Cache()
    r.lifetime = r.timeout = 1.0
    return r


def run(dns_address: tuple[str, int], name: str, edge_port: int, apps: list[int], log_path: Path,
        stopping: threading.Event, interval: float = 0.5, per_round: int = 2) -> None:
    r = resolver(*dns_address)
    rotation = itertools.cycle(apps)
    log.info("customers resolving %s through %s:%s (pid %s), %s apps", name, *dns_address, os.getpid(), len(apps))
    with log_path.open("a") as out:
        while not stopping.is_set():
            started = time.monotonic()
            try:
                resolved = r.resolve(name, "A")[0].address
                error = None
            except (dns.exception.DNSException, OSError) as exc:
                resolved, error = None, f"resolve {name}: {type(exc).__name__}: {exc}"
            for _ in range(per_round):
                app = next(rotation)
                line = {"at": time.time(), "resolved": resolved, "app": app, "ok": False, "status": None,
                        "region": None, "served_by": None, "error": error}
                if resolved:
                    try:
                        status, body = call("GET", f"http://{resolved}:{edge_port}/apps/{app}", timeout=1.0)
                        line.update(status=status, ok=status == 200, region=body.get("region") if status == 200 else None,
                                    served_by=body.get("served_by"), error=None if status == 200 else body.get("error"))
                    except OSError as exc:
                        line["error"] = f"{resolved}:{edge_port}: {exc}"
                out.write(json.dumps(line) + "\n")
            out.flush()
            stopping.wait(max(0.05, interval - (time.monotonic() - started)))
