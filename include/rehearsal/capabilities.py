"""What a provisioner can do, as protocols checked with ``isinstance``.

A provisioner (the environment's ``provisioner``, loaded by ``rehearsal.platform.load_provisioner``) is whatever
object the platform provides; each capability below is a small ``typing.Protocol``. A step that needs one asks
``capability_limitation(provisioner, Capability)``: ``None`` when the provisioner has it, else the reason in words
(what is missing, and what it would have been used for), which the step's refusal carries.

- ``DatabaseHosts``: record a recovered primary, build a new standby (runbooks: rebuild redundancy)
- ``RestoreHosts``: a point-in-time restore on a database host of its own (the runbook drives it over SQL)
- ``ServiceControl``: start, stop and check the control plane's services (Scenario A restores a dead service)
- ``VolumeHosts``: in-place volume restores and their verification, on the volume's own host
- ``SnapshotStoreAdmin``: the snapshotter's interval, the snapshot bucket as the platform configures it (Scenario D)
- ``EnvironmentRestorer``: make a drill environment whole after a drill, and list the data directories it owns
- ``FleetHosts``: a minimal host fleet in a region (Scenario C's single-region rebuild)
- drill-only faults: ``PrimaryLossFaults``, ``ServiceFaults``, ``SnapshotStoreFaults``, ``RegionFaults``

``runtime_checkable`` protocols check that the methods exist, not their signatures; each method's contract is in
its docstring here. Nothing imports Airflow or the sandbox.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class DatabaseHosts(Protocol):
    """Hands on the database's hosts: every method is idempotent and returns what it did, in words."""

    def adopt_primary(self, address: str, data_dir: str | None) -> list[str]:
        """Record the recovered primary at ``address`` in the platform's inventory."""
        ...

    def rebuild_standby(self, primary_address: str) -> list[str]:
        """Build a new streaming standby of the primary at ``primary_address``."""
        ...


@runtime_checkable
class RestoreHosts(Protocol):
    """A provisioner that gives a point-in-time restore a database host of its own, where clients can reach it: the
    restore runs there (it reads the backup store itself), and the runbook drives it over the network only.

    ``restore_database`` takes a ``rehearsal.postgres.restore.RestoreRequest`` as a dict and returns a
    ``PlacedRestore`` as a dict (the same host for a retry of the same run); ``database_hosts`` lists the address of
    every database host of the platform's inventory (members and copies it placed); ``release_run`` destroys the
    copies a run asked for that production did not adopt, and says what it did."""

    def restore_database(self, request: dict) -> dict: ...
    def database_hosts(self) -> list[str]: ...
    def release_run(self, run_key: str) -> list[str]: ...


@runtime_checkable
class ServiceControl(Protocol):
    """Start, stop and check the control plane's services (``docs/control-plane-services.md``)."""

    def start_service(self, name: str, mode: str | None = None) -> list[str]:
        """Start the service unless it runs (``mode``: the API's); what was done, in words."""
        ...

    def stop_service(self, name: str) -> list[str]:
        ...

    def service_running(self, name: str) -> bool:
        ...


@runtime_checkable
class VolumeHosts(Protocol):
    """A provisioner with hands on the hosts volumes live on: an in-place restore runs on the volume's own host (the
    snapshot's chunks fetched there, checked, the new bytes verified against the snapshot before the swap, the old
    ones kept beside), and a verification reads the bytes where they are. The worker never writes or reads a host's
    disk. Both return plain records (``restore_volume_in_place``: path, host, previous bytes kept at, bytes, files,
    seconds; ``verify_volume_on_host``: ``[{"name", "ok", "detail"}]``)."""

    def restore_volume_in_place(self, volume_id: str, snapshot_key: str, run_key: str) -> dict: ...
    def verify_volume_on_host(self, volume_id: str, snapshot_key: str) -> list[dict]: ...


@runtime_checkable
class SnapshotStoreAdmin(Protocol):
    """The snapshot store as the platform runs it."""

    def set_snapshot_interval(self, seconds: float) -> list[str]:
        ...

    def snapshot_interval(self) -> float:
        ...

    def create_snapshot_bucket(self) -> list[str]:
        """The primary snapshot bucket recreated with the platform's settings (versioning, replication)."""
        ...


@runtime_checkable
class EnvironmentRestorer(Protocol):
    """A drill environment made whole again after a drill, whatever the drill got to."""

    def restore_environment(self) -> list[str]:
        ...

    def inventory_data_dirs(self) -> set[str]:
        """The data directories of the platform's own clusters (a run's scratch cleanup keeps them)."""
        ...


@runtime_checkable
class PrimaryLossFaults(Protocol):
    """Drill-only: the database primary lost."""

    def kill_primary(self, address: str, lose_disks: bool = True) -> dict:
        ...


@runtime_checkable
class ServiceFaults(Protocol):
    """Drill-only: control-plane services killed at once."""

    def kill_services(self, names: list[str]) -> dict:
        ...


@runtime_checkable
class SnapshotStoreFaults(Protocol):
    """Drill-only: the primary snapshot store (its bucket, or its index) deleted."""

    def delete_snapshot_store(self, scope: str = "bucket") -> dict:
        ...


@runtime_checkable
class FleetHosts(Protocol):
    """Hosts for the data plane in a region (Scenario C's single-region rebuild: a minimal fleet)."""

    def bring_up_fleet(self, region: str, minimum: int) -> dict:
        """At least ``minimum`` host agents (and the region's edge) serving in ``region``; returns ``{"hosts":
        [names], "edge": url or None, "detail": words}``. Idempotent: hosts already serving count."""
        ...


@runtime_checkable
class RegionFaults(Protocol):
    """Drill-only: a whole region lost (every process of its hosts killed), and its hosts back afterwards."""

    def region_down(self, region: str) -> dict:
        ...

    def region_down_since(self, region: str) -> str | None:
        ...

    def region_up(self, region: str) -> dict:
        ...


# What each capability is for, in the words a refusal uses ("... cannot <this>").
PURPOSE: dict[type, str] = {
    DatabaseHosts: "record a recovered primary and build a new standby",
    RestoreHosts: "restore a database onto a host of its own",
    ServiceControl: "start and stop the control plane's services",
    VolumeHosts: "restore and verify a volume in place on its own host",
    SnapshotStoreAdmin: "set the snapshot interval or recreate the snapshot bucket",
    EnvironmentRestorer: "put a drill environment back together after a drill",
    PrimaryLossFaults: "kill the database primary (the primary-loss fault)",
    ServiceFaults: "kill the control plane's services (the outage fault)",
    SnapshotStoreFaults: "delete the snapshot store (the store-loss fault)",
    FleetHosts: "bring up a host fleet in a region",
    RegionFaults: "take a whole region down (the region-outage fault)",
}

CAPABILITIES: tuple[type, ...] = tuple(PURPOSE)


def methods(capability: type) -> list[str]:
    """The methods a capability asks for, in the order it declares them."""
    return [name for name, value in vars(capability).items() if callable(value) and not name.startswith("_")]


def capability_limitation(provisioner: Any, *capabilities: type) -> str | None:
    """Why ``provisioner`` cannot serve as every one of ``capabilities``, in words; ``None`` when it can.

    A missing provisioner (``None``: the environment names ``none``) lacks every capability."""
    lacking = [c for c in capabilities if not isinstance(provisioner, c)]
    if not lacking:
        return None
    if provisioner is None:
        return "the environment names no provisioner, so nothing can " + "; nor ".join(
            f"{PURPOSE.get(c, c.__name__)} (the {c.__name__} capability: {', '.join(methods(c))})" for c in lacking)
    parts = []
    for c in lacking:
        missing = [m for m in methods(c) if not callable(getattr(provisioner, m, None))]
        parts.append(f"cannot {PURPOSE.get(c, c.__name__)}: it lacks {', '.join(missing)} (the {c.__name__} capability)")
    return f"provisioner {type(provisioner).__name__} " + "; and it ".join(parts)
