from __future__ import annotations

import pytest

from rehearsal.wal import check_continuity, format_lsn, parse_lsn, parse_segment_name, segment_name

MB = 1024 * 1024


def names(tli: int, segnos) -> list[str]:
    return [segment_name(tli, s, MB) for s in segnos]


def test_lsn_round_trip_and_segment_names():
    assert parse_lsn("0/2D00028") == 0x2D00028
    assert format_lsn(parse_lsn("1A/FF000060")) == "1A/FF000060"
    # 1 MB segments: 4096 per xlogid
    assert segment_name(1, 4097, MB) == "000000010000000100000001"
    assert parse_segment_name("000000010000000100000001", MB) == (1, 4097)
    assert parse_segment_name("000000010000000000000001.partial", MB) is None


def test_continuous_archive_passes():
    result = check_continuity(names(1, range(0x2D, 0x40)), {}, parse_lsn("0/2D00028"), 1, MB)
    assert result.ok
    assert result.checked == 0x40 - 0x2D
    assert result.describe() == "19 segments continuous from 00000001000000000000002D to 00000001000000000000003F"


def test_a_segment_deleted_from_the_middle_is_named():
    segs = [s for s in range(0x2D, 0x40) if s != 0x33]
    result = check_continuity(names(1, segs), {}, parse_lsn("0/2D00028"), 1, MB)
    assert not result.ok
    assert result.missing == ["000000010000000000000033"]
    assert "1 segment(s) missing" in result.describe() and "000000010000000000000033" in result.describe()


def test_missing_first_segment_of_the_backup():
    result = check_continuity(names(1, range(0x2E, 0x30)), {}, parse_lsn("0/2D00028"), 1, MB)
    assert result.missing == ["00000001000000000000002D"]


def test_empty_archive_names_the_first_needed_segment():
    result = check_continuity([], {}, parse_lsn("0/2D00028"), 1, MB)
    assert not result.ok and result.missing == ["00000001000000000000002D"]


def test_timeline_switch_is_followed():
    # timeline 1 up to 0/35xxxxxx, then timeline 2 starts in segment 0x35 (after a promotion)
    history = {2: "1\t0/35000A0\tno recovery target specified\n"}
    archived = names(1, range(0x2D, 0x36)) + names(2, range(0x35, 0x3A))
    result = check_continuity(archived, history, parse_lsn("0/2D00028"), 1, MB)
    assert result.ok, result.describe()
    assert result.timeline_path == [1, 2]
    assert result.last_segment == "000000020000000000000039"


def test_gap_on_the_new_timeline_is_named():
    history = {2: "1\t0/35000A0\tpromotion\n"}
    archived = names(1, range(0x2D, 0x35)) + names(2, [0x35, 0x36, 0x38])
    result = check_continuity(archived, history, parse_lsn("0/2D00028"), 1, MB)
    assert result.missing == ["000000020000000000000037"]


def test_a_pitr_that_stopped_before_the_newest_archived_segment_is_named():
    from datetime import UTC, datetime

    from rehearsal.backups.manifest import BackupManifest
    from rehearsal.errors import WalGapError
    from rehearsal.postgres.restore import check_reached_end
    from rehearsal.wal import check_continuity, format_lsn

    size = 1024 * 1024
    manifest = BackupManifest("base-1", "base_backup", "controlplane", datetime.now(UTC), datetime.now(UTC), "18.6", 18,
                              "v5", [], start_lsn=format_lsn(3 * size), stop_lsn=format_lsn(3 * size + 100), timeline=1,
                              wal_segment_size=size)
    names = [f"00000001000000000000000{i}" for i in range(3, 9)]
    continuity = check_continuity(names, {}, 3 * size, 1, size)
    check_reached_end(continuity, format_lsn(8 * size + 4096), manifest.backup_id, size)  # replay reached the last segment: fine
    with pytest.raises(WalGapError) as err:
        check_reached_end(continuity, format_lsn(5 * size + 40), manifest.backup_id, size)
    assert str(err.value) == ("PITR from base backup base-1 stopped early: replay ended at 0/500028 (segment "
                              "000000010000000000000005) before the newest archived segment 000000010000000000000008")
