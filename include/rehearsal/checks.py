"""Named check results (Barman's CheckStrategy): collect them, fail on the critical ones by name."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rehearsal.errors import VerificationFailed


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    critical: bool = True


@dataclass
class CheckSet:
    subject: str
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str, critical: bool = True) -> bool:
        self.checks.append(Check(name, bool(ok), detail, critical))
        return bool(ok)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.critical and not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failed

    def raise_if_failed(self) -> None:
        if self.failed:
            raise VerificationFailed(self.subject, self.failed)

    def as_dicts(self) -> list[dict]:
        return [asdict(c) for c in self.checks]
