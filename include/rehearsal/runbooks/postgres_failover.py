"""The postgres-failover runbook's decisions, without Airflow: assess the cluster, choose the path, say why.

The runbook works from what it can see in an incident: a primary that may be dead, standbys that may be stale,
the archive. It refuses only what is unsafe, always with the reason.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from rehearsal.errors import PreconditionFailed
from rehearsal.platform import MemberState, Platform
from rehearsal.postgres.failover import standby_limitation
from rehearsal.wal import parse_lsn, parse_segment_name, segno_of

MODES = ("incident", "drill")
PATHS = ("auto", "promote_standby", "pitr")
TARGETS = ("production", "scratch")
APPROVALS = ("wait", "auto")
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024


@dataclass
class Assessment:
    """Which members answer, their roles, the standbys' lag, and what the archive holds."""

    primary: MemberState  # the member discovery points at
    standbys: list[MemberState] = field(default_factory=list)
    newest_archived_segment: str | None = None
    wal_segment_size: int = DEFAULT_SEGMENT_SIZE
    newest_base_backup: str | None = None
    assessed_at: float = 0.0
    primary_last_seen: float | None = None  # newest evidence of the primary writing: archived WAL, heartbeat acks

    @property
    def primary_accepts_writes(self) -> bool:
        return self.primary.role == "primary"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Assessment:
        data = dict(data)
        data["primary"] = MemberState(**data["primary"])
        data["standbys"] = [MemberState(**m) for m in data.get("standbys", [])]
        return cls(**data)

    def describe(self) -> str:
        standbys = "; ".join(f"{m.address} {m.role} ({m.detail})" for m in self.standbys) or "none known"
        return (f"primary {self.primary.address}: {self.primary.role} ({self.primary.detail}); standbys: {standbys}; "
                f"newest archived WAL {self.newest_archived_segment or 'none'}; newest base backup "
                f"{self.newest_base_backup or 'none'}")


def assess(platform: Platform, newest_archived_segment: str | None = None, wal_segment_size: int | None = None,
           newest_base_backup: str | None = None, primary_last_seen: float | None = None) -> Assessment:
    """:raises PreconditionFailed: another member than the one discovery points at also accepts writes"""
    addresses = platform.member_addresses()
    members = [platform.member_state(a) for a in addresses]
    others = [m.address for m in members[1:] if m.role == "primary"]
    if others:
        raise PreconditionFailed(f"{', '.join(others)} accept(s) writes besides {members[0].address}, where discovery points: "
                                 "two primaries; resolve that by hand before any failover")
    return Assessment(primary=members[0], standbys=[m for m in members[1:] if m.role in ("standby", "unreachable")],
                      newest_archived_segment=newest_archived_segment,
                      wal_segment_size=wal_segment_size or DEFAULT_SEGMENT_SIZE,
                      newest_base_backup=newest_base_backup, assessed_at=time.time(), primary_last_seen=primary_last_seen)


def wal_caught_up(state, assessment: Assessment) -> str | None:
    """How the standby is known to hold every write there is to lose, by WAL position (not by the clock), or None.

    Its received and replayed positions reach the primary's current LSN (read while it lives), or, with the primary
    gone, lie past the end of the newest archived segment: then however long ago its last commit was (a quiet
    database writes no commit for hours), promoting it loses nothing the archive would have given back."""
    if not state.replayed_lsn:
        return None
    received, replayed = parse_lsn(state.received_lsn or state.replayed_lsn), parse_lsn(state.replayed_lsn)
    primary_lsn = assessment.primary.lsn if assessment.primary_accepts_writes else None
    if primary_lsn:
        if min(received, replayed) >= parse_lsn(primary_lsn):
            return f"received and replayed up to the primary's current WAL position {primary_lsn}"
        return None
    newest = parse_segment_name(assessment.newest_archived_segment or "", assessment.wal_segment_size)
    if newest and min(received, replayed) >= (newest[1] + 1) * assessment.wal_segment_size:
        return f"received and replayed past the newest archived segment {assessment.newest_archived_segment}"
    return None


def standby_usability(member: MemberState, assessment: Assessment, max_lag_seconds: float) -> str | None:
    """Why this standby must not be promoted, or None.

    A standby caught up by WAL position (``wal_caught_up``) is usable however old its last commit; otherwise the lag
    rule (``standby_limitation``). And a standby that received less WAL than the archive holds stopped receiving
    before the primary was lost; a restore from the archive would lose less.
    """
    if member.role != "standby" or member.standby is None:
        return f"standby {member.address} is {member.role}: {member.detail}"
    state = member.standby_state()
    if wal_caught_up(state, assessment):
        if assessment.primary_accepts_writes:  # it must also be following this primary now
            return standby_limitation(state, float("inf"), primary_alive=True)
        return None
    if not assessment.primary_accepts_writes and assessment.primary_last_seen and state.replay_age is not None:
        # The primary is gone: what a promotion loses is what it committed after the standby's last replayed commit,
        # up to when it was last seen writing. Measured from then, not from now, so a late runbook run does not
        # turn a standby that had everything into an unusable one.
        last_replayed = assessment.assessed_at - state.replay_age
        lag = max(0.0, assessment.primary_last_seen - last_replayed)
        if lag > max_lag_seconds:
            return (f"standby {member.address} replay lag {lag:.1f}s exceeds the RPO of {max_lag_seconds:g}s (its last "
                    f"replayed commit is {lag:.1f}s older than the primary's last write seen; {state.describe()})")
    else:
        reason = standby_limitation(state, max_lag_seconds, primary_alive=assessment.primary_accepts_writes)
        if reason:
            return reason
    newest = parse_segment_name(assessment.newest_archived_segment or "", assessment.wal_segment_size)
    received = state.received_lsn or state.replayed_lsn
    if newest and received:
        have = segno_of(parse_lsn(received), assessment.wal_segment_size)
        if have < newest[1]:
            return (f"standby {member.address} received WAL only up to {received}, but the archive holds segment "
                    f"{assessment.newest_archived_segment}: it stopped receiving before the primary was lost")
    return None


@dataclass(frozen=True)
class Decision:
    path: str  # promote_standby | pitr
    why: str
    standby: str | None = None
    limitations: dict = field(default_factory=dict)  # standby address -> why it is unusable (None: usable)
    risk: str | None = None  # a path forced onto a standby judged unusable: what the person approving accepts

    def to_dict(self) -> dict:
        return asdict(self)


def choose_path(requested: str, target: str, assessment: Assessment, max_lag_seconds: float,
                can_restore_into_production: bool = True, person_approves: bool = False) -> Decision:
    """auto promotes a usable standby and otherwise restores from backups; a forced promotion onto an unusable
    standby, or with no standby, is refused naming why.

    :param can_restore_into_production: a provisioner can place a restored cluster where clients reach it (a copy
        on the worker can serve only a scratch target)
    :param person_approves: a person approves before anything is done (incident mode, ``approve=wait``): a forced
        ``promote_standby`` onto a standby judged unusable is then chosen, with its risk for that person to accept
    :raises PreconditionFailed: unknown inputs, ``promote_standby`` that would be unsafe, or a restore into
        production nothing can host (before anything is touched)
    """
    if requested not in PATHS:
        raise PreconditionFailed(f"unknown path {requested!r}: use one of {', '.join(PATHS)}")
    if target not in TARGETS:
        raise PreconditionFailed(f"unknown target {target!r}: use one of {', '.join(TARGETS)}")
    if target == "scratch":
        if requested == "promote_standby":
            raise PreconditionFailed("path promote_standby changes production; target scratch restores a copy from "
                                     "backups (use path pitr or auto)")
        return Decision("pitr", "target scratch: a copy is restored from backups; production is not touched")
    limitations = {m.address: standby_usability(m, assessment, max_lag_seconds) for m in assessment.standbys}
    usable = [a for a, why in limitations.items() if why is None]
    no_host = ("a restore into production needs a provisioner that puts the restored cluster where clients reach it "
               "(the environment names none); restore a copy with target=scratch, or promote a standby")
    if requested == "pitr":
        if not can_restore_into_production:
            raise PreconditionFailed(f"refusing to restore: {no_host}")
        return Decision("pitr", "requested", limitations=limitations)
    if requested == "promote_standby":
        if not limitations:
            raise PreconditionFailed("refusing to promote: no standby is known (replica record, connection or "
                                     "pg_stat_replication)")
        if not usable:
            reachable = [m.address for m in assessment.standbys if m.role == "standby"]
            if person_approves and reachable:
                risk = "; ".join(limitations.values())
                return Decision("promote_standby", f"forced onto standby {reachable[0]}, judged unusable: {risk}",
                                reachable[0], limitations, risk=f"promoting {reachable[0]} may lose more than the RPO: {risk}")
            raise PreconditionFailed("refusing to promote: " + "; ".join(limitations.values())
                                     + " (in incident mode with approve=wait, a person may accept that risk at the approval)")
        return Decision("promote_standby", "requested; " + _usable_why(usable[0], assessment), usable[0], limitations)
    if usable:
        return Decision("promote_standby", _usable_why(usable[0], assessment), usable[0], limitations)
    why = ("no standby is known: restore from the base backup and the archived WAL" if not limitations
           else "standby unusable: " + "; ".join(limitations.values()))
    if not can_restore_into_production:
        raise PreconditionFailed(f"no recovery path: {why}; and {no_host}")
    return Decision("pitr", why, limitations=limitations)


def _usable_why(address: str, assessment: Assessment) -> str:
    member = next(m for m in assessment.standbys if m.address == address)
    state = member.standby_state()
    caught_up = wal_caught_up(state, assessment)
    if caught_up:
        age = "never" if state.replay_age is None else f"{state.replay_age:.0f}s ago"
        return f"standby {address} is caught up: {caught_up} (its last replayed commit was {age})"
    return f"standby {address} is healthy and within RPO (last replayed commit {state.replay_age:.1f}s ago)"


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


def switch_limitation(address: str, known_hosts: list[str], worker_addresses: list[str]) -> str | None:
    """Why service discovery must not be pointed at ``address``, or None.

    Every client resolves the record and connects where it points: an address that is the Airflow worker's own
    sends each client to its own machine (a total outage caused by the runbook), and an address that is not a
    database host of the platform (a member, or a copy the provisioner placed) is nobody's database."""
    host = address.rsplit(":", 1)[0]
    if host in worker_addresses or host in LOOPBACK_NAMES:
        return (f"refusing to point service discovery at {address}: that is the Airflow worker's own address, and every "
                "client that resolves it would reach its own machine, not the database")
    if address not in known_hosts:
        return (f"refusing to point service discovery at {address}: it is not a known database host (members and "
                f"provisioned hosts: {', '.join(known_hosts) or 'none'})")
    return None


def needs_approval(mode: str, approve: str) -> bool:
    """An incident waits once for a person before the first irreversible step, unless told not to; drills never."""
    if mode not in MODES:
        raise PreconditionFailed(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if approve not in APPROVALS:
        raise PreconditionFailed(f"unknown approve {approve!r}: use one of {', '.join(APPROVALS)}")
    return mode == "incident" and approve == "wait"


def approval_request(decision: Decision, assessment: Assessment, target: str, backup: str | None) -> tuple[str, str]:
    """(subject, body) of the approval a person answers: the chosen path and its evidence."""
    primary = assessment.primary
    subject = f"Postgres failover: {decision.path} ({target})" + (" - FORCED, read the risk" if decision.risk else "")
    lines = [f"**Chosen path:** `{decision.path}`: {decision.why}", "",
             *([f"**Risk you accept by approving:** {decision.risk}", ""] if decision.risk else []),
             f"**Old primary** {primary.address}: {primary.role} ({primary.detail}). "
             + ("It will be fenced (read-only, sessions ended) before anything is promoted."
                if primary.reachable else "It does not answer from here: if it may still serve clients on the other side "
                                          "of a partition, stop it before you approve (this runbook cannot fence it)."), ""]
    for member in assessment.standbys:
        state = member.standby_state()
        lag = "n/a" if state is None or state.replay_age is None else f"{state.replay_age:.1f}s"
        lines.append(f"- standby {member.address}: {member.role}, last replayed commit {lag} ago; "
                     f"{decision.limitations.get(member.address) or 'usable'}")
    lines += ["", f"**Newest archived WAL:** {assessment.newest_archived_segment or 'none'}",
              f"**Backup a restore would use:** {backup or assessment.newest_base_backup or 'none'}"]
    if decision.path == "pitr":
        lines.append("**Where the restored cluster runs:** " + (
            "a new database host the environment's provisioner places, at an address of its own; clients are switched "
            "there only after it validates" if target == "production" else
            "a scratch copy (a provisioned host, or this worker when no provisioner can place one); production is not touched"))
    lines += ["",
              "Approve to proceed; Reject to end the run with nothing changed."]
    return subject, "\n".join(lines)
