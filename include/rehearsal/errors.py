"""Errors that name their cause: which backup, which segment, which check."""
from __future__ import annotations


class RehearsalError(Exception):
    """Base class of every error the domain raises on purpose."""


class CatalogError(RehearsalError):
    """The targets catalog is malformed."""


class ManifestError(RehearsalError):
    """A backup manifest is missing or malformed."""


class VerificationFailed(RehearsalError):
    """One or more critical checks failed; the message names artifact and checks."""

    def __init__(self, subject: str, failed: list) -> None:
        self.subject = subject
        self.failed = failed
        names = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        super().__init__(f"{subject}: failed checks: {names}")


class PreconditionFailed(RehearsalError):
    """A step refused to run; the message is the reason."""


class RestoreError(RehearsalError):
    """A restore did not produce a usable cluster."""


class EvidenceError(RehearsalError):
    """The evidence (heartbeat log, surviving rows) cannot support a measurement; the message names the ack and the fault."""


class WalGapError(RestoreError):
    """A point-in-time restore cannot reach, or did not reach, the end of the WAL archive; names the segment."""
