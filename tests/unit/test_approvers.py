"""Who may approve: the on-call approvers named in the environment, as Airflow's HITL ``assigned_users`` expects."""
from __future__ import annotations

from rehearsal.environment import Environment


def test_approvers_are_read_from_a_list_or_a_comma_separated_string():
    assert Environment.from_mapping({"approvers": ["alice", "bob"]}).approvers == ("alice", "bob")
    assert Environment.from_mapping({"approvers": "alice, bob"}).approvers == ("alice", "bob")


def test_no_approvers_named_leaves_airflows_default():
    assert Environment.from_mapping({}).approvers is None
    assert Environment.from_mapping({"approvers": []}).approvers is None
