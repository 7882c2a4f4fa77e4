"""Drill targets bound to their identity: a fault may only ever hit a target the drill environment recorded.

A connection can point anywhere: a staging Airflow holding copied production connections and ``drill_environment:
true`` must not kill, corrupt or delete production. So the drill environment records, once, the identity of each
target a drill may harm (``drill_targets`` in the ``rehearsal_environment`` Variable), and before any fault the drill
reads the identity of what it is about to harm and refuses on a mismatch, naming both:

- ``controlplane_db``: the PostgreSQL system identifier (shared by its standbys and point-in-time copies) and a marker
  row the drill environment wrote in ``rehearsal_drill_target`` (a database of another platform holds neither);
- ``control_plane_api``: the identity the API serves at ``GET /v1/identity`` (``docs/control-plane-services.md``);
- ``snapshot_store``: the tag ``rehearsal:drill-target`` on the primary snapshot bucket.

Readers take clients and endpoints from the caller; nothing here imports Airflow.
"""
from __future__ import annotations

from rehearsal.errors import PreconditionFailed

DATABASE, API, SNAPSHOT_STORE = "controlplane_db", "control_plane_api", "snapshot_store"
MARKER_TABLE = "rehearsal_drill_target"
BUCKET_TAG = "rehearsal:drill-target"
WHAT = {DATABASE: "the control-plane database", API: "the control-plane API", SNAPSHOT_STORE: "the snapshot store"}


class TargetMismatch(PreconditionFailed):
    """What a fault was about to harm is not the target the drill environment recorded."""


def database_identity(conn) -> dict:
    """``{"system_identifier", "marker"}`` of the database ``conn`` is connected to (the marker None when it has none)."""
    system_identifier = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{MARKER_TABLE}",)).fetchone()[0]
    marker = conn.execute(f"SELECT marker FROM {MARKER_TABLE} ORDER BY created_at DESC LIMIT 1").fetchone() if exists else None
    return {"system_identifier": system_identifier, "marker": marker[0] if marker else None}


def bucket_identity(s3, bucket: str) -> dict:
    """``{"bucket", "marker"}``: the bucket's ``rehearsal:drill-target`` tag (None when it has no such tag)."""
    from botocore.exceptions import ClientError

    try:
        tags = s3.get_bucket_tagging(Bucket=bucket).get("TagSet", [])
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchTagSet", "NoSuchTagSetError"):
            tags = []
        else:
            raise
    marker = next((t["Value"] for t in tags if t["Key"] == BUCKET_TAG), None)
    return {"bucket": bucket, "marker": marker}


def describe(identity: dict | None) -> str:
    if not identity:
        return "nothing"
    return ", ".join(f"{k.replace('_', ' ')} {v if v is not None else 'none'}" for k, v in sorted(identity.items()))


def target_limitation(kind: str, where: str, recorded: dict | None, found: dict | None, environment: str) -> str | None:
    """Why a fault must not hit ``kind`` at ``where``, or None: the environment recorded no identity for it, or what
    answers there is not what it recorded (every recorded field must match; a marker must be present)."""
    what = WHAT.get(kind, kind)
    if not recorded:
        return (f"refusing to harm {what} at {where}: drill environment {environment!r} records no identity for it "
                f"(drill_targets.{kind} in the rehearsal_environment Variable); a fault may only hit a target whose "
                "identity the drill environment recorded")
    found = found or {}
    differs = [k for k, v in recorded.items() if v is None or str(found.get(k)) != str(v)]
    if differs:
        return (f"refusing to harm {what} at {where}: it is not the drill environment's recorded target "
                f"({describe(found)} found; {describe(recorded)} recorded by {environment!r})")
    return None


def require_target(kind: str, where: str, recorded: dict | None, found: dict | None, environment: str) -> None:
    """:raises TargetMismatch: naming both identities (see ``target_limitation``)"""
    why = target_limitation(kind, where, recorded, found, environment)
    if why:
        raise TargetMismatch(why)
