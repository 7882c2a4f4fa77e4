from __future__ import annotations

from pathlib import Path

import pytest

from rehearsal.errors import EvidenceError
from rehearsal.heartbeat import Ack, measure_recovery, read_acks, write_ack, write_error

OLD, NEW = "127.0.0.1:5001", "127.0.0.1:5002"
LINEAGE = "7400000000000000001/3"
WINDOW = 1800.0  # twice the control plane's 15-minute RPO


def acks_every(start: float, stop: float, step: float, endpoint: str, first_seq: int, lineage: str | None = LINEAGE) -> list[Ack]:
    out, t, seq = [], start, first_seq
    while t <= stop + 1e-9:
        out.append(Ack(seq, round(t, 3), endpoint, lineage))
        t += step
        seq += 1
    return out


def test_rto_is_fault_to_first_ack_on_the_recovered_primary_and_rpo_the_lost_span():
    before = acks_every(100.0, 110.0, 0.5, OLD, 1)  # seq 1..21, last at 110.0
    after = acks_every(117.25, 120.0, 0.5, NEW, 100, "7400000000000000001/4")
    fault = 110.2
    lost = {19, 20, 21}  # acknowledged at 109.0, 109.5, 110.0 but not replicated
    m = measure_recovery(before + after, fault, NEW, lambda seqs: {s for s in seqs if s not in lost}, WINDOW,
                         lineage=LINEAGE)
    assert m.rto_seconds == pytest.approx(117.25 - 110.2)
    assert m.rpo_seconds == pytest.approx(110.0 - 108.5)  # newest survivor at 108.5
    assert m.missing_acked == 3 and m.acked_before_fault == 21
    assert m.first_ack_after_recovery.seq == 100 and not m.rpo_is_lower_bound


def test_nothing_lost_means_rpo_zero():
    before = acks_every(100.0, 110.0, 0.5, OLD, 1)
    m = measure_recovery(before + [Ack(500, 115.0, NEW)], 110.2, NEW, lambda seqs: set(seqs), WINDOW)
    assert m.rpo_seconds == 0.0 and m.rto_seconds == pytest.approx(4.8)


def test_acks_on_the_old_primary_after_the_fault_do_not_count_as_recovery():
    before = acks_every(100.0, 110.0, 0.5, OLD, 1)
    late_old = [Ack(50, 111.0, OLD)]  # e.g. a hung writer flushed late: not the recovered primary
    m = measure_recovery(before + late_old, 110.2, NEW, lambda seqs: set(seqs), WINDOW)
    assert m.rto_seconds is None and m.first_ack_after_recovery is None


def test_writer_connection_cut_mid_drill_is_measured_from_what_was_acknowledged(tmp_path: Path):
    log = tmp_path / "heartbeat.log"
    with log.open("w") as fh:
        for a in acks_every(100.0, 105.0, 0.5, OLD, 1):
            write_ack(fh, a.seq, a.acked_at, a.endpoint, a.lineage)
        write_error(fh, 105.2, OLD, "OperationalError: server closed the connection unexpectedly\tsecond line")
        write_error(fh, 105.4, "?", "OperationalError: connection refused")
        write_ack(fh, 40, 108.0, NEW, "7400000000000000001/4")
    acks = read_acks(log)
    assert len(acks) == 12 and acks[0].lineage == LINEAGE
    m = measure_recovery(acks, 105.1, NEW, lambda seqs: {s for s in seqs if s <= 9}, WINDOW, lineage=LINEAGE)
    assert m.rto_seconds == pytest.approx(2.9)
    assert m.rpo_seconds == pytest.approx(105.0 - 104.0)


def test_no_heartbeat_before_the_fault_means_rpo_not_measured():
    m = measure_recovery([Ack(1, 200.0, NEW)], 150.0, NEW, lambda seqs: set(seqs), WINDOW)
    assert m.rpo_seconds is None


def test_a_loss_longer_than_the_old_ten_minute_window_is_reported_in_full():
    # The standby stopped replaying 1000 s before the fault; everything since was lost with the primary.
    fault = 10_000.0
    acks = acks_every(fault - 1700, fault, 1.0, OLD, 1)
    m = measure_recovery(acks, fault, NEW, lambda seqs: {s for s in seqs if s <= 701}, WINDOW, lineage=LINEAGE)
    assert m.rpo_seconds == pytest.approx(1000.0)  # the old 600 s window reported about 600 s and passed 900 s
    assert not m.rpo_is_lower_bound and m.missing_acked == 1000


def test_when_nothing_in_the_window_survives_the_rpo_is_at_least_the_window():
    fault = 10_000.0
    acks = acks_every(fault - 3600, fault, 1.0, OLD, 1)  # an hour of writes, all lost
    m = measure_recovery(acks, fault, NEW, lambda seqs: set(), WINDOW, lineage=LINEAGE)
    assert m.rpo_is_lower_bound and m.rpo_seconds >= WINDOW
    assert m.acked_before_fault == 1801  # only the window is examined


def test_acks_of_a_destroyed_database_are_not_evidence_and_losses_never_read_as_rpo_zero():
    # A heartbeat log that outlived its sandbox: 846 acks of the old database, then the new one's.
    stale = acks_every(1000.0, 1084.5, 0.1, "127.0.0.1:5999", 1, "7399999999999999999/1")[:846]
    fresh = acks_every(1200.0, 1210.0, 0.5, OLD, 5000)
    surviving = {a.seq for a in fresh}  # the new database has all of its own writes, none of the old one's
    m = measure_recovery(stale + fresh, 1210.1, NEW, lambda seqs: set(seqs) & surviving, WINDOW, lineage=LINEAGE)
    assert (m.rpo_seconds, m.missing_acked, m.other_lineage_acks) == (0.0, 0, 846)
    # Without the lineage the old acks count as lost, and the RPO says so (it used to clamp them to 0).
    unfiltered = measure_recovery(stale + fresh, 1210.1, NEW, lambda seqs: set(seqs) & surviving, WINDOW)
    assert unfiltered.missing_acked == 846 and unfiltered.rpo_seconds > 0


def test_a_hole_older_than_the_newest_survivor_still_counts():
    acks = acks_every(100.0, 110.0, 0.5, OLD, 1)
    m = measure_recovery(acks, 110.2, NEW, lambda seqs: {s for s in seqs if s not in (5, 6)}, WINDOW, lineage=LINEAGE)
    assert m.missing_acked == 2 and m.rpo_seconds == pytest.approx(1.0)  # seq 4 at 101.5 survived, seq 6 at 102.5 lost


def test_writes_acknowledged_before_the_kill_took_effect_count_as_before_the_fault():
    acks = acks_every(100.0, 110.6, 0.2, OLD, 1)  # the primary kept acknowledging until the kill at 110.6
    fault, killed = 110.0, 110.65
    lost = {a.seq for a in acks if a.acked_at > 109.5}
    m = measure_recovery(acks, fault, NEW, lambda seqs: {s for s in seqs if s not in lost}, WINDOW,
                         fault_effective_at=killed, lineage=LINEAGE)
    assert m.missing_acked == len(lost) and m.last_ack_before_fault.acked_at == pytest.approx(110.6)
    assert m.rpo_seconds == pytest.approx(110.6 - 109.4)
    before_fix = measure_recovery(acks, fault, NEW, lambda seqs: {s for s in seqs if s not in lost}, WINDOW, lineage=LINEAGE)
    assert before_fix.missing_acked < m.missing_acked  # the writes between fault and kill would vanish


def test_a_first_acknowledgement_before_the_fault_is_rejected_by_name():
    acks = acks_every(100.0, 110.0, 0.5, OLD, 1)
    with pytest.raises(EvidenceError) as err:
        measure_recovery(acks, 110.2, NEW, lambda seqs: set(seqs), WINDOW, first_ack=Ack(-1, 109.7, NEW))
    assert str(err.value) == (f"the first acknowledged write on the recovered primary {NEW} (seq -1 at 109.700) "
                              "predates the fault at 110.200 by 0.500s: it cannot mark the end of the outage")


def test_a_write_of_the_lost_primarys_history_never_marks_the_recovery_even_at_the_same_address():
    acks = acks_every(100.0, 110.5, 0.5, OLD, 1)  # the lost primary kept acknowledging until the kill at 110.6
    late = Ack(99, 110.55, OLD, LINEAGE)  # same address (a VIP, say), same lineage: still the lost primary
    recovered = Ack(200, 114.0, OLD, "7400000000000000001/4")
    m = measure_recovery(acks + [late, recovered], 110.0, OLD, lambda seqs: set(seqs), WINDOW, fault_effective_at=110.6,
                         lineage=LINEAGE)
    assert m.first_ack_after_recovery == recovered and m.rto_seconds == pytest.approx(4.0)


def test_a_writer_silent_before_the_fault_cannot_report_a_clean_rpo():
    acks = acks_every(100.0, 104.0, 0.5, OLD, 1)  # the writer hung 6 s before the fault: all it wrote survived
    m = measure_recovery(acks, 110.0, NEW, lambda seqs: set(seqs), WINDOW, lineage=LINEAGE)
    assert m.rpo_is_lower_bound and m.rpo_seconds == pytest.approx(6.0)
