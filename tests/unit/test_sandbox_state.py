"""The sandbox's state file: keyed by region and component, and the first (flat) layout read into it."""
from __future__ import annotations

import json

import pytest

from rehearsal_sandbox.components import COMPONENTS, SECOND_REGION_COMPONENTS
from rehearsal_sandbox.sandbox import REGION, Sandbox
from rehearsal_sandbox.state import VERSION, SandboxState

FLAT = {
    "runtime": "/var/tmp/rehearsal-x/sandbox-abc", "runtime_root": "/var/tmp/rehearsal-x",
    "clusters": {"results": {"data_dir": "/r/results", "port": 5001, "role": "results"},
                 "cp-1": {"data_dir": "/r/cp-1", "port": 5002, "role": "lost"},
                 "cp-2": {"data_dir": "/r/cp-2", "port": 5003, "role": "standby"},
                 "airflow-meta": {"data_dir": "/r/airflow-meta", "port": 5004, "role": "airflow-metadata"}},
    "pids": {"moto": 11, "wal-shipper": 12, "heartbeat": 13}, "generation": 2, "scale": 0.05, "archive_timeout": 5,
    "passwords": {"postgres": "p", "controlplane": "c"}, "spool": "/r/spool", "aws_endpoint": "http://127.0.0.1:4566",
    "zone_id": "Z1", "primary": "cp-1", "standby": "cp-2", "lost_data": ["/r/lost/cp-1-1"],
}


def test_a_new_state_is_saved_by_region_and_component_without_empty_slices(tmp_path):
    state = SandboxState(tmp_path / "state.json")
    assert not state.exists
    state.create(tmp_path / "rt", tmp_path, {"postgres": "p"}, {"block": "127.42", "postgres_port": 5432})
    state.component(REGION, "wal_shipping")["spool"] = "/s"
    state.component(REGION, "heartbeat")  # read only: not written
    state.save()
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved == {"version": VERSION, "runtime": str(tmp_path / "rt"), "runtime_root": str(tmp_path),
                     "passwords": {"postgres": "p"}, "network": {"block": "127.42", "postgres_port": 5432}, "hosts": {},
                     "regions": {REGION: {"wal_shipping": {"spool": "/s"}}}}
    again = SandboxState(tmp_path / "state.json")
    assert again.exists and not again.upgraded
    assert again.component(REGION, "wal_shipping") == {"spool": "/s"}
    assert again.peek(REGION, "heartbeat") == {} and again.regions() == [REGION]


def test_the_flat_layout_is_read_as_the_same_sandbox(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps(FLAT))
    state = SandboxState(tmp_path / "state.json")
    assert state.upgraded and state.exists
    assert state.data["runtime"] == FLAT["runtime"] and state.passwords == FLAT["passwords"]
    assert state.data["regions"][REGION] == {
        "aws_endpoint": {"url": "http://127.0.0.1:4566", "pid": 11},
        "discovery": {"zone_id": "Z1"},
        "results_db": {"cluster": {"name": "results", "data_dir": "/r/results", "port": 5001, "role": "results"}},
        "airflow_metadata": {"cluster": {"name": "airflow-meta", "data_dir": "/r/airflow-meta", "port": 5004,
                                         "role": "airflow-metadata"}},
        "wal_shipping": {"spool": "/r/spool", "pid": 12},
        "controlplane_db": {"scale": 0.05, "archive_timeout": 5, "generation": 2, "primary": "cp-1", "standby": "cp-2",
                            "clusters": {"cp-1": FLAT["clusters"]["cp-1"], "cp-2": FLAT["clusters"]["cp-2"]},
                            "lost_data": ["/r/lost/cp-1-1"]},
        "heartbeat": {"pid": 13, "log": str(tmp_path / "heartbeat.log")},
    }


def test_the_facade_reads_an_old_sandbox_through_its_components(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps(FLAT))
    sb = Sandbox(tmp_path)
    assert sb.exists and sb.runtime.name == "sandbox-abc" and sb.scale == 0.05 and sb.archive_timeout == 5
    assert str(sb.spool) == "/r/spool" and sb.passwords == FLAT["passwords"]
    assert sb.clusters == FLAT["clusters"] and sb.lost_data == ["/r/lost/cp-1-1"]
    assert (sb.primary.name, sb.primary.port, sb.standby.name) == ("cp-1", 5002, "cp-2")
    assert sb.cluster("results").port == 5001 and sb.cluster("airflow-meta").port == 5004
    assert sb.discovery().zone_id == "Z1" and sb.store().bucket == "rehearsal-backups"
    # The flat, read-only view gives back what the old state held.
    assert {k: sb.state[k] for k in ("runtime", "primary", "standby", "spool", "zone_id", "aws_endpoint")} == \
        {k: FLAT[k] for k in ("runtime", "primary", "standby", "spool", "zone_id", "aws_endpoint")}
    assert dict(sb.state["pids"]) == FLAT["pids"]
    with pytest.raises(TypeError):
        sb.state["primary"] = "cp-2"  # type: ignore[index]


def test_no_sandbox_is_not_up_and_says_how_to_make_one(tmp_path):
    sb = Sandbox(tmp_path)
    assert not sb.exists and not sb.is_up() and not sb.state
    assert sb.status() == {"sandbox": {"ok": False, "detail": "not created (run make sandbox-up)"}}
    sb.down()  # nothing to tear down: a no-op
    assert list(tmp_path.iterdir()) == []


def test_another_state_version_is_refused(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"version": VERSION + 1, "runtime": "/x"}))
    with pytest.raises(RuntimeError, match="state version"):
        SandboxState(tmp_path / "state.json")


def test_every_component_has_a_unique_name_and_the_protocol():
    names = [c.name for c in COMPONENTS]
    assert len(set(names)) == len(names)
    assert names == ["aws_endpoint", "results_db", "wal_shipping", "controlplane_db", "discovery", "heartbeat",
                     "api", "scheduler", "agents", "reconciler", "prober", "load", "edge", "volumes", "snapshot_store",
                     "secrets", "edge_config", "dns", "customers", "pgbench", "airflow_metadata"]
    assert [c.name for c in SECOND_REGION_COMPONENTS] == ["agents", "api", "scheduler", "reconciler", "edge"]
    for cls in COMPONENTS:
        assert all(callable(getattr(cls, m)) for m in ("up", "down", "status")), cls


def test_every_host_gets_its_own_address_in_its_regions_block_and_a_released_one_is_not_handed_out_at_once(tmp_path):
    from rehearsal_sandbox.hosts import HostRegistry, is_worker_address

    state = SandboxState(tmp_path / "state.json")
    state.create(tmp_path / "rt", tmp_path, {"postgres": "p"}, {"block": "127.42", "postgres_port": 5432})
    hosts = HostRegistry(state)
    aws = hosts.allocate("aws", "global", "aws")
    db1, db2 = hosts.allocate("db-1", REGION, "postgres"), hosts.allocate("db-2", REGION, "postgres")
    assert (aws.address, db1.address, db2.address) == ("127.42.0.10", "127.42.1.10", "127.42.1.11")
    assert hosts.allocate("db-1", REGION, "postgres") == db1  # by name, idempotently
    assert hosts.at("127.42.1.11:5432") == db2 and hosts.at("127.0.0.1:5432") is None
    hosts.release("db-1")
    assert hosts.allocate("db-3", REGION, "postgres", "production", "drill-abc").address == "127.42.1.12"
    assert hosts.get("db-3").run_key == "drill-abc"
    hosts.check()
    assert not any(is_worker_address(h.address) for h in hosts.all()) and is_worker_address("127.0.0.1")
    with pytest.raises(ValueError, match="no address block for region 'mars-1'"):
        hosts.allocate("db-9", "mars-1", "postgres")
