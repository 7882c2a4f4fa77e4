"""The postgres-failover runbook's decisions and the report's verdict, from synthetic cluster states."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, WalGapError, error_kind
from rehearsal.platform import MemberState
from rehearsal.postgres.failover import StandbyState
from rehearsal.report import decide_status, human_seconds
from rehearsal.runbooks.postgres_failover import Assessment, approval_request, assess, choose_path, needs_approval

MB = 1024 * 1024
PRIMARY, STANDBY = "10.0.0.1:5432", "10.0.0.2:5432"


def standby(replay_age: float | None = 0.3, status: str | None = None, heard: float | None = None,
            received: str = "0/480000") -> MemberState:  # inside the newest archived segment: not caught up by WAL
    state = StandbyState(STANDBY, True, status, heard, replay_age, received, received)
    return MemberState(STANDBY, True, "standby", state.describe(), standby=asdict(state))


def dead_primary() -> MemberState:
    return MemberState(PRIMARY, False, "unreachable", "unreachable: connection refused")


def live_primary() -> MemberState:
    return MemberState(PRIMARY, True, "primary", "accepts writes", lineage="7/1")


def cluster(primary: MemberState, *standbys: MemberState, archived: str | None = "000000010000000000000004") -> Assessment:
    return Assessment(primary=primary, standbys=list(standbys), newest_archived_segment=archived, wal_segment_size=MB,
                      newest_base_backup="base-1")


def test_auto_promotes_a_standby_that_replayed_until_the_loss():
    decision = choose_path("auto", "production", cluster(dead_primary(), standby(replay_age=0.4)), 900)
    assert (decision.path, decision.standby) == ("promote_standby", STANDBY)
    assert decision.why == f"standby {STANDBY} is healthy and within RPO (last replayed commit 0.4s ago)"


def test_auto_restores_from_backups_when_the_standby_lags_beyond_the_rpo_and_says_why():
    # Its WAL stops inside the newest archived segment: not caught up by position, so its lag is judged by its replay.
    decision = choose_path("auto", "production", cluster(dead_primary(), standby(replay_age=1200.0, received="0/480000")),
                           900)
    assert decision.path == "pitr"
    assert decision.why.startswith(f"standby unusable: standby {STANDBY} replay lag 1200.0s exceeds the RPO of 900s")


def test_a_standby_behind_the_archive_stopped_receiving_before_the_loss():
    # Replayed everything it received (lag looks small against a 15-minute RPO), but received less than the archive.
    decision = choose_path("auto", "production", cluster(dead_primary(), standby(replay_age=20, received="0/200100")), 900)
    assert decision.path == "pitr"
    assert (f"standby {STANDBY} received WAL only up to 0/200100, but the archive holds segment 000000010000000000000004"
            in decision.why)


def test_while_the_primary_lives_a_usable_standby_streams():
    decision = choose_path("auto", "production", cluster(live_primary(), standby(status=None)), 900)
    assert decision.path == "pitr" and "is not streaming from the primary (receiver not running" in decision.why
    streaming = choose_path("auto", "production", cluster(live_primary(), standby(status="streaming", heard=0.2)), 900)
    assert streaming.path == "promote_standby"


def test_forcing_a_promotion_onto_a_lagging_standby_is_refused_naming_the_lag():
    with pytest.raises(PreconditionFailed) as err:
        choose_path("promote_standby", "production", cluster(dead_primary(), standby(replay_age=1200.0)), 900)
    assert str(err.value).startswith(f"refusing to promote: standby {STANDBY} replay lag 1200.0s exceeds the RPO of 900s")
    with pytest.raises(PreconditionFailed, match="refusing to promote: no standby is known"):
        choose_path("promote_standby", "production", cluster(dead_primary()), 900)


def test_a_scratch_target_always_restores_from_backups_and_never_promotes():
    assert choose_path("auto", "scratch", cluster(live_primary(), standby()), 900).path == "pitr"
    with pytest.raises(PreconditionFailed, match="path promote_standby changes production"):
        choose_path("promote_standby", "scratch", cluster(live_primary(), standby()), 900)


def test_only_an_incident_that_asks_waits_for_a_person():
    assert needs_approval("incident", "wait") is True
    assert needs_approval("incident", "auto") is False and needs_approval("drill", "wait") is False
    with pytest.raises(PreconditionFailed, match="unknown mode 'chaos'"):
        needs_approval("chaos", "wait")


def test_the_approval_shows_the_path_and_its_evidence():
    assessment = cluster(dead_primary(), standby(replay_age=1200.0))
    subject, body = approval_request(choose_path("auto", "production", assessment, 900), assessment, "production", "base-1")
    assert subject == "Postgres failover: pitr (production)"
    assert "It does not answer from here" in body and "last replayed commit 1200.0s ago" in body and "base-1" in body


def test_an_assessment_lists_the_primary_first_and_survives_xcom():
    class FakePlatform:
        def member_addresses(self):
            return [PRIMARY, STANDBY]

        def member_state(self, address):
            return dead_primary() if address == PRIMARY else standby()

    assessment = assess(FakePlatform(), newest_archived_segment="000000010000000000000004", wal_segment_size=MB)
    assert assessment.primary.address == PRIMARY and [m.address for m in assessment.standbys] == [STANDBY]
    assert Assessment.from_dict(assessment.to_dict()) == assessment


@pytest.mark.parametrize(("kwargs", "status"), [
    ({"started": False, "failures": [], "measures_recovery": True, "rto_met": None, "rpo_met": None}, "aborted"),
    ({"started": True, "failures": [], "measures_recovery": False, "rto_met": None, "rpo_met": None, "rejected": True}, "aborted"),
    ({"started": True, "failures": ["x: boom"], "measures_recovery": False, "rto_met": None, "rpo_met": None}, "failed"),
    ({"started": True, "failures": [], "measures_recovery": True, "rto_met": True, "rpo_met": False}, "failed"),
    ({"started": True, "failures": [], "measures_recovery": True, "rto_met": True, "rpo_met": None}, "failed"),
    ({"started": True, "failures": [], "measures_recovery": True, "rto_met": True, "rpo_met": True}, "passed"),
    ({"started": True, "failures": [], "measures_recovery": False, "rto_met": None, "rpo_met": None}, "passed"),
])
def test_the_report_verdict(kwargs, status):
    assert decide_status(**kwargs) == status


def test_errors_say_what_kind_of_failure_they_are():
    assert error_kind(PreconditionFailed("no")) == "refused"
    assert error_kind(RecoveryTimedOut("late")) == "timed_out"
    assert error_kind(WalGapError("gap")) == "recovery_failed"
    assert error_kind(RuntimeError("?")) == "error"


def test_figures_are_rounded_for_people():
    assert human_seconds(4.4321) == "4.4 s" and human_seconds(1800.2, lower_bound=True) == "at least 1800 s"
    assert human_seconds(None) == "not measured"


def test_quarantined_wal_goes_to_the_archive_once_and_a_conflict_is_named(tmp_path: Path):
    from rehearsal.postgres.archiving import hand_quarantine_to_archive

    class FakeStore:
        bucket = "b"

        def __init__(self):
            self.objects: dict[str, bytes] = {}

        def wal_key(self, name):
            return f"c/wal/{name}"

        def head(self, key):
            import hashlib

            data = self.objects.get(key)
            return None if data is None else {"ContentLength": len(data), "ETag": f'"{hashlib.md5(data).hexdigest()}"'}

        def put_bytes(self, key, data, overwrite=False):
            assert overwrite is False and key not in self.objects
            self.objects[key] = data

    class CopyOverSql:
        """The copy's superuser session: its quarantine is on its host, read with pg_ls_dir/pg_read_binary_file."""

        def execute(self, sql, params):
            self.rows = ([(p.name,) for p in sorted(Path(params[0]).iterdir())] if "pg_ls_dir" in sql
                         else [(Path(params[0]).read_bytes(),)])
            return self

        def fetchall(self):
            return self.rows

        def fetchone(self):
            return self.rows[0]

    (tmp_path / "000000020000000000000005").write_bytes(b"segment")
    (tmp_path / "00000002.history").write_bytes(b"1\t0/5000000\tno recovery target specified\n")
    store, conn = FakeStore(), CopyOverSql()
    assert hand_quarantine_to_archive(conn, str(tmp_path), store) == ["00000002.history", "000000020000000000000005"]
    assert hand_quarantine_to_archive(conn, str(tmp_path), store) == []  # idempotent
    store.objects["c/wal/000000020000000000000005"] = b"other bytes"
    with pytest.raises(PreconditionFailed, match="WAL 000000020000000000000005 from .* differs from s3://b/c/wal/"):
        hand_quarantine_to_archive(conn, str(tmp_path), store)


def test_a_late_runbook_run_does_not_turn_a_standby_that_had_everything_into_an_unusable_one():
    # The standby replayed until the primary's last write; the runbook runs an hour later.
    assessment = cluster(dead_primary(), standby(replay_age=3600.4))
    assessment.assessed_at = 10_000.0
    assessment.primary_last_seen = 10_000.0 - 3600.0
    decision = choose_path("auto", "production", assessment, 900)
    assert decision.path == "promote_standby"
    assessment.primary_last_seen = 10_000.0 - 1000.0  # but it stopped replaying 2600 s before the last write
    assert "replay lag 2600.4s exceeds the RPO of 900s" in choose_path("auto", "production", assessment, 900).why


def test_a_restore_into_production_needs_something_to_host_it():
    assessment = cluster(dead_primary(), standby(replay_age=1200.0))
    with pytest.raises(PreconditionFailed, match="no recovery path: standby unusable: .*needs a provisioner"):
        choose_path("auto", "production", assessment, 900, can_restore_into_production=False)
    assert choose_path("auto", "scratch", assessment, 900, can_restore_into_production=False).path == "pitr"


def test_two_members_accepting_writes_are_refused_before_anything_else():
    class SplitBrain:
        def member_addresses(self):
            return [PRIMARY, STANDBY]

        def member_state(self, address):
            return MemberState(address, True, "primary", "accepts writes")

    with pytest.raises(PreconditionFailed, match="accept.s. writes besides 10.0.0.1:5432, where discovery points: two primaries"):
        assess(SplitBrain())


def test_discovery_is_never_pointed_at_the_workers_own_address_or_at_no_known_host():
    from rehearsal.runbooks.postgres_failover import switch_limitation

    known = ["127.42.1.10:5432", "127.42.1.12:5432"]
    assert switch_limitation("127.42.1.12:5432", known, ["10.0.0.5", "worker-1"]) is None
    assert switch_limitation("127.0.0.1:5432", known + ["127.0.0.1:5432"], []).startswith(
        "refusing to point service discovery at 127.0.0.1:5432: that is the Airflow worker's own address")
    assert switch_limitation("10.0.0.5:5432", known + ["10.0.0.5:5432"], ["10.0.0.5"]).startswith(
        "refusing to point service discovery at 10.0.0.5:5432: that is the Airflow worker's own address")
    assert switch_limitation("127.42.1.99:5432", known, []) == (
        "refusing to point service discovery at 127.42.1.99:5432: it is not a known database host (members and "
        "provisioned hosts: 127.42.1.10:5432, 127.42.1.12:5432)")


def test_a_recovery_that_left_something_undone_is_degraded_and_a_false_alarm_is_not_applicable():
    from rehearsal.report import decide_status

    common = {"started": True, "measures_recovery": False, "rto_met": None, "rpo_met": None}
    assert decide_status(failures=[], **common) == "passed"
    assert decide_status(failures=[], degraded=True, **common) == "degraded"
    assert decide_status(failures=["x: boom"], degraded=True, **common) == "failed"
    assert decide_status(failures=[], not_applicable=True, **common) == "not_applicable"
    assert decide_status(failures=[], degraded=True, called_off=True, **common) == "skipped"
    assert decide_status(failures=[], measures_recovery=True, rto_met=True, rpo_met=False, started=True,
                         degraded=True) == "failed"


def test_a_caught_up_standby_on_a_quiet_database_is_promoted_however_old_its_last_commit():
    """No write for 20 minutes (no heartbeat writer in production): its last replayed commit is old, but it holds
    every byte of WAL the archive holds, and more. Judged by WAL position, not by the clock."""
    quiet = standby(replay_age=1200.0, received="0/500100")  # past the end of the newest archived segment (0/500000)
    decision = choose_path("auto", "production", cluster(dead_primary(), quiet), 900)
    assert (decision.path, decision.standby) == ("promote_standby", STANDBY)
    assert decision.why == (f"standby {STANDBY} is caught up: received and replayed past the newest archived segment "
                            "000000010000000000000004 (its last replayed commit was 1200s ago)")
    alive = MemberState(PRIMARY, True, "primary", "accepts writes", lineage="7/1", lsn="0/500100")
    streaming = StandbyState(STANDBY, True, "streaming", 0.5, 1200.0, "0/500100", "0/500100")
    member = MemberState(STANDBY, True, "standby", streaming.describe(), standby=asdict(streaming))
    planned = choose_path("auto", "production", cluster(alive, member), 900)
    assert planned.path == "promote_standby" and "up to the primary's current WAL position 0/500100" in planned.why


def test_forcing_a_promotion_onto_an_unusable_standby_needs_a_person_who_accepts_the_named_risk():
    lagging = cluster(dead_primary(), standby(replay_age=1200.0, received="0/480000"))
    with pytest.raises(PreconditionFailed, match="a person may accept that risk at the approval"):
        choose_path("promote_standby", "production", lagging, 900)
    forced = choose_path("promote_standby", "production", lagging, 900, person_approves=True)
    assert (forced.path, forced.standby) == ("promote_standby", STANDBY)
    assert forced.risk.startswith(f"promoting {STANDBY} may lose more than the RPO: standby {STANDBY} replay lag 1200.0s")
    subject, body = approval_request(forced, lagging, "production", None)
    assert subject.endswith("FORCED, read the risk") and f"**Risk you accept by approving:** {forced.risk}" in body
