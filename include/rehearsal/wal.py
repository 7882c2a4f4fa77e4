"""WAL arithmetic: LSNs, segment names, timelines, and the continuity of an archive."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
HISTORY_RE = re.compile(r"^([0-9A-F]{8})\.history$")


def parse_lsn(text: str) -> int:
    hi, _, lo = text.strip().partition("/")
    if not _:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(hi, 16) << 32) | int(lo, 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segments_per_id(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segno_of(lsn: int, segment_size: int) -> int:
    return lsn // segment_size


def segment_name(timeline: int, segno: int, segment_size: int) -> str:
    per = segments_per_id(segment_size)
    return f"{timeline:08X}{segno // per:08X}{segno % per:08X}"


def parse_segment_name(name: str, segment_size: int) -> tuple[int, int] | None:
    """(timeline, segno) for a WAL segment file name, or None for anything else."""
    match = SEGMENT_RE.match(name)
    if not match:
        return None
    tli, hi, lo = (int(g, 16) for g in match.groups())
    return tli, hi * segments_per_id(segment_size) + lo


def parse_history(text: str) -> list[tuple[int, int]]:
    """Lines of a timeline history file: (parent timeline, switch LSN), oldest first."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        entries.append((int(parts[0]), parse_lsn(parts[1])))
    return entries


@dataclass
class ContinuityResult:
    ok: bool
    first_segment: str
    last_segment: str | None
    checked: int
    missing: list[str] = field(default_factory=list)
    timeline_path: list[int] = field(default_factory=list)

    def describe(self) -> str:
        if self.ok:
            return f"{self.checked} segments continuous from {self.first_segment} to {self.last_segment}"
        shown = ", ".join(self.missing[:5]) + (" ..." if len(self.missing) > 5 else "")
        return f"{len(self.missing)} segment(s) missing between {self.first_segment} and {self.last_segment}: {shown}"


def check_continuity(segment_names: list[str], histories: dict[int, str], start_lsn: int, start_timeline: int,
                     segment_size: int) -> ContinuityResult:
    """Every segment needed to replay from ``start_lsn`` to the newest archived one, across timelines.

    :param segment_names: names of archived objects (non-segment names are ignored)
    :param histories: timeline -> content of its ``.history`` file
    """
    present: dict[int, set[int]] = {}
    for name in segment_names:
        parsed = parse_segment_name(name, segment_size)
        if parsed:
            present.setdefault(parsed[0], set()).add(parsed[1])
    start_seg = segno_of(start_lsn, segment_size)
    first_name = segment_name(start_timeline, start_seg, segment_size)

    # The newest timeline that descends from start_timeline decides which path replay follows.
    chains = {start_timeline: [(start_timeline, None)]}
    for tli, text in histories.items():
        entries = parse_history(text)
        parents = [p for p, _ in entries]
        if start_timeline in parents:
            idx = parents.index(start_timeline)
            chains[tli] = [(p, lsn) for p, lsn in entries[idx:]] + [(tli, None)]
    newest = max(t for t in chains if t in present or t == start_timeline)
    chain = chains[newest]

    missing: list[str] = []
    checked = 0
    begin = start_seg
    last_name = None
    for tli, switch_lsn in chain:
        if switch_lsn is not None:
            end = segno_of(switch_lsn, segment_size) - 1
        else:
            have = [s for s in present.get(tli, ()) if s >= begin]
            end = max(have) if have else begin - 1
        for seg in range(begin, end + 1):
            checked += 1
            if seg not in present.get(tli, ()):
                missing.append(segment_name(tli, seg, segment_size))
            last_name = segment_name(tli, seg, segment_size)
        if switch_lsn is not None:
            begin = max(begin, segno_of(switch_lsn, segment_size))
    if checked == 0:
        missing.append(first_name)
    return ContinuityResult(ok=not missing, first_segment=first_name, last_segment=last_name, checked=checked,
                            missing=missing, timeline_path=[t for t, _ in chain])
