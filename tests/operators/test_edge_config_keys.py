"""Edge configuration and key/secret operators against the session sandbox (its control-plane database, its moto
endpoint's Route 53, S3 and KMS), each bad input failing for its named reason.

The round trip uses the sandbox's own fleet. Cases the live platform would repair by itself within a second (the
scheduler moves placements off a dead host) run against a control-plane database of their own on the sandbox's
results cluster, with the same tables: a dead host there stays dead.
"""
from __future__ import annotations

import json
import os
import re
import secrets

import pytest

from rehearsal.errors import RehearsalError
from rehearsal.postgres.connection import connect
from tests.operators.test_postgres_restore_rds import RecordingTaskInstance

pytestmark = pytest.mark.sandbox

ZONE = "rehearsal.internal."
RECORD, FAILOVER = "apps.rehearsal.internal.", "apps-failover.rehearsal.internal."


def run(operator) -> tuple[object, dict]:
    ti = RecordingTaskInstance()
    try:
        result = operator.execute({"ti": ti, "run_id": "manual__test", "dag": None, "params": {}})
    except RehearsalError as exc:
        result = exc
    return result, ti.xcom["step"]


@pytest.fixture
def edge(sandbox, monkeypatch):
    """The edge connection and its routing records: the sandbox's own when it has them, else made for the test (and
    removed after it); the records are given back as they were either way."""
    if "AIRFLOW_CONN_EDGE" not in os.environ:
        monkeypatch.setenv("AIRFLOW_CONN_EDGE", json.dumps({"conn_type": "http", "extra": {
            "zone": ZONE, "record": RECORD, "failover_record": FAILOVER}}))
    route53, zone_id = sandbox.aws("route53"), sandbox.service_discovery.zone_id
    from rehearsal.edge_config import read_record_sets

    before, _ = read_record_sets(route53, zone_id, [RECORD, FAILOVER])
    made = []
    if not before:
        block = sandbox.hosts.block
        made = [{"Name": RECORD, "Type": "A", "SetIdentifier": "us-east-1", "Weight": 100, "TTL": 5,
                 "ResourceRecords": [{"Value": f"{block}.1.249"}]},
                {"Name": RECORD, "Type": "A", "SetIdentifier": "us-west-2", "Weight": 0, "TTL": 5,
                 "ResourceRecords": [{"Value": f"{block}.2.249"}]},
                {"Name": FAILOVER, "Type": "A", "SetIdentifier": "us-east-1", "Failover": "PRIMARY", "TTL": 5,
                 "ResourceRecords": [{"Value": f"{block}.1.249"}]},
                {"Name": FAILOVER, "Type": "A", "SetIdentifier": "us-west-2", "Failover": "SECONDARY", "TTL": 5,
                 "ResourceRecords": [{"Value": f"{block}.2.249"}]}]
        route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={
            "Changes": [{"Action": "UPSERT", "ResourceRecordSet": r} for r in made]})
    yield route53, zone_id, made or before
    now, _ = read_record_sets(route53, zone_id, [RECORD, FAILOVER])
    changes = ([{"Action": "DELETE", "ResourceRecordSet": r} for r in now] if made else
               [{"Action": "UPSERT", "ResourceRecordSet": r} for r in before])
    if changes:
        route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes})


@pytest.fixture
def edge_prefix(sandbox, monkeypatch):
    """A backup bucket of the test's own (the exports of one test are not another's newest)."""
    bucket = f"edge-test-{secrets.token_hex(4)}"
    sandbox.aws("s3").create_bucket(Bucket=bucket)
    return bucket


def test_export_then_restore_gives_back_dns_routing_and_ipv4_allocations(sandbox, edge, edge_prefix):
    from rehearsal_airflow.operators.edge_config import (
        ExportEdgeConfigurationOperator,
        RestoreEdgeConfigurationOperator,
        VerifyEdgeConfigurationOperator,
    )

    route53, zone_id, records = edge
    exported, step = run(ExportEdgeConfigurationOperator(task_id="export", bucket=edge_prefix))
    assert step["status"] == "success", step["detail"]
    assert exported["summary"]["allocations"] == sandbox.controlplane_db.fleet()["apps"]
    assert exported["summary"]["record_sets"] == len(records)
    assert all(c["ok"] for c in exported["checks"]), exported["checks"]

    # The configuration is lost: the us-west-2 weight turned up, an allocation changed, another deleted.
    west = next(r for r in records if r["Name"] == RECORD and r["SetIdentifier"] == "us-west-2")
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {**west, "Weight": 77}}]})
    with connect(sandbox.endpoint(sandbox.primary)) as conn:
        first, second = conn.execute("SELECT app_id, host(address) FROM ipv4_allocations ORDER BY app_id LIMIT 2").fetchall()
        conn.execute("UPDATE ipv4_allocations SET address = '203.0.113.254' WHERE app_id = %s", (first[0],))
        conn.execute("DELETE FROM ipv4_allocations WHERE app_id = %s", (second[0],))

    restored, step = run(RestoreEdgeConfigurationOperator(task_id="restore", bucket=edge_prefix))
    assert step["status"] == "success", step["detail"]
    assert restored["export_id"] == exported["export_id"] and restored["skipped"] == []
    assert restored["dns_upserted"] == [f"{RECORD} A (us-west-2)"]
    assert restored["allocations_applied"] == 2
    assert all(c["ok"] for c in restored["checks"])
    with connect(sandbox.endpoint(sandbox.primary)) as conn:
        assert conn.execute("SELECT app_id, host(address) FROM ipv4_allocations WHERE app_id IN (%s, %s) ORDER BY app_id",
                            (first[0], second[0])).fetchall() == [first, second]
    weights = {r["SetIdentifier"]: r["Weight"] for r in route53.list_resource_record_sets(HostedZoneId=zone_id)[
        "ResourceRecordSets"] if r["Name"] == RECORD}
    assert weights["us-west-2"] == west["Weight"]

    again, step = run(RestoreEdgeConfigurationOperator(task_id="restore", bucket=edge_prefix))
    assert (again["dns_upserted"], again["allocations_applied"]) == ([], 0)  # idempotent
    verified, step = run(VerifyEdgeConfigurationOperator(task_id="verify"))
    assert step["status"] == "success", step["detail"]


def test_a_corrupt_newest_export_is_skipped_by_name(sandbox, edge, edge_prefix):
    from rehearsal.edge_config import export_key
    from rehearsal_airflow.operators.edge_config import ExportEdgeConfigurationOperator, RestoreEdgeConfigurationOperator

    older, _ = run(ExportEdgeConfigurationOperator(task_id="export", bucket=edge_prefix))
    newer, _ = run(ExportEdgeConfigurationOperator(task_id="export", bucket=edge_prefix))
    key = export_key(newer["export_id"], "dns_routing.json")
    sandbox.aws("s3").put_object(Bucket=edge_prefix, Key=key, Body=b'{"format": "rehearsal-edge-config/1"}')
    restored, step = run(RestoreEdgeConfigurationOperator(task_id="restore", bucket=edge_prefix))
    assert step["status"] == "success", step["detail"]
    assert restored["export_id"] == older["export_id"]
    assert restored["skipped"][0].startswith(f"edge-config export {newer['export_id']}: s3://{edge_prefix}/{key} does "
                                             "not match its manifest")
    assert f"skipping 1 newer: edge-config export {newer['export_id']}" in step["detail"]


def test_no_export_at_all_is_an_error_naming_the_prefix(sandbox, edge, edge_prefix):
    from rehearsal.edge_config import EdgeExportMissing
    from rehearsal_airflow.operators.edge_config import RestoreEdgeConfigurationOperator

    error, step = run(RestoreEdgeConfigurationOperator(task_id="restore", bucket=edge_prefix))
    assert isinstance(error, EdgeExportMissing)
    assert (step["status"], step["kind"]) == ("failed", "refused")
    assert step["detail"] == f"EdgeExportMissing: no edge-configuration export under s3://{edge_prefix}/edge-config/"


# ------------------------------------------------------------------------------------ a control-plane database of its own
@pytest.fixture(scope="module")
def fleet_database(sandbox_session):
    """A small control-plane database (hosts, apps, placements, host reports, IPv4 allocations) on the results
    cluster, made once for the module."""
    name = f"edge_{secrets.token_hex(4)}"
    admin = sandbox_session.results_endpoint()
    with connect(admin.with_(dbname="postgres")) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    endpoint = admin.with_(dbname=name)
    with connect(endpoint) as conn:
        for sql in ("CREATE TABLE hosts (id bigint PRIMARY KEY, hostname text, region text)",
                    "CREATE TABLE apps (id bigint PRIMARY KEY)",
                    "CREATE TABLE placements (app_id bigint, slot int, host_id bigint)",
                    "CREATE TABLE host_reports (host_id bigint PRIMARY KEY, reported_at timestamptz)",
                    "CREATE TABLE ipv4_allocations (app_id bigint PRIMARY KEY, address inet, allocated_at timestamptz)"):
            conn.execute(sql)
    yield endpoint
    with connect(admin.with_(dbname="postgres")) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def fleet_db(fleet_database, monkeypatch):
    """That database, filled anew and behind the ``controlplane_db`` connection for the test: apps 1-3 on agent-01,
    which reports; agent-02 stopped reporting 5 minutes ago."""
    with connect(fleet_database) as conn:
        for sql in ("TRUNCATE hosts, apps, placements, host_reports, ipv4_allocations",
                    "INSERT INTO hosts VALUES (1, 'agent-01', 'us-east-1'), (2, 'agent-02', 'us-west-2')",
                    "INSERT INTO apps VALUES (1), (2), (3)",
                    "INSERT INTO placements VALUES (1, 0, 1), (2, 0, 1), (3, 0, 1)",
                    "INSERT INTO host_reports VALUES (1, now()), (2, now() - interval '5 minutes')",
                    "INSERT INTO ipv4_allocations VALUES (1, '192.0.2.1', now()), (2, '192.0.2.2', now()), "
                    "(3, '192.0.2.3', now())"):
            conn.execute(sql)
    endpoint = fleet_database
    monkeypatch.setenv("AIRFLOW_CONN_CONTROLPLANE_DB", json.dumps({
        "conn_type": "postgres", "host": endpoint.host, "port": endpoint.port, "login": endpoint.user,
        "password": endpoint.password, "schema": endpoint.dbname}))
    return endpoint


def test_an_ipv4_address_allocated_twice_fails_verification_naming_it(fleet_db, edge):
    from rehearsal.errors import VerificationFailed
    from rehearsal_airflow.operators.edge_config import VerifyEdgeConfigurationOperator

    with connect(fleet_db) as conn:
        conn.execute("UPDATE ipv4_allocations SET address = '192.0.2.1' WHERE app_id = 3")
    error, step = run(VerifyEdgeConfigurationOperator(task_id="verify"))
    assert isinstance(error, VerificationFailed) and step["kind"] == "verification_failed"
    assert step["detail"] == ("VerificationFailed: live edge configuration: failed checks: ipv4_unique: 192.0.2.1 "
                              "allocated 2 times (apps 1, 3)")


def test_an_endpoint_on_a_dead_host_fails_verification_naming_host_and_endpoint(fleet_db, edge):
    from rehearsal_airflow.operators.edge_config import VerifyEdgeConfigurationOperator

    with connect(fleet_db) as conn:
        conn.execute("UPDATE placements SET host_id = 2 WHERE app_id = 2")
    _, step = run(VerifyEdgeConfigurationOperator(task_id="verify"))
    assert step["status"] == "failed"
    assert re.fullmatch(r"VerificationFailed: live edge configuration: failed checks: endpoints_on_live_hosts: "
                        r"agent-02 last reported 30\ds ago: 1 endpoint\(s\) on it \(app 2 slot 0\)", step["detail"])


def test_a_restore_that_leaves_an_address_held_twice_fails_naming_it(fleet_db, edge, edge_prefix):
    """App 1's allocation was lost and app 4, created after the export, was given its address: the restore gives app 1
    its address back (app 4 is not in the export and keeps its own), and the verification after it names the address
    now held twice."""
    from rehearsal_airflow.operators.edge_config import ExportEdgeConfigurationOperator, RestoreEdgeConfigurationOperator

    run(ExportEdgeConfigurationOperator(task_id="export", bucket=edge_prefix))
    with connect(fleet_db) as conn:
        conn.execute("DELETE FROM ipv4_allocations WHERE app_id = 1")
        conn.execute("INSERT INTO apps VALUES (4)")
        conn.execute("INSERT INTO ipv4_allocations VALUES (4, '192.0.2.1', now())")
    _, step = run(RestoreEdgeConfigurationOperator(task_id="restore", bucket=edge_prefix))
    assert step["status"] == "failed"
    assert step["detail"].endswith("failed checks: ipv4_unique: 192.0.2.1 allocated 2 times (apps 1, 4)")


# ------------------------------------------------------------------------------------ keys and secrets
@pytest.fixture
def key_in(sandbox):
    """``key_in(region)``: the secrets' KMS key of that region, its state given back after the test."""
    component = sandbox.component("secrets")
    touched = []

    def key(region: str) -> tuple[object, str]:
        kms = component.kms(region)
        key_id = component.keys[region].rsplit("/", 1)[-1]
        touched.append((kms, key_id))
        return kms, key_id

    yield key
    for kms, key_id in touched:
        state = kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"]
        if state == "PendingDeletion":
            kms.cancel_key_deletion(KeyId=key_id)
        kms.enable_key(KeyId=key_id)


def test_keys_and_secrets_recoverable_in_the_sandbox(sandbox):
    from rehearsal_airflow.operators.keys import VerifyKeysAndSecretsOperator

    result, step = run(VerifyKeysAndSecretsOperator(task_id="keys", region="us-east-1"))
    assert step["status"] == "success", step["detail"]
    assert {k["region"] for k in result["keys"]} == {"us-east-1", "us-west-2"}
    assert result["canaries"] == {"us-east-1": "ok"}
    assert result["files"]["us-east-1"] == len([h for h in sandbox.hosts.all("us-east-1") if h.role == "agent"])


@pytest.mark.parametrize(("change", "state"), [("disable", "Disabled"), ("schedule_deletion", "PendingDeletion")])
def test_a_key_disabled_or_pending_deletion_is_sev0_naming_key_and_region_while_decrypt_still_works(
        sandbox, key_in, change, state):
    from rehearsal.secrets import KeysNotRecoverable, read_secrets_file
    from rehearsal_airflow.operators.keys import VerifyKeysAndSecretsOperator

    kms, key_id = key_in("us-west-2")
    if change == "disable":
        kms.disable_key(KeyId=key_id)
    else:
        kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    east_file = read_secrets_file(sandbox.component("secrets").files["us-east-1"][0])
    probe = kms.encrypt(KeyId=key_id, Plaintext=b"still works")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=probe)["Plaintext"] == b"still works"  # moto: no proof of anything
    error, step = run(VerifyKeysAndSecretsOperator(task_id="keys", region="us-east-1"))
    assert isinstance(error, KeysNotRecoverable) and step["kind"] == "verification_failed"
    arn = sandbox.component("secrets").keys["us-west-2"]
    assert step["detail"].startswith(f"KeysNotRecoverable: 1 Sev0 and 0 other finding(s): Sev0: KMS key {arn} in "
                                     f"us-west-2 is {state}")
    assert east_file.region == "us-east-1"  # the canary of the surviving region still decrypted: only the key is named


def test_a_malformed_secrets_file_is_named(sandbox, monkeypatch, tmp_path):
    from rehearsal_airflow.operators.keys import VerifyKeysAndSecretsOperator

    component = sandbox.component("secrets")
    extra = component.connection_extra()
    broken = tmp_path / "secrets.json"
    doc = json.loads((open(extra["files"]["us-east-1"][0])).read())
    doc["secrets"]["rehearsal-canary"] = "not base64!"
    broken.write_text(json.dumps(doc))
    extra["files"]["us-east-1"] = [str(broken)]
    monkeypatch.setenv("AIRFLOW_CONN_REHEARSAL_SECRETS", json.dumps({"conn_type": "generic", "extra": extra}))
    _, step = run(VerifyKeysAndSecretsOperator(task_id="keys", region="us-east-1"))
    assert step["status"] == "failed"
    assert step["detail"] == (
        f"KeysNotRecoverable: 1 Sev0 and 1 other finding(s): Sev0: no valid secrets file for us-east-1: the canary cannot "
        f"be decrypted there; Sev1: malformed secrets file: {broken}: secrets.rehearsal-canary is not valid base64")


def test_freshness_fails_on_an_old_edge_export_and_on_a_disabled_key(sandbox, key_in, edge_prefix):
    from datetime import UTC, datetime, timedelta

    from rehearsal.backups.store import BackupStore
    from rehearsal.edge_config import EdgeConfig, new_export_id, write_export
    from rehearsal_airflow.operators.backup_freshness import EdgeConfigFreshnessOperator, KeysAndSecretsStateOperator

    result, step = run(EdgeConfigFreshnessOperator(task_id="check_edge_config_export"))  # the sandbox's first export
    assert step["status"] == "success", step["detail"]
    old = datetime.now(UTC) - timedelta(hours=2)
    export_id = new_export_id(old)
    write_export(BackupStore(sandbox.aws("s3"), edge_prefix), EdgeConfig([], [], ZONE, "Z", [], old.isoformat()), export_id)
    _, step = run(EdgeConfigFreshnessOperator(task_id="check_edge_config_export", bucket=edge_prefix))
    assert step["status"] == "failed"
    assert step["detail"].startswith(f"StaleBackup: stale edge configuration: edge_config_export: newest "
                                     f"edge_config_export {export_id} is 72")
    assert step["detail"].endswith("over its 3600s limit")

    result, step = run(KeysAndSecretsStateOperator(task_id="check_keys_and_secrets"))
    assert step["status"] == "success", step["detail"]
    assert [c["name"] for c in result["checks"]] == ["state:secrets_kms_keys", "state:secrets_canary"]
    kms, key_id = key_in("us-east-1")
    kms.disable_key(KeyId=key_id)
    _, step = run(KeysAndSecretsStateOperator(task_id="check_keys_and_secrets"))
    arn = sandbox.component("secrets").keys["us-east-1"]
    assert step["detail"].startswith(f"KeysNotRecoverable: Sev0: keys and secrets not recoverable: secrets_kms_keys: "
                                     f"Sev0: KMS key {arn} in us-east-1 is Disabled")
