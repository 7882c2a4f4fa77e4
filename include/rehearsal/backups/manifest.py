"""Our backup manifest: what was uploaded (objects, sizes, sha256) and what it holds."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

from rehearsal.errors import ManifestError

FORMAT = "rehearsal-backup-manifest/1"
KINDS = ("base_backup", "logical_dump")


@dataclass(frozen=True)
class BackupObject:
    name: str
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BackupManifest:
    backup_id: str
    kind: str
    cluster: str
    start_time: datetime
    stop_time: datetime
    server_version: str
    server_major: int
    schema_version: str
    objects: list[BackupObject]
    start_lsn: str | None = None
    stop_lsn: str | None = None
    timeline: int | None = None
    wal_segment_size: int | None = None
    row_counts: dict[str, int] = field(default_factory=dict)

    def object(self, name: str) -> BackupObject:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise ManifestError(f"backup {self.backup_id}: manifest lists no object named {name!r}")

    def to_json(self) -> str:
        data = asdict(self)
        data["format"] = FORMAT
        data["start_time"] = self.start_time.isoformat()
        data["stop_time"] = self.stop_time.isoformat()
        return json.dumps(data, indent=2, sort_keys=True)


def parse_manifest(text: str | bytes, where: str) -> BackupManifest:
    """Parse and validate a manifest; the error names the backup (``where``) and the field."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: manifest is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ManifestError(f"{where}: not a {FORMAT} manifest")
    try:
        kind = data["kind"]
        if kind not in KINDS:
            raise ManifestError(f"{where}: unknown backup kind {kind!r}")
        objects = [BackupObject(name=o["name"], key=o["key"], size=int(o["size"]), sha256=o["sha256"])
                   for o in data["objects"]]
        if not objects:
            raise ManifestError(f"{where}: manifest lists no objects")
        for obj in objects:
            if obj.size < 0 or len(obj.sha256) != 64:
                raise ManifestError(f"{where}: object {obj.name} has invalid size or sha256")
        manifest = BackupManifest(
            backup_id=data["backup_id"], kind=kind, cluster=data["cluster"],
            start_time=datetime.fromisoformat(data["start_time"]),
            stop_time=datetime.fromisoformat(data["stop_time"]),
            server_version=data["server_version"], server_major=int(data["server_major"]),
            schema_version=data["schema_version"], objects=objects,
            start_lsn=data.get("start_lsn"), stop_lsn=data.get("stop_lsn"), timeline=data.get("timeline"),
            wal_segment_size=data.get("wal_segment_size"), row_counts=dict(data.get("row_counts") or {}),
        )
    except KeyError as exc:
        raise ManifestError(f"{where}: manifest lacks field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{where}: manifest has a malformed field: {exc}") from None
    if manifest.start_time.tzinfo is None:
        raise ManifestError(f"{where}: start_time must carry a timezone")
    if kind == "base_backup" and not (manifest.start_lsn and manifest.timeline and manifest.wal_segment_size):
        raise ManifestError(f"{where}: base backup manifest needs start_lsn, timeline and wal_segment_size")
    return manifest
