"""A provisioner's capabilities are protocols checked with isinstance: the sandbox's provisioner has every one, and
a provisioner that lacks a method is refused naming the method, the capability and what it was needed for."""
from __future__ import annotations

import json

import pytest

from rehearsal.capabilities import (
    CAPABILITIES,
    DatabaseHosts,
    EnvironmentRestorer,
    PrimaryLossFaults,
    ServiceControl,
    SnapshotStoreAdmin,
    capability_limitation,
    methods,
)
from rehearsal.environment import Environment
from rehearsal.errors import PreconditionFailed


class HalfProvisioner:
    """Rebuilds redundancy and puts the environment back, but cannot kill anything or start services."""

    def __init__(self, environment=None) -> None:
        self.environment = environment

    def adopt_primary(self, address, data_dir=None):
        return []

    def rebuild_standby(self, primary_address):
        return []

    def restore_environment(self):
        return []

    def inventory_data_dirs(self):
        return set()

    def start_service(self, name, mode=None):  # but neither stop_service nor service_running
        return []


def test_the_sandbox_provisioner_has_every_capability():
    from rehearsal_sandbox.provisioner import SandboxProvisioner

    provisioner = SandboxProvisioner(Environment(sandbox_state="/nonexistent/sandbox-state"))
    for capability in CAPABILITIES:
        assert isinstance(provisioner, capability), capability.__name__
        assert capability_limitation(provisioner, capability) is None


def test_the_old_name_provisioner_is_database_hosts():
    from rehearsal.platform import Provisioner, RestoreHosts, VolumeHosts

    assert Provisioner is DatabaseHosts
    assert RestoreHosts in CAPABILITIES and VolumeHosts in CAPABILITIES  # re-exported from rehearsal.platform


def test_every_capability_names_its_methods():
    assert methods(EnvironmentRestorer) == ["restore_environment", "inventory_data_dirs"]
    assert methods(ServiceControl) == ["start_service", "stop_service", "service_running"]
    assert methods(SnapshotStoreAdmin) == ["set_snapshot_interval", "snapshot_interval", "create_snapshot_bucket"]
    assert all(methods(c) for c in CAPABILITIES)


def test_a_provisioner_lacking_a_method_is_refused_naming_it_and_what_it_was_for():
    half = HalfProvisioner()
    assert isinstance(half, DatabaseHosts) and isinstance(half, EnvironmentRestorer)
    assert not isinstance(half, ServiceControl)  # start_service alone is not service control
    assert capability_limitation(half, DatabaseHosts, EnvironmentRestorer) is None
    assert capability_limitation(half, ServiceControl) == (
        "provisioner HalfProvisioner cannot start and stop the control plane's services: it lacks stop_service, "
        "service_running (the ServiceControl capability)")
    assert capability_limitation(half, PrimaryLossFaults, EnvironmentRestorer) == (
        "provisioner HalfProvisioner cannot kill the database primary (the primary-loss fault): it lacks kill_primary "
        "(the PrimaryLossFaults capability)")
    assert capability_limitation(None, PrimaryLossFaults) == (
        "the environment names no provisioner, so nothing can kill the database primary (the primary-loss fault) "
        "(the PrimaryLossFaults capability: kill_primary)")


def test_a_disruptive_drill_whose_provisioner_cannot_inject_its_fault_is_refused_before_anything(monkeypatch):
    from rehearsal_airflow.operators.guard import DrillGuardOperator

    monkeypatch.setenv("AIRFLOW_VAR_REHEARSAL_ENVIRONMENT", json.dumps({
        "name": "half-env", "drill_environment": True, "provisioner": f"{__name__}:HalfProvisioner"}))
    guard = DrillGuardOperator(task_id="guard_drill_environment", mode="disruptive", path="auto", scenario="S",
                               fault=PrimaryLossFaults)
    with pytest.raises(PreconditionFailed) as err:
        guard.check_mode_and_environment()
    assert str(err.value) == (
        "refusing to run a disruptive drill (it kills the primary and loses its data) on 'half-env': provisioner "
        "HalfProvisioner cannot kill the database primary (the primary-loss fault): it lacks kill_primary (the "
        "PrimaryLossFaults capability)")
    # A non-disruptive run needs nothing of the provisioner.
    assert DrillGuardOperator(task_id="g2", mode="non_disruptive", path="auto", scenario="S",
                              fault=PrimaryLossFaults).check_mode_and_environment().name == "half-env"


def test_no_provisioner_capability_is_probed_by_name_in_the_airflow_layer():
    """Capabilities are checked with isinstance against a protocol, never with hasattr and a method's name."""
    from pathlib import Path

    plugins = Path(__file__).resolve().parents[2] / "plugins"
    offenders = [f"{p.relative_to(plugins)}:{n}" for p in plugins.rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1) if "hasattr(provisioner" in line]
    assert offenders == []
