"""The sandbox's state file, ``.sandbox/state.json``: what runs where, keyed by region and component.

    {"version": 2, "runtime": "<this sandbox's runtime folder>", "runtime_root": "<the shared runtime root>",
     "passwords": {"postgres": ..., "controlplane": ...},
     "network": {"block": "127.42", "postgres_port": 5432},
     "hosts": {"db-1": {"address": "127.42.1.10", "region": "us-east-1", "role": "postgres"}, ...},
     "regions": {"us-east-1": {"aws_endpoint": {...}, "controlplane_db": {...}, ...}}}

Shared by every component: the runtime folders, the passwords, the network (the sandbox's address block) and
the hosts (``rehearsal_sandbox.hosts``). Everything else belongs to one component of one
region, which reads and writes only its own slice (``component(region, name)``). A state file of the first,
flat layout (no ``version``) is read as the same sandbox in this layout, so it can still be used and torn down.
"""
from __future__ import annotations

import json
from pathlib import Path

VERSION = 2


class SandboxState:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.data: dict = {}
        self.upgraded = False  # read from the flat layout; written in this one on the next save
        self.load()

    def load(self) -> None:
        raw = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.upgraded = bool(raw) and "version" not in raw
        if self.upgraded:
            raw = from_flat(raw, self.path.parent)
        elif raw and raw["version"] != VERSION:
            raise RuntimeError(f"{self.path} has state version {raw['version']}, not {VERSION}: "
                               "tear that sandbox down with the code that made it")
        self.data = raw

    @property
    def exists(self) -> bool:
        """A sandbox was created here (and not torn down)."""
        return "runtime" in self.data

    def create(self, runtime: Path, runtime_root: Path, passwords: dict[str, str], network: dict | None = None) -> None:
        self.data = {"version": VERSION, "runtime": str(runtime), "runtime_root": str(runtime_root),
                     "passwords": dict(passwords), "network": dict(network or {}), "hosts": {}, "regions": {}}
        self.upgraded = False

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        regions = {region: {name: part for name, part in parts.items() if part}  # slices only read stay out
                   for region, parts in self.data.get("regions", {}).items()}
        tmp.write_text(json.dumps({**self.data, "regions": regions} if "regions" in self.data else self.data, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.path)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)
        self.data = {}
        self.upgraded = False

    # ------------------------------------------------------------------ shared by every component
    @property
    def runtime(self) -> Path:
        return Path(self.data["runtime"])

    @property
    def runtime_root(self) -> Path:
        return Path(self.data.get("runtime_root") or self.runtime.parent)

    @property
    def passwords(self) -> dict[str, str]:
        return self.data["passwords"]

    # ------------------------------------------------------------------ per region and component
    def regions(self) -> list[str]:
        return list(self.data.get("regions", {}))

    def component(self, region: str, name: str) -> dict:
        """The component's own slice, created empty on first use; the component changes it in place."""
        return self.data.setdefault("regions", {}).setdefault(region, {}).setdefault(name, {})

    def has_component(self, region: str, name: str) -> bool:
        return bool(self.peek(region, name))

    def peek(self, region: str, name: str) -> dict:
        """The component's slice as it is, without creating it (``{}`` when there is none): for reading only."""
        return self.data.get("regions", {}).get(region, {}).get(name, {})


def from_flat(flat: dict, state_dir: Path, region: str = "us-east-1") -> dict:
    """The first layout (one flat dict: ``clusters``, ``pids``, ``primary``, ``spool``, ...) in this one."""
    clusters = {name: dict(info) for name, info in flat.get("clusters", {}).items()}
    pids = flat.get("pids", {})
    components: dict[str, dict] = {}

    def put(name: str, **values) -> None:
        kept = {k: v for k, v in values.items() if v is not None}
        if kept:
            components[name] = kept

    put("aws_endpoint", url=flat.get("aws_endpoint"), pid=pids.get("moto"))
    put("discovery", zone_id=flat.get("zone_id"))
    results = clusters.pop("results", None)
    put("results_db", cluster={"name": "results", **results} if results else None)
    meta = clusters.pop("airflow-meta", None)
    put("airflow_metadata", cluster={"name": "airflow-meta", **meta} if meta else None)
    put("wal_shipping", spool=flat.get("spool"), pid=pids.get("wal-shipper"))
    put("controlplane_db", scale=flat.get("scale"), archive_timeout=flat.get("archive_timeout"),
        generation=flat.get("generation", 0), primary=flat.get("primary"), standby=flat.get("standby"),
        clusters=clusters, lost_data=flat.get("lost_data") or None)
    if "heartbeat" in pids:
        put("heartbeat", pid=pids["heartbeat"], log=str(state_dir / "heartbeat.log"))
    out: dict = {"version": VERSION}
    if "runtime" in flat:
        out["runtime"] = flat["runtime"]
        out["runtime_root"] = flat.get("runtime_root") or str(Path(flat["runtime"]).parent)
    return {**out, "passwords": flat.get("passwords", {}), "regions": {region: components}}
