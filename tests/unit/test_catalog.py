from __future__ import annotations

from datetime import timedelta

import pytest
import yaml

from rehearsal.catalog import DEFAULT_CATALOG, load_catalog, parse_catalog
from rehearsal.errors import CatalogError


def raw() -> dict:
    return yaml.safe_load(DEFAULT_CATALOG.read_text())


def test_the_plans_table_is_the_catalog():
    catalog = load_catalog(DEFAULT_CATALOG)
    assert catalog.target("control_plane_api").rto == timedelta(hours=2)
    assert catalog.target("control_plane_api").rpo == timedelta(minutes=15)
    assert catalog.target("app_runtime").rpo == timedelta(0)
    assert catalog.target("full_region").rto == timedelta(hours=24)
    assert catalog.target("volume_restore").rpo == timedelta(hours=24)


def test_wal_freshness_limit_is_the_control_plane_rpo():
    catalog = load_catalog(DEFAULT_CATALOG)
    assert catalog.asset("controlplane_wal_archive").max_age == catalog.target("control_plane_api").rpo


def test_changing_the_file_changes_rto_and_rpo(tmp_path):
    data = raw()
    data["components"]["control_plane_api"]["rto"] = "90m"
    data["components"]["control_plane_api"]["rpo"] = "5m"
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump(data))
    catalog = load_catalog(path)
    assert catalog.target("control_plane_api").rto == timedelta(minutes=90)
    assert catalog.asset("controlplane_wal_archive").max_age == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["components"]["control_plane_api"].update(rto="-2h"), "components.control_plane_api.rto: negative duration '-2h'"),
        (lambda d: d["components"]["control_plane_api"].update(rpo=15), "components.control_plane_api.rpo: duration 15 has no unit"),
        (lambda d: d["components"]["control_plane_api"].update(rto="soon"), "cannot parse duration 'soon'"),
        (lambda d: d["components"]["control_plane_api"].update(rto="0s"), "components.control_plane_api.rto: must be positive"),
        (lambda d: d["components"]["control_plane_api"].pop("rpo"), "components.control_plane_api: missing rpo"),
        (lambda d: d["assets"]["controlplane_base_backup"].update(component="billing"), "assets.controlplane_base_backup: unknown component 'billing'"),
        (lambda d: d["assets"]["controlplane_wal_archive"].update(max_age="rpo:billing"), "max_age: unknown component 'billing'"),
        (lambda d: d["assets"]["controlplane_base_backup"].update(kind="tape"), "unknown kind 'tape'"),
        (lambda d: d.update(version=2), "unsupported catalog version 2"),
    ],
)
def test_bad_entries_fail_loudly_at_load(mutate, message):
    data = raw()
    mutate(data)
    with pytest.raises(CatalogError) as err:
        parse_catalog(data, source="targets.yaml")
    assert message in str(err.value)


def test_unknown_component_lookup_names_what_exists():
    with pytest.raises(CatalogError, match="unknown component 'billing' .catalog has: app_runtime, control_plane_api"):
        load_catalog(DEFAULT_CATALOG).target("billing")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CatalogError, match="targets catalog not found: .*nope.yaml"):
        load_catalog(tmp_path / "nope.yaml")
