"""The edge configuration's export, choice of the newest verified export, restore plan and verification, on the
in-process S3 and Route 53 of moto (state only: the checks under test are ours)."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from rehearsal.backups.store import BackupStore
from rehearsal.catalog import Asset
from rehearsal.edge_config import (
    Allocation,
    EdgeConfig,
    EdgeExportMissing,
    EndpointMapping,
    Liveness,
    allocation_changes,
    dns_changes,
    export_key,
    export_time,
    new_export_id,
    newest_verified_export,
    read_record_sets,
    verify_edge_config,
    write_export,
)
from rehearsal.freshness import edge_export_freshness

BUCKET = "backups"
ROUTING = ["apps.rehearsal.internal.", "apps-failover.rehearsal.internal."]


def weighted(region: str, address: str, weight: int) -> dict:
    return {"Name": "apps.rehearsal.internal.", "Type": "A", "SetIdentifier": region, "Weight": weight, "TTL": 5,
            "ResourceRecords": [{"Value": address}]}


def config(allocations=None, endpoints=None, record_sets=None, at: str | None = None) -> EdgeConfig:
    return EdgeConfig(
        endpoints=endpoints if endpoints is not None else [EndpointMapping(1, 0, "agent-01", "us-east-1"),
                                                           EndpointMapping(2, 0, "agent-02", "us-west-2")],
        allocations=allocations if allocations is not None else [Allocation(1, "192.0.2.1"), Allocation(2, "192.0.2.2")],
        zone="rehearsal.internal.", zone_id="Z1",
        record_sets=record_sets if record_sets is not None else [weighted("us-east-1", "127.1.1.5", 100),
                                                                 weighted("us-west-2", "127.1.2.5", 0),
                                                                 {"Name": "apps-failover.rehearsal.internal.", "Type": "A",
                                                                  "SetIdentifier": "primary", "Failover": "PRIMARY",
                                                                  "TTL": 5, "ResourceRecords": [{"Value": "127.1.1.5"}]}],
        exported_at=at or datetime.now(UTC).isoformat())


LIVE = Liveness.from_reports({"agent-01": 1.0, "agent-02": 2.0})


@pytest.fixture
def store(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the session's local endpoint would be shared, not mocked
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        yield BackupStore(s3, BUCKET)


def failed(checks) -> dict[str, str]:
    return {c.name: c.detail for c in checks.failed}


# ------------------------------------------------------------------------------------------------ export and choice
def test_an_export_round_trips_through_its_manifest(store):
    original = config()
    manifest = write_export(store, original, "20261201T030000.000000Z-aaaa")
    assert [o["name"] for o in manifest.objects] == ["endpoints.json", "ipv4_allocations.json", "dns_routing.json"]
    chosen = newest_verified_export(store)
    assert (chosen.export_id, chosen.skipped) == ("20261201T030000.000000Z-aaaa", [])
    assert chosen.config.parts() == original.parts()
    assert chosen.manifest.summary == {"endpoints": 2, "hosts": 2, "allocations": 2, "record_sets": 3,
                                       "zone": "rehearsal.internal."}


def test_a_corrupt_newest_export_is_skipped_by_name_and_the_older_one_chosen(store):
    write_export(store, config(), "20261201T030000.000000Z-aaaa")
    write_export(store, config(allocations=[Allocation(1, "192.0.2.9")]), "20261201T031500.000000Z-bbbb")
    key = export_key("20261201T031500.000000Z-bbbb", "ipv4_allocations.json")
    store.put_bytes(key, b'{"format": "rehearsal-edge-config/1", "allocations": []}', overwrite=True)
    chosen = newest_verified_export(store)
    assert chosen.export_id == "20261201T030000.000000Z-aaaa"
    assert len(chosen.skipped) == 1
    assert chosen.skipped[0].startswith(f"edge-config export 20261201T031500.000000Z-bbbb: s3://{BUCKET}/{key} does not "
                                        "match its manifest: sha256 ")


def test_an_incomplete_newest_export_without_a_manifest_or_with_an_object_missing_is_skipped_by_name(store):
    write_export(store, config(), "20261201T030000.000000Z-aaaa")
    store.put_bytes(export_key("20261201T034500.000000Z-dddd", "endpoints.json"), b"{}")  # its writer died
    write_export(store, config(), "20261201T033000.000000Z-cccc")
    gone = export_key("20261201T033000.000000Z-cccc", "dns_routing.json")
    store.s3.delete_object(Bucket=BUCKET, Key=gone)
    chosen = newest_verified_export(store)
    assert chosen.export_id == "20261201T030000.000000Z-aaaa"
    assert chosen.skipped == [
        f"edge-config export 20261201T034500.000000Z-dddd (s3://{BUCKET}/edge-config/20261201T034500.000000Z-dddd/"
        "manifest.json): incomplete, it has no manifest",
        f"edge-config export 20261201T033000.000000Z-cccc: s3://{BUCKET}/{gone} is missing (incomplete export)"]


def test_no_export_at_all_names_the_prefix(store):
    with pytest.raises(EdgeExportMissing) as err:
        newest_verified_export(store)
    assert str(err.value) == f"no edge-configuration export under s3://{BUCKET}/edge-config/"
    assert err.value.kind == "refused"


def test_when_no_export_verifies_each_is_named(store):
    write_export(store, config(), "20261201T030000.000000Z-aaaa")
    store.put_bytes(export_key("20261201T030000.000000Z-aaaa", "manifest.json"), b"not json", overwrite=True)
    with pytest.raises(EdgeExportMissing) as err:
        newest_verified_export(store)
    assert str(err.value).startswith(f"no edge-configuration export under s3://{BUCKET}/edge-config/ verifies: "
                                     "edge-config export 20261201T030000.000000Z-aaaa (")
    assert "unreadable manifest" in str(err.value)


def test_export_ids_sort_by_time():
    first, second = new_export_id(datetime(2026, 12, 1, 3, 0, tzinfo=UTC)), new_export_id(datetime(2026, 12, 1, 3, 1, tzinfo=UTC))
    assert first < second and export_time(first) == datetime(2026, 12, 1, 3, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------------------------ verification
def test_a_healthy_configuration_verifies():
    checks = verify_edge_config(config(), LIVE, "export X", ROUTING)
    assert checks.ok, failed(checks)
    assert [c.name for c in checks.checks] == ["ipv4_unique", "ipv4_valid", "host_reports_current",
                                               "endpoints_on_live_hosts", "endpoints_have_ipv4", "dns_routing"]


def test_an_ipv4_address_allocated_twice_is_named_with_its_apps():
    allocations = [Allocation(1, "192.0.2.1"), Allocation(2, "192.0.2.7"), Allocation(3, "192.0.2.7")]
    checks = verify_edge_config(config(allocations=allocations), LIVE, "export X", ROUTING)
    assert failed(checks) == {"ipv4_unique": "192.0.2.7 allocated 2 times (apps 2, 3)"}
    with pytest.raises(Exception) as err:
        checks.raise_if_failed()
    assert str(err.value) == "export X: failed checks: ipv4_unique: 192.0.2.7 allocated 2 times (apps 2, 3)"


def test_an_endpoint_on_a_dead_host_is_named_with_the_host_and_its_endpoints():
    liveness = Liveness.from_reports({"agent-01": 1.0, "agent-02": 93.0})
    checks = verify_edge_config(config(), liveness, "live", ROUTING)
    assert failed(checks) == {"endpoints_on_live_hosts": "agent-02 last reported 93s ago: 1 endpoint(s) on it (app 2 slot 0)"}
    never = config(endpoints=[EndpointMapping(1, 0, "agent-01"), EndpointMapping(1, 1, "agent-77")])
    assert failed(verify_edge_config(never, LIVE, "live", ROUTING)) == {
        "endpoints_on_live_hosts": "agent-77 has never reported: 1 endpoint(s) on it (app 1 slot 1)"}


def test_with_no_recent_report_no_host_is_known_live():
    checks = verify_edge_config(config(), Liveness.from_reports({"agent-01": 300.0, "agent-02": 301.0}), "live", ROUTING)
    assert failed(checks)["host_reports_current"] == ("the freshest agent report is 300s old (more than 60s): no host is "
                                                      "known to be live")
    assert "endpoints_on_live_hosts" in failed(checks)


def test_an_app_without_an_address_a_bad_address_and_a_missing_routing_record_are_named():
    checks = verify_edge_config(config(allocations=[Allocation(1, "2001:db8::1")], record_sets=[]), LIVE, "live", ROUTING)
    assert failed(checks) == {
        "ipv4_valid": "not an IPv4 address: app 1: '2001:db8::1'",
        "endpoints_have_ipv4": "1 app(s) with endpoints hold no IPv4 address: apps 2",
        "dns_routing": "no record set for apps-failover.rehearsal.internal., apps.rehearsal.internal. in zone "
                       "rehearsal.internal."}


# ------------------------------------------------------------------------------------------------ restore plan
def test_the_restore_upserts_only_what_differs_and_leaves_newer_allocations_alone():
    exported = config()
    current = [weighted("us-east-1", "127.1.1.5", 100), weighted("us-west-2", "127.1.2.5", 100)]
    changes = dns_changes(exported.record_sets, current)
    assert [(c["Action"], c["ResourceRecordSet"]["Name"], c["ResourceRecordSet"].get("SetIdentifier")) for c in changes] == [
        ("UPSERT", "apps-failover.rehearsal.internal.", "primary"), ("UPSERT", "apps.rehearsal.internal.", "us-west-2")]
    assert changes[1]["ResourceRecordSet"]["Weight"] == 0
    assert dns_changes(exported.record_sets, exported.record_sets) == []
    now = [Allocation(1, "192.0.2.1"), Allocation(2, "192.0.2.99"), Allocation(3, "192.0.2.3")]
    assert allocation_changes(exported.allocations, now) == [Allocation(2, "192.0.2.2")]


def test_record_sets_are_read_in_one_call_without_a_paginator(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        route53 = boto3.client("route53", region_name="us-east-1")
        zone = route53.create_hosted_zone(Name="rehearsal.internal.", CallerReference="t")["HostedZone"]["Id"]
        route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [
            {"Action": "UPSERT", "ResourceRecordSet": r} for r in config().record_sets]
            + [{"Action": "UPSERT", "ResourceRecordSet": {"Name": "other.rehearsal.internal.", "Type": "A", "TTL": 60,
                                                          "ResourceRecords": [{"Value": "192.0.2.200"}]}}]})
        record_sets, calls = read_record_sets(route53, zone, ROUTING)
    assert calls == 1
    assert {(r["Name"], r.get("SetIdentifier")) for r in record_sets} == {
        ("apps.rehearsal.internal.", "us-east-1"), ("apps.rehearsal.internal.", "us-west-2"),
        ("apps-failover.rehearsal.internal.", "primary")}


# ------------------------------------------------------------------------------------------------ freshness
def test_freshness_fails_on_an_old_export_and_passes_on_a_new_one(store):
    asset = Asset("edge_config_export", "full_region", "edge_config_export", timedelta(hours=1))
    now = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    write_export(store, config(at=(now - timedelta(hours=3)).isoformat()), "20261201T030000.000000Z-aaaa")
    stale = edge_export_freshness(store, asset, now)
    assert not stale.ok
    assert stale.detail == ("edge_config_export: newest edge_config_export 20261201T030000.000000Z-aaaa is 10800s old, "
                            "7200s over its 3600s limit")
    write_export(store, config(at=(now - timedelta(minutes=10)).isoformat()), "20261201T055000.000000Z-bbbb")
    assert edge_export_freshness(store, asset, now).ok


def test_freshness_does_not_count_a_newer_export_that_does_not_verify(store):
    asset = Asset("edge_config_export", "full_region", "edge_config_export", timedelta(hours=1))
    now = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
    write_export(store, config(at=(now - timedelta(hours=2)).isoformat()), "20261201T040000.000000Z-aaaa")
    write_export(store, config(at=(now - timedelta(minutes=5)).isoformat()), "20261201T055500.000000Z-bbbb")
    key = export_key("20261201T055500.000000Z-bbbb", "endpoints.json")
    store.put_bytes(key, json.dumps({"format": "rehearsal-edge-config/1", "endpoints": []}).encode(), overwrite=True)
    result = edge_export_freshness(store, asset, now)
    assert not result.ok and result.newest == "20261201T040000.000000Z-aaaa"
    assert f"newer export(s) under s3://{BUCKET}/edge-config/ that do not verify: edge-config export " \
           f"20261201T055500.000000Z-bbbb: s3://{BUCKET}/{key} does not match its manifest" in result.detail


def test_freshness_with_no_export_names_the_prefix(store):
    asset = Asset("edge_config_export", "full_region", "edge_config_export", timedelta(hours=1))
    result = edge_export_freshness(store, asset, datetime.now(UTC))
    assert (result.ok, result.detail) == (False, f"edge_config_export: no edge-configuration export under s3://{BUCKET}/edge-config/")


def test_the_catalog_watches_the_export_and_the_key_and_canary_states():
    from rehearsal.catalog import CatalogError, load_catalog, parse_catalog

    catalog = load_catalog()
    assert catalog.asset("edge_config_export").max_age == catalog.target("full_region").rpo == timedelta(hours=1)
    assert (catalog.asset("secrets_kms_keys").kind, catalog.asset("secrets_canary").kind) == ("kms_key_state", "secrets_canary")
    assert catalog.asset("secrets_kms_keys").max_age == timedelta(0)
    raw = {"version": 1, "components": {"full_region": {"rto": "24h", "rpo": "1h"}},
           "assets": {"keys": {"component": "full_region", "kind": "kms_key_state", "max_age": "1h"}}}
    with pytest.raises(CatalogError) as err:
        parse_catalog(raw, "targets.yaml")
    assert str(err.value) == ("targets.yaml: assets.keys.max_age: a kms_key_state asset is checked as it is at each run; "
                              "it takes no max_age")
