"""Scenario A's decisions, as plain functions: how severe the incident is, whether a freeze holds, how the
reconciler is brought back without a retry storm, and when convergence is back to normal."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from rehearsal.dataplane import DataPlaneProbe
from rehearsal.errors import PreconditionFailed, RecoveryTimedOut, RehearsalError
from rehearsal.services import Answer, Health


class FreezeNotConfirmed(RehearsalError):
    """A mutation probe was not refused while writes should be frozen: nothing may be restored."""

    kind = "refused"


class ReconcilerUnstable(RehearsalError):
    """The reconciler could not hold a rate without crossing its thresholds, even after backing off."""

    kind = "recovery_failed"


class DataPlaneDown(RehearsalError):
    """No endpoint of the data plane answers: this is not a control-plane-only incident."""

    kind = "refused"


@dataclass(frozen=True)
class Severity:
    level: str  # Sev0 | Sev1
    why: str


def control_plane_down_evidence(services: dict[str, Health], postgres: tuple[bool, str]) -> list[str]:
    """Scenario A is happening when a control-plane service is down or failing, or its database cannot commit:
    what is wrong, in words (empty: nothing is, a false alarm)."""
    wrong = [f"{name} {'down' if not h.body else 'failing'} ({h.detail})" for name, h in services.items() if not h.ok]
    if not postgres[0]:
        wrong.append(f"Postgres primary unhealthy ({postgres[1]})")
    return wrong


def degrading_steps(services: dict[str, Health]) -> list[str]:
    """What Scenario A's next steps would degrade because it still runs: an API answering in read-write is put
    read-only, a reconciler that runs is paused. A person approves these first, in an incident."""
    out = []
    api = services.get("api")
    if api is not None and api.body and api.body.get("mode", "read-write") == "read-write":
        out.append("the running API goes read-only (every write refused until writes resume)")
    reconciler = services.get("reconciler")
    if reconciler is not None and reconciler.body and not reconciler.body.get("paused"):
        out.append("the running reconciler is paused (nothing is pushed to hosts until it is resumed gradually)")
    return out


def severity(dataplane: DataPlaneProbe, api: Health, sev0_below: float = 0.99, happening: bool = True) -> Severity:
    """Sev0 when customers are hit (data-plane availability under ``sev0_below``, or nothing to probe), else Sev1:
    the control plane is degraded while apps keep running; ``none`` when nothing is wrong (measured impact only: a
    healthy platform is no incident)."""
    ratio = dataplane.availability
    if not happening and ratio is not None and ratio >= sev0_below:
        return Severity("none", f"no impact measured: data plane serving ({ratio:.2%} of {dataplane.endpoints} "
                                "endpoints), every control-plane service healthy, Postgres commits")
    api_text = "API up" if api.ok else "API down"
    if ratio is None:
        return Severity("Sev0", f"no data-plane endpoint could be probed ({dataplane.describe()}); {api_text}")
    if ratio < sev0_below:
        return Severity("Sev0", f"customer impact: data-plane availability {ratio:.2%} < {sev0_below:.0%}; {api_text}")
    return Severity("Sev1", f"data plane serving ({ratio:.2%} of {dataplane.endpoints} endpoints); {api_text}: "
                            "control plane degraded, apps unaffected")


def require_data_plane(probe: DataPlaneProbe) -> None:
    if probe.hosts == 0:
        raise DataPlaneDown("the data-plane inventory lists no host agent: nothing to verify")
    if not probe.endpoints_ok:
        raise DataPlaneDown(f"no endpoint answers ({probe.describe()}): the data plane is down too; this is not "
                            "Scenario A (control plane down, data plane running), see Scenario C")


def confirm_refused(answer: Answer, mode: str) -> str:
    """A mutation probe while ``mode`` must be refused with 503 naming the mode.

    :raises FreezeNotConfirmed: the probe was accepted, or refused for another reason
    """
    if answer.status == 503 and answer.body.get("mode") == mode:
        return f"mutation probe refused: HTTP 503 {answer.body.get('error', '')}".strip()
    if answer.ok:
        raise FreezeNotConfirmed(f"freeze not confirmed: a mutation probe was ACCEPTED (HTTP {answer.status}) while "
                                 f"the API should be {mode}; stopping before anything is restored")
    raise FreezeNotConfirmed(f"freeze not confirmed: the mutation probe got HTTP {answer.status} {answer.body} "
                             f"instead of a 503 naming mode {mode}")


@dataclass(frozen=True)
class RampPolicy:
    """How the reconciler is brought back: each rate held ``hold_seconds`` with error rate and queue depth under
    their thresholds; a step that crosses them backs off to the previous rate and holds again."""

    steps: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0)
    hold_seconds: float = 3.0
    max_error_rate: float = 0.2
    max_queue_depth: int = 50
    max_backoffs: int = 3
    sample_every: float = 0.5

    def __post_init__(self) -> None:
        if not self.steps or any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)) or self.steps[0] <= 0:
            raise PreconditionFailed(f"ramp steps must be positive and increasing, got {self.steps}")


@dataclass
class RampStep:
    rate: float
    outcome: str  # held | backed_off
    samples: int
    worst_error_rate: float | None
    worst_queue_depth: int | None
    why: str = ""
    at: float = 0.0
    measured: int = 0  # samples that carried an error rate or a queue depth: 0 means the step was held blind


@dataclass
class RampResult:
    final_rate: float
    steps: list[RampStep] = field(default_factory=list)
    backoffs: int = 0

    def to_dict(self) -> dict:
        return {"final_rate": self.final_rate, "backoffs": self.backoffs, "steps": [asdict(s) for s in self.steps],
                "unmeasured_rates": self.unmeasured_rates()}

    def unmeasured_rates(self) -> list[float]:
        """Rates held without a single sample of error rate or queue depth: judged without metrics."""
        return [s.rate for s in self.steps if s.outcome == "held" and not s.measured]

    def describe(self) -> str:
        path = " -> ".join(f"{s.rate:g}/s {'ok' if s.outcome == 'held' else 'BACKED OFF'}" for s in self.steps)
        return f"reconciler ramped to {self.final_rate:g} pushes/s in {len(self.steps)} step(s), {self.backoffs} back-off(s): {path}"


def _over(metrics: dict, policy: RampPolicy) -> str | None:
    error_rate, depth = metrics.get("error_rate"), metrics.get("queue_depth")
    if error_rate is not None and error_rate > policy.max_error_rate:
        return f"error rate {error_rate:.2f} > {policy.max_error_rate:.2f}"
    if depth is not None and depth > policy.max_queue_depth:
        return f"queue depth {depth} > {policy.max_queue_depth}"
    return None


def ramp_steps_to(steps: tuple[float, ...], rate_before: float | None) -> tuple[float, ...]:
    """The ramp's steps ending at the rate the reconciler ran at before the runbook paused it (the ramp's own steps
    below it, then it): a runbook puts back what it changed. Unknown: the ramp's own steps."""
    if rate_before is None or rate_before <= 0:
        return tuple(steps)
    return tuple(s for s in steps if s < rate_before) + (float(rate_before),)


def ramp_degraded(result: RampResult, rate_before: float | None) -> list[dict]:
    """What a ramp left undone, as a run's ``degraded`` items: the rate not put back, steps held without metrics."""
    items = []
    if rate_before is None:
        items.append({"item": "reconciler rate before the incident unknown",
                      "what_to_do": f"it was left at {result.final_rate:g} pushes/s: check it is the platform's normal rate"})
    elif abs(result.final_rate - rate_before) > 1e-9:
        items.append({"item": "reconciler rate not restored",
                      "what_to_do": f"it runs at {result.final_rate:g} pushes/s, it ran at {rate_before:g} before: "
                                    "set it back once the platform is stable"})
    blind = result.unmeasured_rates()
    if blind:
        items.append({"item": "ramp judged without metrics",
                      "what_to_do": f"the reconciler reported neither error rate nor queue depth while held at "
                                    f"{', '.join(f'{r:g}' for r in blind)} pushes/s: watch it by hand for a retry storm"})
    return items


def ramp(set_rate: Callable[[float], float], read_metrics: Callable[[], dict], policy: RampPolicy,
         sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> RampResult:
    """Raise the reconciler's rate step by step; hold each until the thresholds stay met for ``hold_seconds``.

    A step that crosses a threshold goes back to the previous rate (no retry storm), waits a hold there and
    tries again; after ``max_backoffs`` the reconciler is left at the last good rate and this fails by name.

    :raises ReconcilerUnstable: it never held the step (names the rate, the threshold and the values)
    """
    result = RampResult(final_rate=0.0)
    index, good = 0, 0.0
    while index < len(policy.steps):
        rate = policy.steps[index]
        set_rate(rate)
        started = clock()
        samples, measured, worst_err, worst_depth, crossed = 0, 0, None, None, None
        while clock() - started < policy.hold_seconds:
            sleep(policy.sample_every)
            metrics = read_metrics()
            samples += 1
            err, depth = metrics.get("error_rate"), metrics.get("queue_depth")
            measured += err is not None or depth is not None
            worst_err = err if worst_err is None or (err is not None and err > worst_err) else worst_err
            worst_depth = depth if worst_depth is None or (depth is not None and depth > worst_depth) else worst_depth
            crossed = _over(metrics, policy)
            if crossed:
                break
        if crossed is None:
            result.steps.append(RampStep(rate, "held", samples, worst_err, worst_depth, at=started, measured=measured))
            good = rate
            index += 1
            continue
        result.backoffs += 1
        result.steps.append(RampStep(rate, "backed_off", samples, worst_err, worst_depth, crossed, at=started,
                                     measured=measured))
        back = policy.steps[index - 1] if index else 0.0
        set_rate(back)
        if result.backoffs >= policy.max_backoffs:
            result.final_rate = back
            raise ReconcilerUnstable(f"reconciler never held {rate:g} pushes/s: {crossed} (after {result.backoffs} "
                                     f"back-off(s); left at {back:g}/s). {result.describe()}")
        sleep(policy.hold_seconds)  # let the queue drain at the lower rate before trying again
    result.final_rate = good
    return result


def convergence(metrics: dict, threshold: float, require_converged: bool = False) -> tuple[bool, str]:
    """Is the time-to-converge SLI back under ``threshold``? Nothing may be waiting longer than it either.

    :param require_converged: at least one change (of the SLI's window, or since the moment asked) must have been
        seen to converge: a quiet or not-yet-refreshed reconciler proves nothing
    """
    sli = metrics.get("time_to_converge_seconds")
    oldest = metrics.get("oldest_unconverged_seconds")
    depth = metrics.get("queue_depth")
    text = f"time-to-converge {_s(sli)}, oldest unconverged change {_s(oldest)}, queue depth {depth}"
    if metrics.get("paused") or not metrics.get("rate"):
        return False, text + " (reconciler paused)"
    if require_converged and not metrics.get("converged_changes_last_300s"):
        return False, text + " (no change made since has converged yet)"
    if sli is None:
        return (not oldest and not depth), text + " (no change in the SLI's window)"
    if metrics.get("converged_changes_last_300s") == 0 and (oldest or depth):
        # Only young changes waiting: nothing has been seen to converge yet, so nothing is proven.
        return False, text + " (no change made since has converged yet)"
    return (sli <= threshold and (oldest is None or oldest <= threshold)), text


def _s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}s"


def wait_until(check: Callable[[], tuple[bool, str]], timeout: float, what: str, interval: float = 0.5,
               sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> str:
    """Poll ``check`` until it says yes; the timeout names the last value."""
    deadline = clock() + timeout
    while True:
        done, detail = check()
        if done:
            return detail
        if clock() >= deadline:
            raise RecoveryTimedOut(f"{what} not reached within {timeout:.0f}s; last: {detail}")
        sleep(interval)


def scenario_approval(scenario: str, records: dict) -> tuple[str, str, str | None]:
    """(subject, body, why no person is needed or None) of a scenario's approval before it degrades anything.

    ``scenario_a``: ``records`` is the declaration (``evidence``, ``degrades``, ``severity``); nothing running would
    be degraded (the API and the reconciler are down): no person is needed. ``scenario_b``: ``records`` holds the
    corruption ``point`` and the backup ``pick``ed: the freeze and the restore always need one."""
    if scenario == "scenario_a":
        degrades = records.get("degrades") or []
        evidence = records.get("evidence") or []
        lines = [f"**Declared:** {records.get('severity')}: {records.get('why')}", "",
                 "**What is wrong:**", *[f"- {e}" for e in evidence], "",
                 "**Approving lets the runbook degrade what still runs:**", *[f"- {d}" for d in degrades], "",
                 "Approve to restore the control plane one service at a time; Reject to end the run with nothing "
                 "changed (the API's mode and the reconciler as found)."]
        return ("Scenario A: degrade running control-plane services to recover", "\n".join(lines),
                None if degrades else "nothing that still runs would be degraded")
    point, pick = records.get("point") or {}, records.get("pick") or {}
    lines = [f"**Corruption:** at {point.get('time')} ({point.get('how')})",
             f"**Restore target:** {pick.get('recovery_target') or point.get('recovery_target')}",
             f"**Last good backup:** {pick.get('backup_id')} ({pick.get('why', '')})", "",
             "**Approving will:** freeze mutations (the API frozen: writes refused, reads kept; the reconciler paused), "
             "keep the writes made since the corruption, restore the control-plane database from that backup onto a "
             "new host, switch clients to it, repair the drift, then resume writes.", "",
             "Reject to end the run with nothing changed (the API's mode and the reconciler as found)."]
    return "Scenario B: freeze and restore to before the corruption", "\n".join(lines), None
