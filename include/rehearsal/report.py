"""The drill report: what a run claims, every number measured from events, as JSON and Markdown."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATUSES = ("passed", "failed", "aborted", "skipped")


@dataclass
class Step:
    name: str
    status: str
    started_at: str | None = None
    finished_at: str | None = None
    detail: str = ""
    kind: str | None = None  # for a failed step: refused, timed_out, recovery_failed, ... (rehearsal.errors)


@dataclass
class DrillReport:
    dag_id: str
    run_id: str
    scenario: str
    mode: str
    environment: str
    status: str
    started_at: str | None
    finished_at: str | None
    component: str
    target_rto_seconds: float
    measured_rto_seconds: float | None
    rto_met: bool | None
    target_rpo_seconds: float
    measured_rpo_seconds: float | None
    rpo_met: bool | None
    recovery_path: str | None
    steps: list[Step] = field(default_factory=list)
    checks: list[dict] = field(default_factory=list)
    evidence: dict = field(default_factory=dict)
    resources_created: list[str] = field(default_factory=list)
    resources_cleaned: list[str] = field(default_factory=list)
    failure: str | None = None
    runbook: dict = field(default_factory=dict)  # the runbook run: its DAG, task group, approval, decision
    degraded: list[dict] = field(default_factory=list)  # what a recovery left undone: {"item", "step", "what_to_do"}

    def to_dict(self) -> dict:
        return asdict(self)


def judge(measured: float | None, target: float) -> bool | None:
    return None if measured is None else measured <= target


STATUSES = ("passed", "degraded", "failed", "aborted", "skipped", "not_applicable")


def decide_status(*, started: bool, failures: list[str], measures_recovery: bool, rto_met: bool | None,
                  rpo_met: bool | None, rejected: bool = False, called_off: bool = False, degraded: bool = False,
                  not_applicable: bool = False) -> str:
    """passed / degraded / failed / aborted / skipped / not_applicable.

    - skipped: a drill that was called off before it touched anything (drills switched off, or a scheduled run
      that started late); not a failed drill;
    - not_applicable: a scenario triggered when its scenario is not happening (a false alarm): it changed nothing;
    - aborted: the run never started changing anything (its guard refused, or a person rejected the recovery);
    - failed: a step failed, or a measured target was missed or could not be measured;
    - degraded: service is recovered, but the run left something undone (each item named in the report);
    - passed: otherwise.
    """
    if called_off:
        return "skipped"
    if not_applicable and not failures:
        return "not_applicable"
    if not started or rejected:
        return "aborted"
    if failures:
        return "failed"
    if measures_recovery and not (rto_met and rpo_met):
        return "failed"
    return "degraded" if degraded else "passed"


def report_paths(root: str | Path, dag_id: str, run_id: str) -> tuple[Path, Path]:
    safe = run_id.replace("/", "_")
    folder = Path(root) / dag_id
    return folder / f"{safe}.json", folder / f"{safe}.md"


def write_report(report: DrillReport, root: str | Path) -> tuple[Path, Path]:
    json_path, md_path = report_paths(root, report.dag_id, report.run_id)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(report))
    return json_path, md_path


def _fmt(seconds: float | None) -> str:
    return "not measured" if seconds is None else f"{seconds:.2f} s"


def human_seconds(seconds: float | None, lower_bound: bool = False) -> str:
    """Rounded for people (``4.4 s``); the JSON keeps the exact figure."""
    if seconds is None:
        return "not measured"
    text = f"{seconds:.0f} s" if seconds >= 100 else f"{seconds:.1f} s"
    return ("at least " if lower_bound else "") + text


def _met(flag: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "n/a"}[flag]


def render_markdown(r: DrillReport) -> str:
    lines = [
        f"# {r.scenario}: {r.status.upper()}",
        "",
        f"- DAG `{r.dag_id}`, run `{r.run_id}`",
        f"- mode `{r.mode}` against environment `{r.environment}`; recovery path `{r.recovery_path}`",
        f"- from {r.started_at} to {r.finished_at}",
        "",
        "| | target | measured | |",
        "|---|---:|---:|---|",
        f"| RTO ({r.component}) | {r.target_rto_seconds:.0f} s | {_fmt(r.measured_rto_seconds)} | {_met(r.rto_met)} |",
        f"| RPO ({r.component}) | {r.target_rpo_seconds:.0f} s | {_fmt(r.measured_rpo_seconds)} | {_met(r.rpo_met)} |",
        "",
    ]
    if r.failure:
        label = {"skipped": "Skipped, nothing was touched", "not_applicable": "Not applicable, nothing was changed"}
        lines += [f"**{label.get(r.status, 'Failure')}:** {r.failure}", ""]
    if r.degraded:
        lines += ["**Degraded: service is back, but these were left undone:**", ""]
        lines += [f"- {d['item']} ({d.get('step', '')}): {d.get('what_to_do', '')}" for d in r.degraded] + [""]
    if r.runbook:
        lines += [f"**Runbook:** `{r.runbook.get('dag_id')}` (task group `{r.runbook.get('group')}`), "
                  f"approved by {r.runbook.get('approved_by') or 'n/a'}; path: {r.runbook.get('decision') or 'n/a'}", ""]
    lines += ["## Steps", "", "| step | status | started | finished | detail |", "|---|---|---|---|---|"]
    lines += [f"| {s.name} | {s.status}{f' ({s.kind})' if s.kind else ''} | {s.started_at or ''} | {s.finished_at or ''} | "
              f"{s.detail.replace('|', '/')} |" for s in r.steps]
    lines += ["", "## Checks", "", "| check | ok | detail |", "|---|---|---|"]
    lines += [f"| {c['name']} | {'yes' if c['ok'] else 'NO'} | {str(c['detail']).replace('|', '/')} |" for c in r.checks]
    lines += ["", "## Evidence", "", "```json", json.dumps(r.evidence, indent=2, default=str), "```", "",
              "## Resources", "", f"- created: {', '.join(r.resources_created) or 'none'}",
              f"- cleaned: {', '.join(r.resources_cleaned) or 'none'}", ""]
    return "\n".join(lines)
