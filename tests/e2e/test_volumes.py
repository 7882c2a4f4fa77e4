"""Volumes, whole DAG runs against the sandbox's volumes and snapshot store: restores proven byte for byte, the
EBS path through the local EC2 endpoint, and Scenario D after the primary store is really deleted."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import boto3
import pytest

from rehearsal.environment import Environment
from rehearsal.snapshots import SnapshotStore, tree_digest
from rehearsal_sandbox.platform import Sandbox
from rehearsal_sandbox.provisioner import SandboxProvisioner
from tests.e2e.test_drill_primary_loss import report_of, run_dag

pytestmark = [pytest.mark.sandbox, pytest.mark.e2e]


def environment() -> Environment:
    return Environment.from_mapping(json.loads(os.environ["AIRFLOW_VAR_REHEARSAL_ENVIRONMENT"]))


def store_fingerprint(store: SnapshotStore) -> dict[str, str]:
    """Every object of the store, by key, with its content's sha256: a source snapshot must never change."""
    out = {}
    for obj in store.iter_objects(store.prefix):
        body = store.s3.get_object(Bucket=store.bucket, Key=obj["Key"])["Body"].read()
        out[obj["Key"]] = hashlib.sha256(body).hexdigest()
    return out


def steps_of(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["steps"]}


def test_the_volume_drill_restores_the_sample_largest_and_critical_volumes_byte_for_byte(platform):
    sb = Sandbox(platform.dir)
    store = sb.snapshot_store.primary_store()
    before = store_fingerprint(store)
    dag_run = run_dag("dr_drill_volume_restore", {"mode": "non_disruptive"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    assert report["status"] == "passed" and report["rto_met"] and report["rpo_met"]
    assert (report["target_rto_seconds"], report["target_rpo_seconds"]) == (4 * 3600, 24 * 3600)
    steps = steps_of(report)
    guard = steps["guard_drill_environment"]["detail"]
    assert "the largest" in guard and "marked critical" in guard and "random sample" in guard
    for critical in sb.volumes.critical():
        assert critical in guard
    verified = steps["volume_restore.verify_restored_volumes"]["detail"]
    assert "byte for byte" in verified and "content not checked" not in verified
    volumes = report["evidence"]["volumes"]
    assert volumes and all(v["content_checked"] and v["rto_met"] and v["rpo_met"] for v in volumes)
    cleaned = steps["clean_up_restored_volumes"]["detail"]
    assert cleaned.startswith("cleaned 1 resource(s): dir:")
    assert not os.path.exists(cleaned.split("dir:", 1)[1])
    assert store_fingerprint(store) == before  # the source snapshots are unchanged


def test_an_ebs_restore_yields_an_available_tagged_volume_of_the_right_size_in_the_right_region(platform):
    sb = Sandbox(platform.dir)
    dag_run = run_dag("dr_runbook_volume_restore", {"mode": "drill", "volume_id": "vol-1", "backend": "ebs",
                                                    "region": "us-west-2", "approve": "auto"})
    report = report_of(dag_run)
    # The volume is there, but its bytes were never read: unverified, so the run is degraded, never passed.
    assert str(dag_run.state) == "failed" and report["status"] == "degraded", report.get("failure")
    assert [d["item"] for d in report["degraded"]] == ["content of vol-1 unverified"]
    restored = steps_of(report)["volume_restore.restore_volumes"]["detail"]
    assert restored.startswith("vol-1: EBS volume vol-") and " in us-west-2 from snap-" in restored
    assert "content NOT checked on this backend" in restored
    west = boto3.client("ec2", region_name="us-west-2", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    found = west.describe_volumes(Filters=[{"Name": "tag:rehearsal:volume", "Values": ["vol-1"]},
                                           {"Name": "tag:rehearsal:mode", "Values": ["drill"]}])["Volumes"]
    assert len(found) == 1
    volume = found[0]
    assert volume["State"] == "available" and volume["AvailabilityZone"] == "us-west-2a"
    source = sb.aws("ec2").describe_volumes(Filters=[{"Name": "tag:rehearsal:volume", "Values": ["vol-1"]}])["Volumes"]
    assert volume["Size"] == source[0]["Size"]
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["size:vol-1"]["ok"] and checks["tags:vol-1"]["ok"] and checks["state:vol-1"]["ok"]
    assert checks["content:vol-1"]["ok"] is False and checks["content:vol-1"]["verdict"] == "unverified"
    assert checks["content:vol-1"]["detail"].startswith("UNVERIFIED, not read:")
    from rehearsal.snapshots.ebs import delete_drill_volumes

    run_tag = {t["Key"]: t["Value"] for t in volume["Tags"]}["rehearsal:run"]
    assert delete_drill_volumes(west, "rehearsal:run", run_tag).deleted == [volume["VolumeId"]]


def test_the_volume_drill_on_ebs_cleans_up_what_it_created(platform):
    dag_run = run_dag("dr_drill_volume_restore", {"mode": "non_disruptive", "backend": "ebs", "volume_id": "vol-2"})
    report = report_of(dag_run)
    assert report["status"] == "degraded" and [d["item"] for d in report["degraded"]] == ["content of vol-2 unverified"]
    steps = steps_of(report)
    created = [r for r in report["resources_created"] if r.startswith("ebs:us-east-1/vol-")]
    assert len(created) == 1
    assert f"ebs:us-east-1/{created[0].split('/')[-1]}" in steps["clean_up_restored_volumes"]["detail"]
    left = Sandbox(platform.dir).aws("ec2").describe_volumes(
        Filters=[{"Name": "tag:rehearsal:mode", "Values": ["drill"]}])["Volumes"]
    assert left == []
    assert report["evidence"]["volumes"][0]["content_checked"] is False


def test_scenario_d_recovers_a_deleted_primary_store_from_its_replica_and_proves_a_restore(platform):
    sb = Sandbox(platform.dir)
    volume = sb.volumes.critical()[0]
    digest = tree_digest(sb.volumes.path(volume))
    replica = sb.snapshot_store.replica_store()
    replica_before = store_fingerprint(replica)
    provisioner = SandboxProvisioner(environment())
    lost = provisioner.delete_snapshot_store("bucket")
    assert lost["objects_deleted"] > 0
    dag_run = run_dag("dr_scenario_d_snapshot_store_loss", {"mode": "incident", "approve": "auto", "volume_id": volume})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success", report.get("failure")
    steps = steps_of(report)
    assert "UNHEALTHY: bucket rehearsal-snapshots does not exist" in steps["scenario_d.confirm_blast_radius"]["detail"]
    assert steps["scenario_d.raise_snapshot_frequency_if_healthy"]["status"] == "skipped"
    assert report["evidence"]["drills_switched_off"].startswith(  # its first step declared the incident
        "drills switched off for environment 'sandbox': incident declared by dr_scenario_d_snapshot_store_loss run ")
    assert "never written into a failing store" in steps["scenario_d.raise_snapshot_frequency_if_healthy"]["detail"]
    rebuilt = steps["scenario_d.restore_snapshot_store"]["detail"]
    assert "rebuilt" in rebuilt and "every checksum verified" in rebuilt and "healthy again" in rebuilt
    assert "byte for byte" in steps["scenario_d.volume_restore.verify_restored_volumes"]["detail"]
    points = steps["scenario_d.report_restore_points"]["detail"]
    for v in sb.volumes.volume_ids():
        assert f"volume {v}: newest completed snapshot" in points
    # The volume restored from the rebuilt store is the volume's bytes.
    restored = [r for r in report["checks"] if r["name"] == f"content:{volume}"]
    assert restored and restored[0]["ok"]
    store = sb.snapshot_store.primary_store()
    from rehearsal.snapshots import restore_snapshot

    scratch = sb.runtime / "scratch" / "test-scenario-d"
    try:
        restore_snapshot(store, store.newest_restorable(volume), scratch)
        assert tree_digest(scratch) == digest
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    assert {k: v for k, v in store_fingerprint(replica).items() if k in replica_before} == replica_before


def test_scenario_d_on_a_healthy_store_is_not_applicable_and_changes_nothing(platform):
    sb = Sandbox(platform.dir)
    interval = sb.snapshot_store.interval()
    dag_run = run_dag("dr_scenario_d_snapshot_store_loss", {"mode": "incident", "approve": "auto", "volume_id": "vol-1"})
    report = report_of(dag_run)
    assert str(dag_run.state) == "success" and report["status"] == "not_applicable"
    assert report["failure"].startswith("Scenario D is not happening: the snapshot store s3://rehearsal-snapshots/volumes/ "
                                        "is healthy")
    steps = steps_of(report)
    assert {steps[s]["status"] for s in ("scenario_d.raise_snapshot_frequency_if_healthy",
                                         "scenario_d.restore_snapshot_store")} == {"skipped"}
    assert Sandbox(platform.dir).snapshot_store.interval() == interval  # frequency not raised
