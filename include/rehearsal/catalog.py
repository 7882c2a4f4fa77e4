"""The targets catalog: the plan's RTO/RPO table as a typed, validated config file."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import yaml

from rehearsal.errors import CatalogError

DEFAULT_CATALOG = Path(__file__).resolve().parents[2] / "config" / "targets.yaml"
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
BACKUP_KINDS = ("wal_archive", "base_backup", "logical_dump")
# Not a backup: the data plane's availability, the app runtime's RPO-0 promise (every endpoint keeps serving),
# watched from the blackbox prober's rounds.
# Volume snapshots: every volume's newest restorable snapshot, the replica's lag, the index backup's age.
SNAPSHOT_KINDS = ("volume_snapshots", "snapshot_replica", "snapshot_index_backup")
# The edge configuration's export (rehearsal.edge_config): the newest export that verifies, by its time.
EDGE_KINDS = ("edge_config_export",)
# States, not ages (rehearsal.secrets): every KMS key Enabled in every region; the canary decrypting in every region.
# Checked as they are at each run, they take no max_age (theirs is 0).
STATE_KINDS = ("kms_key_state", "secrets_canary")
ASSET_KINDS = (*BACKUP_KINDS, "data_plane_probe", *SNAPSHOT_KINDS, *EDGE_KINDS, *STATE_KINDS)


def parse_duration(value: object, where: str) -> timedelta:
    """Parse "15m"-style durations; negative, unitless or fractional values are refused."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise CatalogError(f"{where}: duration must be like '15m', got {value!r}")
    if isinstance(value, int):
        raise CatalogError(f"{where}: duration {value!r} has no unit (use s, m, h or d)")
    match = _DURATION.match(value)
    if not match:
        if value.strip().startswith("-"):
            raise CatalogError(f"{where}: negative duration {value!r}")
        raise CatalogError(f"{where}: cannot parse duration {value!r} (use e.g. '15m', '2h')")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


@dataclass(frozen=True)
class Target:
    component: str
    title: str
    rto: timedelta
    rpo: timedelta


@dataclass(frozen=True)
class Asset:
    name: str
    component: str
    kind: str
    max_age: timedelta


@dataclass(frozen=True)
class Catalog:
    version: int
    targets: dict[str, Target]
    assets: dict[str, Asset]
    source: str

    def target(self, component: str) -> Target:
        try:
            return self.targets[component]
        except KeyError:
            known = ", ".join(sorted(self.targets))
            raise CatalogError(f"unknown component {component!r} (catalog has: {known})") from None

    def asset(self, name: str) -> Asset:
        try:
            return self.assets[name]
        except KeyError:
            raise CatalogError(f"unknown asset {name!r} in {self.source}") from None


def catalog_path() -> Path:
    return Path(os.environ.get("REHEARSAL_TARGETS_FILE", DEFAULT_CATALOG))


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate the catalog; every problem is raised with the entry it concerns."""
    path = Path(path) if path else catalog_path()
    try:
        # libyaml's loader when the wheel has it: the catalog is read at every DAG parse.
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise CatalogError(f"targets catalog not found: {path}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"targets catalog {path} is not valid YAML: {exc}") from None
    return parse_catalog(raw, source=str(path))


def parse_catalog(raw: object, source: str = "<memory>") -> Catalog:
    if not isinstance(raw, dict):
        raise CatalogError(f"{source}: top level must be a mapping")
    version = raw.get("version")
    if version != 1:
        raise CatalogError(f"{source}: unsupported catalog version {version!r} (expected 1)")
    components = raw.get("components")
    if not isinstance(components, dict) or not components:
        raise CatalogError(f"{source}: 'components' must be a non-empty mapping")
    targets: dict[str, Target] = {}
    for name, entry in components.items():
        where = f"{source}: components.{name}"
        if not isinstance(entry, dict):
            raise CatalogError(f"{where}: must be a mapping")
        unknown = set(entry) - {"title", "rto", "rpo", "notes"}
        if unknown:
            raise CatalogError(f"{where}: unknown keys {sorted(unknown)}")
        for key in ("rto", "rpo"):
            if key not in entry:
                raise CatalogError(f"{where}: missing {key}")
        targets[name] = Target(
            component=name,
            title=str(entry.get("title", name)),
            rto=parse_duration(entry["rto"], f"{where}.rto"),
            rpo=parse_duration(entry["rpo"], f"{where}.rpo"),
        )
        if targets[name].rto <= timedelta(0):
            raise CatalogError(f"{where}.rto: must be positive")
    assets = {name: _parse_asset(name, entry, targets, source) for name, entry in (raw.get("assets") or {}).items()}
    return Catalog(version=1, targets=targets, assets=assets, source=source)


def _parse_asset(name: str, entry: object, targets: dict[str, Target], source: str) -> Asset:
    where = f"{source}: assets.{name}"
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: must be a mapping")
    component = entry.get("component")
    if component not in targets:
        raise CatalogError(f"{where}: unknown component {component!r}")
    kind = entry.get("kind")
    if kind not in ASSET_KINDS:
        raise CatalogError(f"{where}: unknown kind {kind!r} (one of {', '.join(ASSET_KINDS)})")
    max_age_raw = entry.get("max_age")
    if kind in STATE_KINDS:
        if max_age_raw is not None:
            raise CatalogError(f"{where}.max_age: a {kind} asset is checked as it is at each run; it takes no max_age")
        return Asset(name=name, component=component, kind=kind, max_age=timedelta(0))
    if isinstance(max_age_raw, str) and max_age_raw.startswith("rpo:"):
        ref = max_age_raw[4:]
        if ref not in targets:
            raise CatalogError(f"{where}.max_age: unknown component {ref!r}")
        max_age = targets[ref].rpo
    else:
        max_age = parse_duration(max_age_raw, f"{where}.max_age")
    if max_age <= timedelta(0):
        raise CatalogError(f"{where}.max_age: must be positive")
    return Asset(name=name, component=component, kind=kind, max_age=max_age)
