"""Errors that name their cause (which backup, segment, check), each of a kind that says what happened.

The kinds, as the report records them for every failed step:

- ``refused``: a precondition did not hold; nothing was touched.
- ``timed_out``: a wait ran out mid-recovery; something may be half done (the message says what).
- ``recovery_failed``: a restore or promotion did not produce a usable primary.
- ``backup_failed``: a backup could not be taken or stored.
- ``verification_failed``: named checks failed (backup verification, restore validation).
- ``measurement_failed``: the evidence cannot support a measurement.
- ``drill_failed``: a drill ran but missed a target or a step failed.
- ``aborted``: a drill's stop condition tripped; it stopped and rolled back.
- ``skipped``: a drill was called off before it touched anything (drills switched off, or a late scheduled start).
"""
from __future__ import annotations


class RehearsalError(Exception):
    """Base class of every error the domain raises on purpose."""

    kind = "error"


class CatalogError(RehearsalError):
    """The targets catalog is malformed."""

    kind = "refused"


class ManifestError(RehearsalError):
    """A backup manifest is missing or malformed."""

    kind = "verification_failed"


class VerificationFailed(RehearsalError):
    """One or more critical checks failed; the message names artifact and checks."""

    kind = "verification_failed"

    def __init__(self, subject: str, failed: list) -> None:
        self.subject = subject
        self.failed = failed
        names = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        super().__init__(f"{subject}: failed checks: {names}")


class PreconditionFailed(RehearsalError):
    """A step refused to run; nothing was touched. The message is the reason."""

    kind = "refused"


class RecoveryTimedOut(RehearsalError):
    """A wait on outside state ran out mid-recovery; the message says what is half done."""

    kind = "timed_out"


class RestoreError(RehearsalError):
    """A restore (or promotion) did not produce a usable cluster."""

    kind = "recovery_failed"


class BackupFailed(RehearsalError):
    """A backup could not be taken or stored."""

    kind = "backup_failed"


class EvidenceError(RehearsalError):
    """The evidence (heartbeat log, surviving rows) cannot support a measurement; the message names the ack and the fault."""

    kind = "measurement_failed"


class WalGapError(RestoreError):
    """A point-in-time restore cannot reach, or did not reach, the end of the WAL archive; names the segment."""


class DrillFailed(RehearsalError):
    """A drill ran and failed: a step failed or a target was missed (the report says which)."""

    kind = "drill_failed"


class DrillAborted(RehearsalError):
    """A drill's stop condition tripped (production health crossed a threshold): it stopped and rolled back."""

    kind = "aborted"


class DrillCalledOff(RehearsalError):
    """A drill may not start now (drills are switched off, or its scheduled start is late): it skips, having touched
    nothing. The message is the reason."""

    kind = "skipped"


def error_kind(exc: BaseException) -> str:
    """The kind a step's failure is recorded as."""
    if isinstance(exc, TimeoutError):
        return "timed_out"
    return getattr(exc, "kind", "error")
