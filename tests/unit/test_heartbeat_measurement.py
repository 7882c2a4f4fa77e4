from __future__ import annotations

from pathlib import Path

import pytest

from rehearsal.heartbeat import Ack, measure_recovery, read_acks, write_ack, write_error

OLD, NEW = "127.0.0.1:5001", "127.0.0.1:5002"


def acks_every(start: float, stop: float, step: float, endpoint: str, first_seq: int) -> list[Ack]:
    out, t, seq = [], start, first_seq
    while t <= stop + 1e-9:
        out.append(Ack(seq, round(t, 3), endpoint))
        t += step
        seq += 1
    return out


def test_rto_is_fault_to_first_ack_on_the_recovered_primary_and_rpo_the_lost_span():
    before = acks_every(100.0, 110.0, 0.5, OLD, 1)  # seq 1..21, last at 110.0
    after = acks_every(117.25, 120.0, 0.5, NEW, 100)
    fault = 110.2
    lost = {19, 20, 21}  # acknowledged at 109.0, 109.5, 110.0 but not replicated
    m = measure_recovery(before + after, fault, NEW, lambda seqs: {s for s in seqs if s not in lost})
    assert m.rto_seconds == pytest.approx(117.25 - 110.2)
    assert m.rpo_seconds == pytest.approx(110.0 - 108.5)  # newest survivor at 108.5
    assert m.missing_acked == 3 and m.acked_before_fault == 21
    assert m.first_ack_after_recovery.seq == 100


def test_nothing_lost_means_rpo_zero():
    before = acks_every(100.0, 110.0, 0.5, OLD, 1)
    m = measure_recovery(before + [Ack(500, 115.0, NEW)], 110.2, NEW, lambda seqs: set(seqs))
    assert m.rpo_seconds == 0.0 and m.rto_seconds == pytest.approx(4.8)


def test_acks_on_the_old_primary_after_the_fault_do_not_count_as_recovery():
    before = acks_every(100.0, 110.0, 0.5, OLD, 1)
    late_old = [Ack(50, 111.0, OLD)]  # e.g. a hung writer flushed late: not the recovered primary
    m = measure_recovery(before + late_old, 110.2, NEW, lambda seqs: set(seqs))
    assert m.rto_seconds is None and m.first_ack_after_recovery is None


def test_writer_connection_cut_mid_drill_is_measured_from_what_was_acknowledged(tmp_path: Path):
    log = tmp_path / "heartbeat.log"
    with log.open("w") as fh:
        for a in acks_every(100.0, 105.0, 0.5, OLD, 1):
            write_ack(fh, a.seq, a.acked_at, a.endpoint)
        write_error(fh, 105.2, OLD, "OperationalError: server closed the connection unexpectedly\tsecond line")
        write_error(fh, 105.4, "?", "OperationalError: connection refused")
        write_ack(fh, 40, 108.0, NEW)
    acks = read_acks(log)
    assert len(acks) == 12
    m = measure_recovery(acks, 105.1, NEW, lambda seqs: {s for s in seqs if s <= 9})
    assert m.rto_seconds == pytest.approx(2.9)
    assert m.rpo_seconds == pytest.approx(105.0 - 104.0)


def test_no_heartbeat_before_the_fault_means_rpo_not_measured():
    m = measure_recovery([Ack(1, 200.0, NEW)], 150.0, NEW, lambda seqs: set(seqs))
    assert m.rpo_seconds is None
