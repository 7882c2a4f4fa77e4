"""A drill's stop conditions: production health (data-plane probe success, the API's error share) read from the
blackbox prober's log. Checked before every step of a disruptive drill; a threshold crossed stops the drill, which
rolls back and says why."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from rehearsal.dataplane import production_health
from rehearsal.errors import EvidenceError


@dataclass(frozen=True)
class StopConditions:
    min_dataplane_success: float = 0.95
    max_api_error_share: float | None = None  # None: the drill takes the API down on purpose
    window_seconds: float = 5.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> StopConditions | None:
        return cls(**data) if data else None

    def describe(self) -> str:
        api = "" if self.max_api_error_share is None else f", API errors at most {self.max_api_error_share:.0%}"
        return f"data-plane probe success at least {self.min_dataplane_success:.0%}{api} over {self.window_seconds:.0f}s"


def stop_check(conditions: StopConditions | None, probe_log: Path | None, on_trip) -> callable:
    """A check for long waits: each call reads production's health and, when a stop condition is crossed (or the
    evidence is missing), calls ``on_trip(why)``, which raises. Without conditions it does nothing."""
    import time

    def check() -> None:
        if conditions is None:
            return
        why = ("stop conditions are set but no prober log is named (probe_log): production health unknown"
               if probe_log is None else tripped(conditions, probe_log, time.time()))
        if why:
            on_trip(why)

    return check


def tripped_now(conditions: dict | None, probe_log: str | None) -> str | None:
    """For a trigger (serialized inputs): why a drill waiting in the triggerer must stop now, or None."""
    import time

    parsed = StopConditions.from_dict(conditions)
    if parsed is None:
        return None
    if not probe_log:
        return "stop conditions are set but no prober log is named (probe_log): production health unknown"
    return tripped(parsed, Path(probe_log), time.time())


def tripped(conditions: StopConditions, probe_log: Path, now: float) -> str | None:
    """Why the drill must stop now, or None. Silence trips it too: a drill that cannot see production's health
    must not go on (the prober died, or its log moved)."""
    try:
        success, api_errors, rounds = production_health(probe_log, now, conditions.window_seconds)
    except EvidenceError as exc:
        return f"production health unknown: {exc}"
    if not rounds:
        return (f"no probe round in the last {conditions.window_seconds:.0f}s in {probe_log}: production health unknown "
                "(is the prober running?)")
    if success is not None and success < conditions.min_dataplane_success:
        return (f"data-plane probe success {success:.2%} < {conditions.min_dataplane_success:.0%} over the last "
                f"{conditions.window_seconds:.0f}s ({rounds} probe rounds)")
    if conditions.max_api_error_share is not None and api_errors is not None and api_errors > conditions.max_api_error_share:
        return f"API errors in {api_errors:.0%} of probes > {conditions.max_api_error_share:.0%} over the last {conditions.window_seconds:.0f}s"
    return None
