"""The region fault's retry: it adopts the fault its first try injected before dying with the region (its Airflow
worker ran there), and otherwise refuses; a retry never injects a fault."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from rehearsal.errors import PreconditionFailed
from rehearsal_airflow.faults.region import InjectRegionOutageOperator

STARTED = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


class TI:
    def __init__(self, try_number: int) -> None:
        self.try_number, self.pushed = try_number, {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def attempt(try_number: int, down_since: datetime | None):
    op = InjectRegionOutageOperator(task_id="inject_region_outage", guard={}, region="us-west-2")
    provisioner = SimpleNamespace(region_down_since=lambda region: down_since.isoformat() if down_since else None)
    ti = TI(try_number)
    return op._own_earlier_try({"ti": ti, "dag_run": SimpleNamespace(start_date=STARTED)}, provisioner), ti


def test_the_first_try_adopts_nothing_even_with_the_region_down():
    assert attempt(1, STARTED + timedelta(seconds=5))[0] is None
    assert attempt(1, None)[0] is None


def test_a_retry_adopts_the_fault_its_first_try_injected_during_this_run():
    at = STARTED + timedelta(seconds=40)
    fault, ti = attempt(2, at)
    assert fault["fault_at"] == at.isoformat() and fault["region"] == "us-west-2" and fault["adopted_from_try"] == 1
    assert "taken down at 2026-12-05T12:00:40+00:00 by try 1 of this task, which died with the region" in fault["detail"]
    assert ti.pushed == {"region": "us-west-2"}


def test_a_retry_with_the_region_up_refuses_and_injects_nothing():
    with pytest.raises(PreconditionFailed, match=r"try 2 of inject_region_outage: region us-west-2 is up, so no earlier "
                                                 r"try of this run took it down; a retry never injects the fault"):
        attempt(2, None)


def test_a_retry_never_adopts_a_region_down_since_before_the_run():
    with pytest.raises(PreconditionFailed, match=r"region us-west-2 is down since 2026-12-05T11:59:00\+00:00, before "
                                                 r"this run started"):
        attempt(2, STARTED - timedelta(minutes=1))
