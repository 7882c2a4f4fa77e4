"""When a drill may start: a run is a drill by its mode, not by its DAG's name."""
from __future__ import annotations

import pytest

from rehearsal.drills.start_rules import is_drill_run, is_incident_run


@pytest.mark.parametrize(("params", "drill", "incident"), [
    ({"mode": "disruptive"}, True, False),
    ({"mode": "non_disruptive"}, True, False),
    ({"mode": "drill"}, True, False),  # a runbook or scenario rehearsed
    ({"mode": "incident"}, False, True),
    ({}, False, False),  # a backup DAG
    (None, False, False),
])
def test_a_run_is_a_drill_by_its_mode_not_its_dag_id(params, drill, incident):
    assert is_drill_run(params) is drill
    assert is_incident_run(params) is incident
