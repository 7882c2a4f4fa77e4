"""Scenario B's decisions, as plain functions: when the damage happened, which backup and target to restore,
whether the damage is gone, and which writes the restore lost (and so must be repaired)."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

from rehearsal.errors import PreconditionFailed, RehearsalError

DAMAGING_ACTIONS = ("bulk_update", "bulk_delete", "drop_table")
MUTATIONS = ("deploy", "scale", "update_config")
BEFORE_DAMAGE = timedelta(milliseconds=1)  # the restore stops this long before the damage


class DriftNotRepaired(RehearsalError):
    """A drift item could not be repaired; the message names each."""

    kind = "recovery_failed"


def parse_time(text: str, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise PreconditionFailed(f"{what} {text!r} is not an ISO-8601 time") from None
    if moment.tzinfo is None:
        raise PreconditionFailed(f"{what} {text!r} needs a timezone (e.g. 2026-11-29T03:12:00+00:00)")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    actor: str
    action: str
    detail: dict
    created_at: datetime

    @classmethod
    def from_row(cls, row: tuple) -> AuditEntry:
        id_, actor, action, detail, created_at = row
        try:
            parsed = json.loads(detail) if isinstance(detail, str) else dict(detail or {})
        except ValueError:
            parsed = {"text": detail}
        return cls(int(id_), actor, action, parsed if isinstance(parsed, dict) else {"value": parsed},
                   created_at.astimezone(UTC))

    def describe(self) -> str:
        what = self.detail.get("table", "")
        rows = f" ({self.detail['rows']} rows)" if "rows" in self.detail else ""
        return f"{self.action} {what}{rows} by {self.actor} at {self.created_at.isoformat()} (audit #{self.id})"

    def to_dict(self) -> dict:
        return {**asdict(self), "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class CorruptionPoint:
    time: datetime  # when the damage happened
    recovery_target: datetime  # what the restore stops at: just before it
    how: str  # given by the person, or found in the audit log (which entries)
    damage: list[dict] = field(default_factory=list)  # the damaging audit entries known

    def to_dict(self) -> dict:
        return {"time": self.time.isoformat(), "recovery_target": self.recovery_target.isoformat(), "how": self.how,
                "damage": self.damage}


def corruption_point(given: str | None, audit: list[AuditEntry], now: datetime) -> CorruptionPoint:
    """The corruption time: as given (then the audit's damaging entries from it on are listed), or the earliest
    damaging statement the audit triggers recorded (bulk UPDATE/DELETE, DROP TABLE).

    :raises PreconditionFailed: a given time in the future or unparseable; none given and the audit log records
        no damaging statement
    """
    damaging = sorted((e for e in audit if e.action in DAMAGING_ACTIONS), key=lambda e: e.created_at)
    if given not in (None, "", "None"):
        moment = parse_time(given, "corruption_time")
        if moment > now:
            raise PreconditionFailed(f"corruption_time {moment.isoformat()} is in the future (now {now.isoformat()})")
        after = [e for e in damaging if e.created_at >= moment]
        how = f"given by the person who triggered the run; the audit log records {len(after)} damaging statement(s) since"
        return CorruptionPoint(moment, moment - BEFORE_DAMAGE, how, [e.to_dict() for e in after])
    if not damaging:
        raise PreconditionFailed("corruption_time was not given and the audit log records no damaging statement "
                                 f"({', '.join(DAMAGING_ACTIONS)}) in its window: give corruption_time")
    first = damaging[0]
    how = (f"found in the audit log: the earliest of {len(damaging)} damaging statement(s) recorded by the audit "
           f"triggers, {first.describe()}")
    return CorruptionPoint(first.created_at, first.created_at - BEFORE_DAMAGE, how, [e.to_dict() for e in damaging])


@dataclass(frozen=True)
class BackupChoice:
    backup_id: str
    stop_time: str
    why: str
    rejected: list[dict]

    def to_dict(self) -> dict:
        return asdict(self)


def last_good_backup(backups: Iterable[tuple[str, datetime]], target: datetime,
                     verify: Callable[[str], str | None]) -> BackupChoice:
    """The newest base backup that finished before ``target`` and verifies (``verify`` returns None, or why not).

    :raises PreconditionFailed: no backup finished before the target (names the oldest), or none of those verifies
        (names each and why)
    """
    ordered = sorted(backups, key=lambda b: b[1])
    if not ordered:
        raise PreconditionFailed("no base backup exists: nothing to restore from")
    before = [b for b in ordered if b[1] <= target]
    if not before:
        oldest_id, oldest_at = ordered[0]
        raise PreconditionFailed(f"the corruption (restore target {target.isoformat()}) is older than the oldest base "
                                 f"backup, {oldest_id}, finished {oldest_at.isoformat()}: no backup predates the damage")
    rejected: list[dict] = []
    for backup_id, stop in reversed(before):
        problem = verify(backup_id)
        if problem is None:
            newer = len([b for b in ordered if b[1] > target])
            why = (f"the newest of {len(before)} base backup(s) finished before the restore target that verifies"
                   + (f" ({len(rejected)} newer one(s) failed verification)" if rejected else "")
                   + (f"; {newer} backup(s) finished after the damage and were not considered" if newer else ""))
            return BackupChoice(backup_id, stop.isoformat(), why, rejected)
        rejected.append({"backup_id": backup_id, "stop_time": stop.isoformat(), "why": problem})
    raise PreconditionFailed("no base backup before the damage verifies: "
                             + "; ".join(f"{r['backup_id']}: {r['why']}" for r in rejected))


def damage_gone(point: CorruptionPoint, restored_tables: set[str], restored_damaging: list[AuditEntry]) -> list[str]:
    """What of the damage is still there in the restored cluster (empty: gone). A dropped table must exist again;
    no damaging statement at or after the corruption point may have been replayed (its own audit row would be)."""
    problems = []
    for entry in point.damage:
        table = entry["detail"].get("table")
        if entry["action"] == "drop_table" and table and table not in restored_tables:
            problems.append(f"table {table} (dropped at {entry['created_at']}) is missing from the restored cluster")
    for entry in restored_damaging:
        if entry.created_at >= point.time - BEFORE_DAMAGE:
            problems.append(f"the restored cluster replayed {entry.describe()}")
    return problems


def lost_writes(captured: list[dict], present: set[str]) -> list[dict]:
    """The acknowledged mutations captured from the damaged cluster that the restored one lacks (by request id)."""
    return [w for w in captured if w["request_id"] not in present]


@dataclass
class CorruptionRpo:
    rpo_seconds: float
    lost_before: list[dict]  # acknowledged before the fault and missing from what the recovery gave back: data loss
    after_corruption: int  # acknowledged after it: lost by the restore by design, to be repaired as drift
    acks_considered: int
    lost_count: int = 0
    reapplied_by_drift_repair: int = 0  # lost by the recovery, put back afterwards by drift repair: still lost by it
    history_count: int = 0  # missing already when the drill's guard ran: an earlier fault's loss, not this drill's
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def measure_corruption_rpo(acks: list[dict], corruption_time: float, present: set[str], window: float,
                           history: set[str] | frozenset = frozenset(),
                           reapplied: set[str] | frozenset = frozenset()) -> CorruptionRpo:
    """RPO of a recovery from a fault at ``corruption_time``: the acknowledged writes of the ``window`` seconds before
    it that the recovered cluster lacked; the RPO is the span from the oldest of them to the fault (0 when none is
    missing). A drill answers for its own fault only:

    - ``history``: request ids already missing when the drill's guard ran (an earlier drill's loss): listed apart,
      never counted;
    - ``reapplied``: request ids drift repair re-applied after the recovery: present now, but the recovery had lost
      them, so they count (a restore that stopped early is not hidden by the repair), and are said apart.

    :param acks: the load's log lines with ``t_ack`` set (acknowledged writes)
    """
    considered = [a for a in acks if a.get("t_ack") and corruption_time - window <= a["t_ack"] < corruption_time]
    earlier = [a for a in considered if a["request_id"] in history]
    own = [a for a in considered if a["request_id"] not in history]
    lost = [a for a in own if a["request_id"] not in present or a["request_id"] in reapplied]
    after = [a for a in acks if a.get("t_ack") and a["t_ack"] >= corruption_time]
    rpo = corruption_time - min(a["t_ack"] for a in lost) if lost else 0.0
    return CorruptionRpo(rpo, lost[:20], len(after), len(own), lost_count=len(lost),
                         reapplied_by_drift_repair=sum(1 for a in lost if a["request_id"] in reapplied),
                         history_count=len(earlier), history=earlier[:20])


def present_request_ids(conn, ids: list[str]) -> set[str]:
    """Which of these acknowledged writes (by request id) the database holds: its audit log records every one."""
    if not ids:
        return set()
    rows = conn.execute("SELECT detail::jsonb->>'request_id' FROM audit_log WHERE detail::jsonb->>'request_id' = ANY(%s)",
                        (list(ids),)).fetchall()
    return {r[0] for r in rows}


def rpo_baseline(acks: list[dict], present: set[str], taken_at: float, window: float) -> dict:
    """What was already lost when a drill's guard ran: acknowledged writes of the window before it the database does
    not hold. A later measurement lists them as the environment's history, never as the drill's own loss."""
    checked = [a for a in acks if a.get("t_ack") and taken_at - window <= a["t_ack"] < taken_at]
    missing = [a["request_id"] for a in checked if a["request_id"] not in present]
    return {"taken_at": taken_at, "window_seconds": window, "acks_checked": len(checked), "missing": missing[:5000]}


def check_items(items: list[dict]) -> None:
    """Every drift item repaired, or the run fails naming each that was not."""
    failed = [i for i in items if i["outcome"] != "repaired" and i["outcome"] != "already_present"]
    if failed:
        raise DriftNotRepaired(f"{len(failed)} drift item(s) not repaired: "
                               + "; ".join(f"{i['subject']}: {i['outcome']} ({i.get('why', '')})" for i in failed[:10]))

