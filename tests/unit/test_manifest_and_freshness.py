from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from rehearsal.backups.manifest import BackupManifest, BackupObject, parse_manifest
from rehearsal.catalog import DEFAULT_CATALOG, load_catalog
from rehearsal.errors import ManifestError
from rehearsal.freshness import evaluate

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def manifest(**changes) -> dict:
    m = BackupManifest(backup_id="base-1", kind="base_backup", cluster="controlplane", start_time=NOW, stop_time=NOW,
                       server_version="18.6", server_major=18, schema_version="v5",
                       objects=[BackupObject("base.tar", "controlplane/base/base-1/base.tar", 10, "a" * 64)],
                       start_lsn="0/2000028", stop_lsn="0/2000100", timeline=1, wal_segment_size=1048576,
                       row_counts={"orgs": 3})
    data = json.loads(m.to_json())
    data.update(changes)
    return data


def test_manifest_round_trip():
    parsed = parse_manifest(json.dumps(manifest()), "base-1")
    assert parsed.object("base.tar").size == 10 and parsed.row_counts == {"orgs": 3}
    assert parsed.start_time == NOW


@pytest.mark.parametrize(("data", "message"), [
    ("not json", "base backup base-1: manifest is not valid JSON"),
    (json.dumps({"format": "other"}), "not a rehearsal-backup-manifest/1 manifest"),
    (json.dumps({k: v for k, v in manifest().items() if k != "objects"}), "manifest lacks field 'objects'"),
    (json.dumps(manifest(objects=[])), "manifest lists no objects"),
    (json.dumps(manifest(start_lsn=None)), "needs start_lsn, timeline and wal_segment_size"),
    (json.dumps(manifest(objects=[{"name": "x", "key": "k", "size": 1, "sha256": "short"}])), "object x has invalid size or sha256"),
])
def test_bad_manifests_name_the_backup_and_the_field(data, message):
    with pytest.raises(ManifestError) as err:
        parse_manifest(data, "base backup base-1")
    assert message in str(err.value)


def test_fresh_and_stale_backups():
    catalog = load_catalog(DEFAULT_CATALOG)
    wal = catalog.asset("controlplane_wal_archive")
    fresh = evaluate(wal, "seg", NOW - timedelta(minutes=14), NOW)
    assert fresh.ok and fresh.age_seconds == 840
    stale = evaluate(wal, "000000010000000000000042", NOW - timedelta(minutes=20), NOW)
    assert not stale.ok
    assert stale.detail == ("controlplane_wal_archive: newest wal_archive 000000010000000000000042 is 1200s old, "
                            "300s over its 900s limit")
    missing = evaluate(catalog.asset("controlplane_base_backup"), None, None, NOW)
    assert not missing.ok and missing.detail == "controlplane_base_backup: no base_backup exists"
