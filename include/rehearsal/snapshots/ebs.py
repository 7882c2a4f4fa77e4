"""The AWS path for volume snapshots: EBS snapshots and volumes through a boto3 EC2 client passed in.

The Airflow side passes ``EC2Hook(api_type="client_type").conn``; tests pass a moto client. A snapshot not in
state ``completed`` is refused by name before anything is created. What this path proves is the control plane
(snapshot state, the volume's size, tags, zone and state), not the bytes: the local endpoint (moto) holds no
volume content, so every record says ``content_checked: False`` and why; the chunk store path
(``rehearsal.snapshots.restore``) is the one that checks content.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from rehearsal.checks import CheckSet
from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, RestoreError
from rehearsal.snapshots.store import SnapshotInError, SnapshotNotFound, error_code, record_dict

CONTENT_NOT_CHECKED = ("EBS path: only snapshot and volume metadata are checked; the volume's bytes are not read "
                       "(the local AWS endpoint, moto, holds no volume content)")
DEFAULT_TAG_KEY = "rehearsal:volume"


@dataclass(frozen=True)
class EbsSnapshot:
    """An EBS snapshot as describe_snapshots reports it."""

    snapshot_id: str
    volume_id: str | None
    region: str
    state: str
    size_gb: int
    start_time: str | None
    tags: dict[str, str]
    content_checked: bool = False
    content_reason: str = CONTENT_NOT_CHECKED

    def to_dict(self) -> dict:
        return record_dict(self)


@dataclass(frozen=True)
class EbsVolume:
    """A volume created (or described) for a drill."""

    volume_id: str
    snapshot_id: str | None
    region: str
    availability_zone: str
    size_gb: int
    volume_type: str
    state: str
    tags: dict[str, str]
    seconds: float = 0.0
    content_checked: bool = False
    content_reason: str = CONTENT_NOT_CHECKED

    def to_dict(self) -> dict:
        return record_dict(self)


@dataclass(frozen=True)
class EbsSnapshotCopy:
    """A snapshot copied into another region."""

    source_region: str
    source_snapshot_id: str
    region: str
    snapshot_id: str
    state: str
    description: str
    content_checked: bool = False
    content_reason: str = CONTENT_NOT_CHECKED

    def to_dict(self) -> dict:
        return record_dict(self)


@dataclass
class VolumeVerification:
    """Named checks of a restored volume (size, tags, state, availability_zone); content is not among them."""

    volume_id: str
    checks: CheckSet
    content_checked: bool = False
    content_reason: str = CONTENT_NOT_CHECKED

    @property
    def ok(self) -> bool:
        return self.checks.ok

    def raise_if_failed(self) -> None:
        self.checks.raise_if_failed()

    def to_dict(self) -> dict:
        return {"volume_id": self.volume_id, "ok": self.ok, "checks": self.checks.as_dicts(),
                "content_checked": self.content_checked, "content_reason": self.content_reason}


@dataclass
class DrillVolumeCleanup:
    """Volumes deleted by tag, and those left because they are attached."""

    region: str
    tag_key: str
    tag_value: str
    deleted: list[str] = field(default_factory=list)
    skipped_in_use: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return record_dict(self)


def region_of(ec2: Any) -> str:
    return str(ec2.meta.region_name)


def tag_dict(tags: list[dict] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def tag_specification(resource: str, tags: dict[str, str]) -> list[dict]:
    return [{"ResourceType": resource, "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else []


def _snapshot(data: dict, region: str) -> EbsSnapshot:
    start = data.get("StartTime")
    return EbsSnapshot(data["SnapshotId"], data.get("VolumeId"), region, data["State"], int(data.get("VolumeSize", 0)),
                       start.isoformat() if start is not None else None, tag_dict(data.get("Tags")))


def _volume(data: dict, region: str, seconds: float = 0.0) -> EbsVolume:
    return EbsVolume(data["VolumeId"], data.get("SnapshotId") or None, region, data["AvailabilityZone"],
                     int(data["Size"]), data.get("VolumeType", ""), data["State"], tag_dict(data.get("Tags")), seconds)


def describe_snapshot(ec2: Any, snapshot_id: str) -> EbsSnapshot:
    """One snapshot; SnapshotNotFound naming it and the region when EC2 does not know it."""
    from botocore.exceptions import ClientError

    region = region_of(ec2)
    try:
        found = ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    except ClientError as exc:
        if error_code(exc) in ("InvalidSnapshot.NotFound", "InvalidSnapshotID.Malformed"):
            raise SnapshotNotFound(snapshot_id, f"EBS in {region}") from None
        raise
    if not found:
        raise SnapshotNotFound(snapshot_id, f"EBS in {region}")
    return _snapshot(found[0], region)


def require_completed(snapshot: EbsSnapshot) -> EbsSnapshot:
    """Refuse a snapshot not in state completed (error, pending) by name: nothing is created from it."""
    if snapshot.state != "completed":
        raise SnapshotInError(snapshot.snapshot_id, snapshot.volume_id, snapshot.state,
                              f"EBS in {snapshot.region}")
    return snapshot


def find_snapshot(ec2: Any, volume_tag_value: str, tag_key: str = DEFAULT_TAG_KEY) -> EbsSnapshot:
    """The newest completed snapshot (owned by this account) tagged ``tag_key=volume_tag_value``.

    SnapshotNotFound when none is tagged so; SnapshotInError naming the newest when none of them completed.
    """
    region = region_of(ec2)
    found: list[EbsSnapshot] = []
    for page in ec2.get_paginator("describe_snapshots").paginate(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{tag_key}", "Values": [volume_tag_value]}]):
        found.extend(_snapshot(s, region) for s in page["Snapshots"])
    if not found:
        raise SnapshotNotFound(f"tagged {tag_key}={volume_tag_value}", f"EBS in {region}")
    found.sort(key=lambda s: s.start_time or "", reverse=True)
    for snapshot in found:
        if snapshot.state == "completed":
            return snapshot
    return require_completed(found[0])


def create_volume_from_snapshot(ec2: Any, snapshot_id: str, availability_zone: str, tags: dict[str, str],
                                size_gb: int | None = None, volume_type: str = "gp3") -> EbsVolume:
    """A new volume from a completed snapshot, tagged (tag the drill's volumes so cleanup finds them).

    :param size_gb: defaults to the snapshot's size; smaller than the snapshot is refused
    """
    snapshot = require_completed(describe_snapshot(ec2, snapshot_id))
    size = size_gb if size_gb is not None else snapshot.size_gb
    if size < snapshot.size_gb:
        raise PreconditionFailed(f"snapshot {snapshot_id} holds {snapshot.size_gb} GiB: a {size} GiB volume "
                                 "cannot hold it")
    started = time.monotonic()
    data = ec2.create_volume(SnapshotId=snapshot_id, AvailabilityZone=availability_zone, Size=size,
                             VolumeType=volume_type, TagSpecifications=tag_specification("volume", tags))
    data.setdefault("Tags", [{"Key": k, "Value": v} for k, v in tags.items()])
    return _volume(data, region_of(ec2), round(time.monotonic() - started, 3))


def copy_snapshot(ec2_target_region: Any, source_region: str, snapshot_id: str, description: str,
                  tags: dict[str, str] | None = None, ec2_source: Any = None) -> EbsSnapshotCopy:
    """Copy a snapshot from ``source_region`` into the target client's region.

    :param ec2_source: a client in the source region; when given, the source snapshot must be completed first
    """
    if ec2_source is not None:
        require_completed(describe_snapshot(ec2_source, snapshot_id))
    kwargs: dict[str, Any] = {"SourceRegion": source_region, "SourceSnapshotId": snapshot_id,
                              "Description": description}
    if tags:
        kwargs["TagSpecifications"] = tag_specification("snapshot", tags)
    new_id = ec2_target_region.copy_snapshot(**kwargs)["SnapshotId"]
    copied = describe_snapshot(ec2_target_region, new_id)
    return EbsSnapshotCopy(source_region, snapshot_id, region_of(ec2_target_region), new_id, copied.state, description)


def wait_snapshot_completed(ec2: Any, snapshot_id: str, timeout: float, poll: float = 5.0,
                            sleep: Callable[[float], None] = time.sleep) -> EbsSnapshot:
    """Poll until the snapshot is completed; SnapshotInError on error, RecoveryTimedOut naming its last state."""
    deadline = time.monotonic() + timeout
    while True:
        snapshot = describe_snapshot(ec2, snapshot_id)
        if snapshot.state in ("completed", "error"):
            return require_completed(snapshot)
        if time.monotonic() >= deadline:
            raise RecoveryTimedOut(f"snapshot {snapshot_id} in {snapshot.region} still {snapshot.state} after "
                                   f"{timeout:.0f}s")
        sleep(poll)


def describe_volume(ec2: Any, volume_id: str) -> EbsVolume:
    from botocore.exceptions import ClientError

    try:
        found = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    except ClientError as exc:
        if error_code(exc) == "InvalidVolume.NotFound":
            raise RestoreError(f"volume {volume_id} does not exist in {region_of(ec2)}") from None
        raise
    if not found:
        raise RestoreError(f"volume {volume_id} does not exist in {region_of(ec2)}")
    return _volume(found[0], region_of(ec2))


def wait_volume_available(ec2: Any, volume_id: str, timeout: float, poll: float = 2.0,
                          sleep: Callable[[float], None] = time.sleep) -> EbsVolume:
    """Poll describe_volumes until the volume is available; RestoreError on error, RecoveryTimedOut otherwise."""
    started = time.monotonic()
    while True:
        volume = describe_volume(ec2, volume_id)
        if volume.state == "available":
            return replace(volume, seconds=round(time.monotonic() - started, 3))
        if volume.state in ("error", "deleting", "deleted"):
            raise RestoreError(f"volume {volume_id} in {volume.region} went to state {volume.state} "
                               f"(from snapshot {volume.snapshot_id})")
        if time.monotonic() - started >= timeout:
            raise RecoveryTimedOut(f"volume {volume_id} in {volume.region} still {volume.state} after {timeout:.0f}s "
                                   f"(from snapshot {volume.snapshot_id}); it may still become available")
        sleep(poll)


def verify_volume(ec2: Any, volume_id: str, expected_size_gb: int, expected_tags: dict[str, str],
                  expected_az: str) -> VolumeVerification:
    """Named checks: size, tags (each expected tag present with its value), state (available), availability_zone."""
    volume = describe_volume(ec2, volume_id)
    checks = CheckSet(f"volume {volume_id} in {volume.region}")
    checks.add("size", volume.size_gb == expected_size_gb, f"{volume.size_gb} GiB, expected {expected_size_gb} GiB")
    wrong = {k: volume.tags.get(k) for k, v in expected_tags.items() if volume.tags.get(k) != v}
    checks.add("tags", not wrong, "every expected tag present" if not wrong else
               "; ".join(f"{k}={wrong[k]!r}, expected {expected_tags[k]!r}" for k in wrong))
    checks.add("state", volume.state == "available", f"state {volume.state}, expected available")
    checks.add("availability_zone", volume.availability_zone == expected_az,
               f"{volume.availability_zone}, expected {expected_az}")
    return VolumeVerification(volume_id, checks)


def delete_drill_volumes(ec2: Any, tag_key: str, tag_value: str) -> DrillVolumeCleanup:
    """Delete every volume tagged ``tag_key=tag_value`` that is not attached; attached ones are named, kept."""
    if not tag_key or not tag_value:
        raise PreconditionFailed("delete_drill_volumes needs a tag key and value: refusing to match every volume")
    record = DrillVolumeCleanup(region_of(ec2), tag_key, tag_value)
    volumes = []
    for page in ec2.get_paginator("describe_volumes").paginate(
            Filters=[{"Name": f"tag:{tag_key}", "Values": [tag_value]}]):
        volumes.extend(page["Volumes"])
    for volume in volumes:
        if volume["State"] == "in-use" or volume.get("Attachments"):
            record.skipped_in_use.append(volume["VolumeId"])
            continue
        ec2.delete_volume(VolumeId=volume["VolumeId"])
        record.deleted.append(volume["VolumeId"])
    return record
