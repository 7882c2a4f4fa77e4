"""Which environment a run acts on, and whether it is marked for disruptive drills.

Production is, by default, not a drill environment: only an explicit ``drill_environment: true``
(the sandbox writes it) lets a drill inject faults.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Environment:
    name: str = "production"
    drill_environment: bool = False
    backup_bucket: str = ""
    backup_cluster: str = "controlplane"
    heartbeat_log: str | None = None
    sandbox_state: str | None = None
    reports_dir: str = "reports"
    scratch_root: str | None = None
    archive_timeout_seconds: float | None = None
    archive_command: str | None = None  # production's archive_command, given back to a restored copy that becomes primary
    provisioner: str | None = None  # "module:Class" of the platform's Provisioner, or "none"
    probe_log: str | None = None  # the blackbox prober's rounds (data-plane and API availability), JSON lines
    load_log: str | None = None  # the synthetic load's attempted writes and their acknowledgements, JSON lines
    snapshot_bucket: str = ""  # the snapshot store: content-addressed chunks and the index (rehearsal.snapshots)
    snapshot_prefix: str = "volumes"
    snapshot_replica_bucket: str = ""  # its copy in a second region, kept by the platform's replicator
    snapshot_replica_region: str = ""
    snapshot_index_backup_bucket: str = ""  # a backup of the index objects
    drill_targets: dict | None = None  # identity of every target a drill may harm (rehearsal.drills.targets)
    # The platform's regions and their networks (``{"us-east-1": {"networks": ["10.0.0.0/16"]}}``): which region a
    # database host is in, by its address (Scenario C)
    regions: dict | None = None
    customers_log: str | None = None  # customer traffic through DNS and the edges, JSON lines (Scenario C's drill)
    pgbench_log: str | None = None  # pgbench runs through the database's name (A record), JSON lines: drills report
    # when it committed again after the fault, beside the heartbeat (rehearsal.drills.pgbench)
    # The on-call people who may answer an approval (Airflow user ids, passed to HITL ``assigned_users``): anyone
    # else is refused with HTTP 403. None or empty: Airflow's default (any user allowed to edit the DAG's runs).
    approvers: tuple[str, ...] | None = None

    def region_networks(self) -> dict[str, list[str]]:
        return {name: list((spec or {}).get("networks") or []) for name, spec in (self.regions or {}).items()}

    @classmethod
    def from_mapping(cls, data: dict | None) -> Environment:
        data = dict(data or {})
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        drill = known.get("drill_environment", False)
        known["drill_environment"] = drill is True or str(drill).lower() in ("true", "1", "yes")
        approvers = known.get("approvers")
        if isinstance(approvers, str):
            approvers = [a for a in approvers.replace(",", " ").split() if a]
        if approvers is not None:
            known["approvers"] = tuple(str(a) for a in approvers) or None
        return cls(**known)

    def require_drill_environment(self, action: str) -> None:
        from rehearsal.errors import PreconditionFailed

        if not self.drill_environment:
            raise PreconditionFailed(
                f"refusing to {action}: environment {self.name!r} is not marked as a drill environment "
                "(set drill_environment: true in the rehearsal_environment Variable only for drill targets)")

    def heartbeat_path(self) -> Path | None:
        return Path(self.heartbeat_log) if self.heartbeat_log else None
