"""The sandbox's hosts: every machine of the platform has its own address in 127.0.0.0/8.

Linux routes the whole block to the loopback interface, so a process binds ``127.42.1.10`` with no root and no
configuration, and a client reaches it there. Each sandbox takes a block of its own (``127.<n>``; the test suite's
differs from a developer's), and each region a third octet of it:

    127.<n>.0.<h>   global: the local AWS endpoint, Rehearsal's results database, the DNS server, and the clients
                    that measure drills (customers, the heartbeat, the prober, the load): they outlive any region
    127.<n>.1.<h>   us-east-1: database hosts, the control-plane services, the fleet's hosts, the evidence makers
    127.<n>.2.<h>   us-west-2: the standby control plane (a standby database, the services installed but stopped),
                    the other half of the fleet, its edge

127.0.0.1 belongs to the Airflow worker and triggerer (and what they make for themselves: scratch copies of a
restore test). A recovery that production will use lands on a host the provisioner gives it, never there.

State (top level of ``state.json``, beside the regions)::

    "network": {"block": "127.42", "postgres_port": 5432, "last_host": {"us-east-1": 41}},
    "hosts": {"db-1": {"address": "127.42.1.10", "region": "us-east-1", "role": "postgres"}, ...}

Every database host listens on the same Postgres port (``postgres_port``): a host is told apart by its address,
as on a real network. Host names are unique in a sandbox; addresses are unique while the host exists.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rehearsal_sandbox.state import SandboxState

GLOBAL = "global"
REGION_OCTETS = {GLOBAL: 0, "us-east-1": 1, "us-west-2": 2}
REGIONS = ("us-east-1", "us-west-2")  # the platform's regions (GLOBAL is what outlives them: not a region)


def other_region(region: str) -> str:
    return next(r for r in REGIONS if r != region)
FIRST_HOST, LAST_HOST = 10, 250  # .1-.9 left alone (.1 of each region is nobody's)
WORKER_ADDRESSES = ("127.0.0.1", "localhost", "::1")
DEFAULT_POSTGRES_PORT = 5432


@dataclass(frozen=True)
class Host:
    """One machine: its name, its address, its region, what it is for."""

    name: str
    address: str
    region: str
    role: str  # postgres | service | agent | aws | results | client
    purpose: str = ""  # for provisioned database hosts: production | scratch
    run_key: str = ""  # the run that asked for it (provisioned hosts)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v or k in ("name", "address", "region", "role")}


def choose_block(state_dir: str) -> str:
    """``127.<n>`` for a sandbox: ``REHEARSAL_ADDRESS_BLOCK`` when set, else one derived from its state folder (20-99;
    the test suite picks 100-249 for itself)."""
    given = os.environ.get("REHEARSAL_ADDRESS_BLOCK")
    if given:
        octets = given.strip().split(".")
        if len(octets) != 2 or octets[0] != "127" or not octets[1].isdigit() or not 2 <= int(octets[1]) <= 254:
            raise ValueError(f"REHEARSAL_ADDRESS_BLOCK={given!r} is not 127.<2-254>")
        return given.strip()
    n = 20 + int(hashlib.sha256(state_dir.encode()).hexdigest(), 16) % 80
    return f"127.{n}"


def choose_postgres_port(block: str) -> int:
    """5432 when nothing on this machine holds it for every address (a wildcard listener would); else a free one."""
    probe = f"{block}.{REGION_OCTETS['us-east-1']}.{FIRST_HOST}"
    for port in (DEFAULT_POSTGRES_PORT, 0):
        with socket.socket() as sock:
            # As PostgreSQL binds: connections of a sandbox just torn down, still in TIME_WAIT, do not hold the port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((probe, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise RuntimeError(f"no free TCP port on {probe}")


def is_worker_address(host: str) -> bool:
    """The Airflow worker's own loopback (every client that resolves it reaches itself, not the database)."""
    return host in WORKER_ADDRESSES


class HostRegistry:
    """The sandbox's hosts (``state.json``'s ``hosts``), allocated by name, idempotently."""

    def __init__(self, state: SandboxState) -> None:
        self._state = state

    @property
    def _hosts(self) -> dict[str, dict]:
        return self._state.data.setdefault("hosts", {})

    @property
    def network(self) -> dict:
        return self._state.data.setdefault("network", {})

    @property
    def block(self) -> str:
        return self.network["block"]

    @property
    def postgres_port(self) -> int:
        return int(self.network["postgres_port"])

    def allocate(self, name: str, region: str, role: str, purpose: str = "", run_key: str = "") -> Host:
        """The host ``name`` (made when it does not exist yet, at the lowest free address of its region)."""
        existing = self._hosts.get(name)
        if existing is not None:
            return Host(name=name, **existing)
        if region not in REGION_OCTETS:
            raise ValueError(f"no address block for region {region!r} (regions: {', '.join(REGION_OCTETS)})")
        prefix = f"{self.block}.{REGION_OCTETS[region]}."
        taken = {h["address"] for h in self._hosts.values()}
        # Round the region's range from after the last address given: a host just released (a lost primary) does not
        # hand its address to the next one at once, so evidence naming an address names one machine for a while.
        size = LAST_HOST - FIRST_HOST + 1
        last = self.network.setdefault("last_host", {}).get(region, FIRST_HOST - 1)
        for step in range(1, size + 1):
            n = FIRST_HOST + (last - FIRST_HOST + step) % size
            if prefix + str(n) not in taken:
                host = Host(name, prefix + str(n), region, role, purpose, run_key)
                self._hosts[name] = {k: v for k, v in host.to_dict().items() if k != "name"}
                self.network["last_host"][region] = n
                return host
        raise RuntimeError(f"region {region} of this sandbox has no free address left ({prefix}{FIRST_HOST}-{LAST_HOST})")

    def get(self, name: str) -> Host | None:
        record = self._hosts.get(name)
        return Host(name=name, **record) if record else None

    def at(self, address: str) -> Host | None:
        """The host that has this address (``host`` or ``host:port``), if any."""
        host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
        return next((h for h in self.all() if h.address == host), None)

    def all(self, region: str | None = None) -> list[Host]:
        hosts = [Host(name=n, **r) for n, r in self._hosts.items()]
        return [h for h in hosts if region is None or h.region == region]

    def release(self, name: str) -> Host | None:
        """Forget a host (its processes are gone); its address may be given to another later."""
        record = self._hosts.pop(name, None)
        return Host(name=name, **record) if record else None

    def check(self) -> None:
        """Every address is in this sandbox's block and none is the worker's."""
        for host in self.all():
            if is_worker_address(host.address) or not host.address.startswith(self.block + "."):
                raise ValueError(f"host {host.name} has address {host.address}, outside this sandbox's block {self.block}")
            ipaddress.ip_address(host.address)
