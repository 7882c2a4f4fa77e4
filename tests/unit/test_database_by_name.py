"""The control-plane database by name: its A record switched with its SRV record in one change, and when pgbench,
a client that knows it only by that name, committed again after a fault (from its log)."""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from rehearsal.discovery import DiscoveryRecord, point_at, resolve, resolve_a
from rehearsal.drills.pgbench import pgbench_committed_again, pgbench_evidence
from rehearsal.errors import PreconditionFailed

SRV = "_postgresql._tcp.controlplane-db.rehearsal.internal."
A = "controlplane-db.rehearsal.internal."
FAULT = 1_000.0


class CountingRoute53:
    """A real (in-process moto) Route 53 client that counts change batches."""

    def __init__(self, client) -> None:
        self.client, self.batches = client, []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def change_resource_record_sets(self, **kwargs):
        self.batches.append([(c["ResourceRecordSet"]["Name"], c["ResourceRecordSet"]["Type"])
                             for c in kwargs["ChangeBatch"]["Changes"]])
        return self.client.change_resource_record_sets(**kwargs)


@pytest.fixture
def route53(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("route53", region_name="us-east-1")
        zone = client.create_hosted_zone(Name="rehearsal.internal.", CallerReference="t")["HostedZone"]["Id"]
        yield CountingRoute53(client), DiscoveryRecord(zone_id=zone.split("/")[-1], name=SRV, a_record=A)


def test_the_a_record_moves_with_the_srv_record_in_one_change_batch(route53):
    client, record = route53
    assert point_at(client, record, "127.42.1.10", 5432) is True
    assert point_at(client, record, "127.42.1.10", 5432) is False  # idempotent: nothing to change
    assert point_at(client, record, "127.42.2.11", 5432) is True
    assert client.batches == [[(SRV, "SRV"), (A, "A")], [(SRV, "SRV"), (A, "A")]]
    assert resolve(client, record) == ("127.42.2.11", 5432)
    assert resolve_a(client, record.zone_id, A) == ["127.42.2.11"]


def test_an_srv_record_already_right_still_gets_its_missing_a_record(route53):
    client, record = route53
    assert point_at(client, DiscoveryRecord(record.zone_id, SRV), "127.42.1.10", 5432) is True  # SRV only
    with pytest.raises(LookupError, match=f"A record {A} not found in zone {record.zone_id}"):
        resolve_a(client, record.zone_id, A)
    assert point_at(client, record, "127.42.1.10", 5432) is True
    assert resolve_a(client, record.zone_id, A) == ["127.42.1.10"]


def test_a_host_name_is_refused_for_an_a_record_and_nothing_changes(route53):
    client, record = route53
    point_at(client, record, "127.42.1.10", 5432)
    with pytest.raises(PreconditionFailed, match=rf"cannot point A record {A} at 'db-2.internal': not an IPv4 address "
                                                 r"\(nothing changed\)"):
        point_at(client, record, "db-2.internal", 5432)
    assert resolve(client, record) == ("127.42.1.10", 5432)
    assert resolve_a(client, record.zone_id, A) == ["127.42.1.10"]
    assert len(client.batches) == 1


def run(started: float, ok: bool, address: str | None = "127.42.2.11", error: str | None = None) -> dict:
    return {"at": started + 0.3, "started": started, "address": address, "ok": ok, "transactions": 3 if ok else 0,
            "error": error}


def test_pgbench_committed_again_at_its_first_good_run_started_after_the_fault():
    lines = [run(FAULT - 1.0, True, "127.42.1.10"),
             run(FAULT - 0.1, True, "127.42.1.10"),  # began before the fault, ended after: proves nothing
             run(FAULT + 0.5, False, "127.42.1.10", "connection refused"),
             run(FAULT + 1.5, False, "127.42.1.10", "connection refused"),
             run(FAULT + 4.0, True), run(FAULT + 5.0, True)]
    found = pgbench_committed_again(lines, FAULT)
    assert (found.committed_at, found.started_at, found.address) == (FAULT + 4.3, FAULT + 4.0, "127.42.2.11")
    assert found.seconds_after_fault == pytest.approx(4.3)
    assert (found.runs_after_fault, found.failed_runs_after_fault, found.reason) == (4, 2, None)
    assert found.detail == ("pgbench committed again through the database's name 4.3s after the fault, on "
                            "127.42.2.11 (2 failed run(s) before)")


def test_pgbench_that_never_committed_again_has_no_figure_and_says_why():
    lines = [run(FAULT - 1.0, True, "127.42.1.10"), run(FAULT + 0.5, False, "127.42.1.10", "connection refused"),
             run(FAULT + 1.5, False, None, "resolve controlplane-db.rehearsal.internal.: NXDOMAIN")]
    found = pgbench_committed_again(lines, FAULT)
    assert found.committed_at is None and found.seconds_after_fault is None and found.address is None
    assert found.reason == ("2 run(s) since the fault, none committed; the last, through no address: resolve "
                            "controlplane-db.rehearsal.internal.: NXDOMAIN")
    assert pgbench_committed_again(lines[:1], FAULT).reason == ("no pgbench run started since the fault (is the client "
                                                                "running?)")


def test_the_drills_check_fails_naming_the_reason_and_is_absent_without_a_client(tmp_path: Path):
    log = tmp_path / "pgbench-log.jsonl"
    log.write_text("".join(json.dumps(x) + "\n" for x in [run(FAULT + 0.5, False, "127.42.1.10", "connection refused")]))
    evidence, check = pgbench_evidence(str(log), FAULT, timeout=0)
    assert evidence["committed_at"] is None and evidence["failed_runs_after_fault"] == 1
    assert check == {"name": "pgbench_committed_again", "ok": False, "critical": True,
                     "detail": "pgbench did not commit again after the fault: 1 run(s) since the fault, none committed; "
                               "the last, through 127.42.1.10: connection refused"}
    with log.open("a") as fh:
        fh.write(json.dumps(run(FAULT + 2.0, True)) + "\n")
    evidence, check = pgbench_evidence(str(log), FAULT, timeout=0)
    assert check["ok"] and evidence["address"] == "127.42.2.11" and evidence["committed_at"] == FAULT + 2.3
    evidence, check = pgbench_evidence(str(tmp_path / "gone.jsonl"), FAULT, timeout=0)
    assert not check["ok"] and check["detail"] == (f"pgbench log {tmp_path / 'gone.jsonl'} does not exist: pgbench's "
                                                   "recovery cannot be measured")
    assert pgbench_evidence(None, FAULT, timeout=0) == (
        {"committed_at": None, "reason": "no pgbench client in this environment (no pgbench_log)"}, None)
