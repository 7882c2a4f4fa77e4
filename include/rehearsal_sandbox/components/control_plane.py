"""The control-plane services and the data plane (``docs/control-plane-services.md``): the API, the scheduler, the
reconciler, the host agents, and the drills' evidence makers, the blackbox prober and the synthetic load. Each is one
process (``python -m rehearsal_sandbox run-<daemon>``, bodies in ``rehearsal_sandbox.services``) on a host of its own
(``rehearsal_sandbox.hosts``) and a port chosen once, at ``up()``: a killed and restarted service comes back at the
same address.

Slices: ``{"host": "127.<n>.1.<h>", "port": n, "pid": n}``; the API adds ``"mode_file"`` (its mode, kept across
restarts), the prober and the load their ``"log"``, the agents ``"hosts": {"agent-01": "127.<n>.1.<h>", ...}``, one
``"port"`` they all listen on and ``"state_dir"`` (their running state, kept across restarts). The agents are
published in the SRV record ``AGENTS_RECORD``.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

import psutil

from rehearsal.discovery import DiscoveryRecord, point_all_at, resolve_all
from rehearsal.postgres.cluster import free_port
from rehearsal_sandbox.components.base import DaemonComponent, ok, pid_alive, progress

AGENTS_RECORD = "_agent._tcp.dataplane.rehearsal.internal."
DB = "controlplane"
START_TIMEOUT = 30.0
CONTROL_PLANE_SERVICES = ("api", "scheduler", "reconciler")  # in one region at a time; installed in the other
# Where each control-plane service runs now: clients (the agents, the prober, the load, runbooks) find it here, and
# a region failover points them at the other region's.
SERVICE_RECORDS = {name: f"_controlplane-{name}._tcp.rehearsal.internal." for name in CONTROL_PLANE_SERVICES}


class ServiceComponent(DaemonComponent):
    """One service process on a host of its own, at a fixed port, answering ``GET /healthz``."""

    title: ClassVar[str]
    host_role: ClassVar[str] = "service"  # evidence makers are ``client`` hosts

    @property
    def port(self) -> int:
        return int(self.state["port"])

    @property
    def host(self) -> str:
        return self.state["host"]

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def known_url(self) -> str | None:
        """Its URL, once ``up()`` chose its address (re-read from the state file until then)."""
        if not self.state.get("port"):
            self.sandbox.reload()
        return self.url if self.state.get("port") else None

    @property
    def host_region(self) -> str:
        """The region of its host: the measuring clients are global (they outlive any region)."""
        from rehearsal_sandbox.hosts import GLOBAL

        return GLOBAL if self.host_role == "client" else self.region

    @property
    def standing_by(self) -> bool:
        """A control-plane service of the region the control plane does not run in: installed, stopped."""
        return self.name in CONTROL_PLANE_SERVICES and self.region != self.sandbox.control_plane_region

    def install(self) -> None:
        """Its host and port, chosen once."""
        if not self.state.get("port"):
            suffix = "1" if self.region == "us-east-1" or self.host_role == "client" else self.region.split("-")[1] + "-1"
            host = self.sandbox.hosts.allocate(f"{self.name}-{suffix}", self.host_region, self.host_role).address
            self.state.update({"host": host, "port": free_port(host=host)})
            self.sandbox.save()

    def up(self) -> None:
        self.install()
        if self.standing_by:
            progress(f"installed the {self.title} in {self.region} (stopped: the standby control plane)")
            return
        progress(f"starting the {self.title}" + (f" in {self.region}" if self.region != "us-east-1" else ""))
        self.start()
        self.publish_record()

    def publish_record(self) -> bool:
        """Its SRV record names it (control-plane services only); False when it already did."""
        if self.name not in SERVICE_RECORDS:
            return False
        from rehearsal.discovery import point_at

        record = DiscoveryRecord(zone_id=self.sandbox.service_discovery.zone_id, name=SERVICE_RECORDS[self.name])
        return point_at(self.sandbox.aws("route53"), record, self.host, self.port)

    # ------------------------------------------------------------------ what the provisioner does with it
    def start(self, mode: str | None = None) -> list[str]:
        """Start it unless it runs; wait until it answers. Returns what it did."""
        if self.alive():
            return [f"{self.name} already runs (pid {self.pid}) at {self.url}"]
        pid = self.spawn([sys.executable, "-m", "rehearsal_sandbox", f"run-{self.daemon}", "--state-dir", str(self.sandbox.dir),
                          "--region", self.region, *(["--mode", mode] if mode else [])])
        self.wait_answering()
        return [f"started {self.name} (pid {pid}) at {self.url}" + (f" in mode {mode}" if mode else "")]

    def wait_answering(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers()[0]:
            if not self.alive():
                raise RuntimeError(f"the {self.title} exited at start: see {self.sandbox.dir / (self.daemon + '.log')}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.title} does not answer on {self.url} after {timeout:.0f}s: "
                                   f"see {self.sandbox.dir / (self.daemon + '.log')}")
            time.sleep(0.05)

    def stop(self) -> None:
        """TERM (KILL after 10 s); the pid leaves the slice."""
        super().stop()
        self.sandbox.save()

    def kill(self) -> float:
        """SIGKILL; returns when it took effect (unix time), once the process is really dead."""
        return kill_all([self])[1]

    def running(self) -> bool:
        return self.alive() and self.answers()[0]

    def answers(self) -> tuple[bool, str]:
        """Whether ``GET /healthz`` gets an answer (any status), and what it said."""
        from rehearsal_sandbox.services.common import call

        if not self.state.get("port"):
            return False, "no port"
        try:
            status, body = call("GET", f"{self.url}/healthz", timeout=1.0)
        except OSError as exc:
            return False, f"{self.url} does not answer: {exc}"
        return True, f"{self.url} healthz {status} {body}"

    def status(self) -> dict[str, dict]:
        if not self.state.get("port"):
            return {self.name: ok(False, "not created")}
        if self.standing_by and not self.alive():
            return {self.name: ok(True, f"installed at {self.url}, stopped (the control plane runs in "
                                        f"{self.sandbox.control_plane_region})")}
        answers, detail = self.answers() if self.alive() else (False, "not running")
        return {self.name: ok(self.alive() and answers, f"{self.daemon} pid {self.pid}, {detail}"[:300])}

    def down(self) -> None:
        super().stop()


def kill_all(components: Iterable[ServiceComponent]) -> tuple[dict[str, int], float]:
    """SIGKILL every component's process at once; returns ({name: pid}, when the last was really dead). A zombie is
    dead (its parent may reap it later)."""
    killed: dict[str, int] = {}
    sandbox = None
    for component in components:
        pid = component.state.pop("pid", None)
        sandbox = component.sandbox
        if pid and pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                killed[component.name] = pid
            except ProcessLookupError:
                pass
    while any(pid_alive(pid) for pid in killed.values()):
        time.sleep(0.01)
    killed_at = time.time()
    if sandbox is not None:
        sandbox.save()
    for pid in killed.values():  # reaped when it is our child
        try:
            psutil.Process(pid).wait(timeout=0)
        except (psutil.Error, ChildProcessError):
            pass
    return killed, killed_at


# ---------------------------------------------------------------------- the control plane
class LoggingClient(ServiceComponent):
    """A client on a global host that writes its evidence as JSON lines (``log_name`` in the sandbox folder): it
    outlives any region; alive is all it answers, and its log goes with it."""

    host_role: ClassVar[str] = "client"
    interval: ClassVar[float] = 0.5
    log_name: ClassVar[str]

    @property
    def log(self) -> Path:
        return Path(self.state.get("log") or self.sandbox.dir / self.log_name)

    def record_log(self) -> None:
        self.state["log"] = str(self.sandbox.dir / self.log_name)

    def answers(self) -> tuple[bool, str]:
        if not self.alive():
            return False, "not running"
        return True, f"{self.name} pid {self.pid}, log {self.log}"

    def down(self) -> None:
        super().down()
        self.log.unlink(missing_ok=True)


class ControlPlaneApi(ServiceComponent):
    name = "api"
    daemon = "api"
    title = "control-plane API"

    @property
    def mode_file(self) -> Path:
        return Path(self.state.get("mode_file") or self.sandbox.dir / "api-mode.json")

    def up(self) -> None:
        import secrets

        self.state["mode_file"] = str(self.sandbox.dir / "api-mode.json")
        # Served at GET /v1/identity: the platform's API, whichever region serves it (the standby control plane's is
        # the same API, so a drill target recorded before a region failover is still recognised after it).
        home = self.sandbox.sandbox_state.peek("us-east-1", "api").get("identity")
        self.state.setdefault("identity", home or f"sandbox-api-{secrets.token_hex(6)}")
        super().up()

    @property
    def identity(self) -> str | None:
        return self.state.get("identity")

    def start(self, mode: str | None = None) -> list[str]:
        """Start it (in ``mode`` when given, else the mode it was left in); a running API only gets its mode set."""
        if self.alive():
            done = super().start()
            if mode is not None and self.mode()["mode"] != mode:
                self.set_mode(mode, "set by the provisioner")
                done.append(f"set the API's mode to {mode}")
            return done
        return super().start(mode)

    def mode(self) -> dict:
        from rehearsal_sandbox.services.common import call

        return call("GET", f"{self.url}/v1/mode", timeout=2)[1]

    def set_mode(self, mode: str, reason: str) -> dict:
        from rehearsal_sandbox.services.common import call

        status, body = call("PUT", f"{self.url}/v1/mode", {"mode": mode, "reason": reason}, timeout=2)
        if status != 200:
            raise RuntimeError(f"the API refused mode {mode}: {body}")
        return body

    def run(self, mode: str | None) -> None:
        from rehearsal_sandbox.services import api
        from rehearsal_sandbox.services.common import Database, discovery_resolvers, stop_event

        stopping = stop_event()
        primary, replicas = discovery_resolvers(self.sandbox, self.region)
        database = Database(primary, self.sandbox.passwords[DB], "controlplane-api", replicas)
        api.run(self.address, database, self.mode_file, mode, stopping, self.identity)

    def down(self) -> None:
        super().down()
        self.mode_file.unlink(missing_ok=True)


class Scheduler(ServiceComponent):
    name = "scheduler"
    daemon = "scheduler"
    title = "scheduler"

    def run(self) -> None:
        from rehearsal_sandbox.services import scheduler
        from rehearsal_sandbox.services.common import Database, discovery_resolvers, stop_event

        stopping = stop_event()
        primary, _replicas = discovery_resolvers(self.sandbox, self.region)
        scheduler.run(self.address, Database(primary, self.sandbox.passwords[DB], "scheduler", pool_size=1), stopping)


class Reconciler(ServiceComponent):
    name = "reconciler"
    daemon = "reconciler"
    title = "reconciler"

    @property
    def default_rate(self) -> float:
        return float(self.state.get("default_rate", 5.0))

    def up(self) -> None:
        self.state["default_rate"] = float(os.environ.get("SANDBOX_RECONCILER_RATE", "5.0"))
        super().up()

    def metrics(self) -> dict:
        from rehearsal_sandbox.services.common import call

        return call("GET", f"{self.url}/v1/metrics", timeout=2)[1]

    def set_rate(self, rate: float) -> dict:
        from rehearsal_sandbox.services.common import call

        status, body = call("PUT", f"{self.url}/v1/rate", {"rate": rate}, timeout=2)
        if status != 200:
            raise RuntimeError(f"the reconciler refused rate {rate}: {body}")
        return body

    def run(self) -> None:
        from rehearsal_sandbox.services import reconciler
        from rehearsal_sandbox.services.common import Database, discovery_resolvers, stop_event

        stopping = stop_event()
        primary, _replicas = discovery_resolvers(self.sandbox, self.region)
        database = Database(primary, self.sandbox.passwords[DB], "reconciler", pool_size=1)
        reconciler.run(self.address, reconciler.Reconciler(database, self.peer("agents").resolver(), self.default_rate), stopping)


# ---------------------------------------------------------------------- the data plane
class HostAgents(ServiceComponent):
    """Every host's agent, in one process; each listens on its own host's address (all on one port)."""

    name = "agents"
    daemon = "agents"
    title = "host agents"
    host_role = "agent"

    @property
    def hosts(self) -> dict[str, str]:
        """``{hostname: address}`` of every fleet host."""
        return dict(self.state.get("hosts", {}))

    @property
    def host(self) -> str:
        return min(self.hosts.values(), key=_address_key)  # the first agent's: the process answers there

    @property
    def ports(self) -> dict[str, int]:
        return {h: self.port for h in self.hosts}

    def listen_addresses(self) -> dict[str, tuple[str, int]]:
        return {hostname: (address, self.port) for hostname, address in self.hosts.items()}

    @property
    def state_dir(self) -> Path:
        return Path(self.state.get("state_dir") or self.sandbox.dir / f"agents-{self.region}")

    def record(self) -> DiscoveryRecord:
        return DiscoveryRecord(zone_id=self.sandbox.service_discovery.zone_id, name=AGENTS_RECORD)

    def fleet_addresses(self) -> list[tuple[str, int]]:
        """Every region's agents (the inventory lists the whole fleet, whichever region is up)."""
        out = []
        for region in self.sandbox._regions():
            agents = self.sandbox.components(region).get("agents")
            if agents is not None and agents.exists:
                out += list(agents.listen_addresses().values())
        return out

    def addresses(self) -> dict[str, str]:
        return {hostname: f"{address}:{self.port}" for hostname, address in self.hosts.items()}

    def resolver(self):
        """Every agent's (host, port), read from the SRV record (what the control plane and the prober use)."""
        import threading

        route53 = self.sandbox.aws("route53")
        record, lock = self.record(), threading.Lock()

        def resolve() -> list[tuple[str, int]]:
            with lock:
                return resolve_all(route53, record)

        return resolve

    def up(self) -> None:
        from rehearsal_sandbox.seed import hostnames

        if not self.state.get("hosts"):
            names = hostnames(self.sandbox.controlplane_db.fleet()["hosts"])
            half = (len(names) + 1) // 2  # as the fleet's rows say: the first half in us-east-1, the rest in us-west-2
            names = names[:half] if self.region == "us-east-1" else names[half:]
            hosts = {name: self.sandbox.hosts.allocate(name, self.region, self.host_role).address for name in names}
            self.state["hosts"] = hosts
            self.state["port"] = free_port(host=min(hosts.values(), key=_address_key))
            self.state["state_dir"] = str(self.sandbox.dir / f"agents-{self.region}")
            self.sandbox.save()
        self.publish()
        progress(f"starting {len(self.ports)} host agents")
        self.start()

    def publish(self) -> bool:
        """The SRV record lists every agent."""
        return point_all_at(self.sandbox.aws("route53"), self.record(), self.fleet_addresses())

    def start(self, mode: str | None = None) -> list[str]:
        done = super().start()
        if self.publish():
            done.append(f"published {len(self.ports)} agents in {AGENTS_RECORD}")
        return done

    def answers(self) -> tuple[bool, str]:
        from rehearsal_sandbox.services.common import call

        def one(item: tuple[str, str]) -> str | None:
            try:
                status, _ = call("GET", f"http://{item[1]}/healthz", timeout=1.0)
                return None if status == 200 else f"{item[0]} healthz {status}"
            except OSError:
                return f"{item[0]} does not answer"

        if not self.hosts:
            return False, "no agents"
        with ThreadPoolExecutor(max_workers=8) as pool:
            problems = [p for p in pool.map(one, self.addresses().items()) if p]
        if problems:
            return False, f"{len(problems)} of {len(self.hosts)} agents: " + ", ".join(problems[:3])
        addresses = sorted(self.hosts.values(), key=_address_key)
        return True, f"{len(addresses)} agents answer on {addresses[0]}-{addresses[-1]} port {self.port}"

    def fault_all(self, **flags: bool) -> list[str]:
        """Set fault flags (test only: ``fail_desired``) on every agent that answers; the agents whose flags changed."""
        from rehearsal_sandbox.services.common import call

        changed = []
        for hostname, address in self.addresses().items():
            try:
                status, body = call("PUT", f"http://{address}/v1/faults", flags, timeout=2)
            except OSError:
                continue
            if status != 200:
                raise RuntimeError(f"{hostname} refused faults {flags}: {body}")
            if body.get("previous") != body.get("faults"):
                changed.append(hostname)
        return changed

    def clear_faults(self) -> list[str]:
        """Every agent's fault flags off; the agents that had one."""
        return self.fault_all(fail_desired=False)

    def run(self) -> None:
        from rehearsal_sandbox.services import agents
        from rehearsal_sandbox.services.common import stop_event

        stopping = stop_event()
        agents.run(self.listen_addresses(), self.state_dir, self.sandbox.api_resolver(), stopping)

    def down(self) -> None:
        super().down()
        shutil.rmtree(self.state_dir, ignore_errors=True)


# ---------------------------------------------------------------------- evidence for drills
class Prober(ServiceComponent):
    name = "prober"
    daemon = "prober"
    title = "blackbox prober"
    host_role = "client"

    @property
    def log(self) -> Path:
        return Path(self.state.get("log") or self.sandbox.dir / "probe-log.jsonl")

    def up(self) -> None:
        self.state["log"] = str(self.sandbox.dir / "probe-log.jsonl")
        super().up()

    def run(self) -> None:
        from rehearsal_sandbox.services import prober
        from rehearsal_sandbox.services.common import stop_event

        stopping = stop_event()
        probe = prober.Prober(self.peer("agents").resolver(), self.sandbox.api_resolver())
        prober.run(probe, self.address, self.log, stopping)

    def down(self) -> None:
        super().down()
        self.log.unlink(missing_ok=True)


class SyntheticLoad(ServiceComponent):
    name = "load"
    daemon = "load"
    title = "synthetic load"
    host_role = "client"

    @property
    def log(self) -> Path:
        return Path(self.state.get("log") or self.sandbox.dir / "load-log.jsonl")

    def up(self) -> None:
        self.state["log"] = str(self.sandbox.dir / "load-log.jsonl")
        self.state["interval"] = float(os.environ.get("SANDBOX_LOAD_INTERVAL", "0.5"))
        super().up()

    def run(self) -> None:
        from rehearsal_sandbox.services import load
        from rehearsal_sandbox.services.common import stop_event

        stopping = stop_event()
        interval = float(self.state.get("interval", 0.5))
        load.run(load.Load(self.sandbox.api_resolver()), self.address, self.log, stopping, interval)

    def down(self) -> None:
        super().down()
        self.log.unlink(missing_ok=True)


SERVICES = ("api", "scheduler", "agents", "reconciler", "prober", "load")  # start order


def _address_key(address: str) -> tuple[int, ...]:
    return tuple(int(part) for part in address.split("."))
