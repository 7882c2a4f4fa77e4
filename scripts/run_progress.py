"""Progress for ``scripts/run_dag.py``: one line per task as it happens, Airflow's raw log in a file, approvals.

- ``RawLog`` sends file descriptors 1 and 2 (Airflow's logging, task logs, subprocesses) to a file and keeps a
  duplicate of the original stdout for the progress lines.
- ``RunWatcher`` is a thread that polls the metadata database while ``dag.test()`` runs in the main thread: it
  prints a line when a task starts and when it ends (with its ``step`` record's detail), and answers pending
  Human-in-the-loop requests (``ApprovalOperator``) the way the REST API's ``update_hitl_detail`` does.
- ``Approver`` decides how: ``APPROVE=yes|no`` answers by itself, a terminal on stdin is asked, otherwise it says
  how to answer and the run keeps waiting.

Airflow is imported lazily, so the formatting helpers import quickly (and are unit-tested without a run).
"""
from __future__ import annotations

import io
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

APPROVE_OPTION, REJECT_OPTION = "Approve", "Reject"
TERMINAL_USER = "terminal"
FINISHED = ("success", "failed", "skipped", "upstream_failed", "removed")
_YES = {"yes", "y", "true", "1", "approve"}
_NO = {"no", "n", "false", "0", "reject"}


# ---------------------------------------------------------------------------------------------------------------
# Output


class Progress:
    """The ``[rehearsal] ...`` lines, written to the terminal's stdout whatever fd 1 points at; thread-safe."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.lock = threading.Lock()

    def _out(self) -> TextIO:
        return self.stream or sys.stdout

    def say(self, message: str) -> None:
        with self.lock:
            out = self._out()
            out.write(f"[rehearsal] {message}\n")
            out.flush()

    def ask(self, message: str) -> None:
        """A prompt: no newline, so the answer is typed on the same line."""
        with self.lock:
            out = self._out()
            out.write(f"[rehearsal] {message}")
            out.flush()


class RawLog:
    """Redirect fds 1 and 2 to ``path`` (append), keeping the original stdout for ``progress``."""

    def __init__(self, path: Path, progress: Progress):
        self.path = path
        self.progress = progress
        self._saved: tuple[int, int] | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._saved = (os.dup(1), os.dup(2))
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        self.progress.stream = io.TextIOWrapper(io.FileIO(os.dup(self._saved[0]), "w"), line_buffering=True,
                                                encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self._saved is None:
            return
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        out, err = self._saved
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        self._saved = None
        if self.progress.stream is not None:
            try:
                self.progress.stream.close()
            except OSError:
                pass
        self.progress.stream = None


def raw_log_path(dag_id: str, repo: Path) -> Path:
    """``<sandbox dir>/logs/<dag_id>-<UTC timestamp>.log`` (sandbox dir: REHEARSAL_SANDBOX_DIR, default .sandbox)."""
    folder = Path(os.environ.get("REHEARSAL_SANDBOX_DIR") or repo / ".sandbox") / "logs"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = folder / f"{dag_id}-{stamp}.log"
    if path.exists():
        path = folder / f"{dag_id}-{stamp}-{os.getpid()}.log"
    return path


# ---------------------------------------------------------------------------------------------------------------
# Figures for people


def seconds(value: float | None) -> str:
    """Seconds rounded for people: ``0 s``, ``< 0.1 s``, ``0.3 s``, ``4.4 s``, ``312 s``; ``not measured`` for None."""
    if value is None:
        return "not measured"
    value = float(value)
    if value == 0:
        return "0 s"
    if 0 < value < 0.05:
        return "< 0.1 s"
    if round(abs(value), 1) < 100:
        return f"{value:.1f} s"
    return f"{value:.0f} s"


def summary_line(report: dict) -> str:
    """``status passed; path promote_standby; RTO 4.4 s (target 7200 s); RPO 0.3 s (target 900 s)``."""
    evidence = report.get("evidence") or {}
    rto, rpo = report.get("measured_rto_seconds"), report.get("measured_rpo_seconds")
    rpo_text = seconds(rpo)
    if rpo is not None and evidence.get("rpo_is_lower_bound"):
        rpo_text = f"at least {float(rpo):.0f} s"
    parts = [f"status {report.get('status')}", f"path {report.get('recovery_path')}"]
    for name, text, target in (("RTO", seconds(rto), report.get("target_rto_seconds")),
                               ("RPO", rpo_text, report.get("target_rpo_seconds"))):
        parts.append(f"{name} {text}" + (f" (target {float(target):.0f} s)" if target is not None else ""))
    return "; ".join(parts)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line (a detail may hold a multi-line error), cut at ``limit`` characters."""
    flat = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return flat if limit is None or len(flat) <= limit else flat[:limit - 3] + "..."


def task_line(elapsed: float, state: str, task: str, detail: str = "") -> str:
    """``  4.2s  success  promote_standby: promoted 127.0.0.1:5433 in 0.1s`` (the detail cut at 300 characters)."""
    line = f"{elapsed:5.1f}s  {state:<7}  {task}"
    return f"{line}: {one_line(detail, 300)}" if detail else line


def task_name(task_id: str, map_index: int) -> str:
    return task_id if map_index is None or map_index < 0 else f"{task_id}[{map_index}]"


# ---------------------------------------------------------------------------------------------------------------
# Approvals


def approve_setting(environ: dict | None = None) -> str | None:
    """``APPROVE`` as an option (``Approve``/``Reject``), None when unset; ValueError for anything else."""
    raw = (environ if environ is not None else os.environ).get("APPROVE", "").strip()
    if not raw:
        return None
    if raw.lower() in _YES:
        return APPROVE_OPTION
    if raw.lower() in _NO:
        return REJECT_OPTION
    raise ValueError(f"APPROVE={raw!r} is neither yes nor no")


@dataclass
class Request:
    ti_id: Any
    task: str
    subject: str
    body: str | None
    options: list[str]


@dataclass
class Approver:
    """How pending requests are answered: ``APPROVE`` (env), else the terminal on stdin, else not at all."""

    progress: Progress
    automatic: str | None = None  # "Approve" / "Reject" from APPROVE=yes|no
    stdin: TextIO | None = None  # a terminal, or None
    how_to_answer: str = ""
    answers: queue.Queue = field(default_factory=queue.Queue)  # (ti_id, option, responder)
    _asking: queue.Queue = field(default_factory=queue.Queue)
    _thread: threading.Thread | None = None

    @property
    def automatic_user(self) -> str:
        return f"APPROVE={'yes' if self.automatic == APPROVE_OPTION else 'no'}"

    def show(self, request: Request) -> None:
        say = self.progress.say
        say(f"approval needed: {request.task}")
        say(f"  subject: {request.subject}")
        for line in (request.body or "").strip("\n").splitlines():
            say(f"  | {line}".rstrip())
        say(f"  options: {' / '.join(request.options)}")

    def pending(self, request: Request) -> None:
        """A new request: answer it now, ask the terminal (in a thread), or say how to answer."""
        self.show(request)
        if self.automatic and self.automatic in request.options:
            self.answers.put((request.ti_id, self.automatic, self.automatic_user))
        elif self.stdin is not None and APPROVE_OPTION in request.options and REJECT_OPTION in request.options:
            self._asking.put(request)
            if self._thread is None:
                self._thread = threading.Thread(target=self._ask_loop, name="rehearsal-approval-prompt", daemon=True)
                self._thread.start()
        else:
            self.progress.say(f"  waiting for an answer: {self.how_to_answer}")

    def _ask_loop(self) -> None:
        while True:
            request = self._asking.get()
            while True:
                self.progress.ask(f"{request.task}: {request.subject} -- Approve? [y/N] ")
                line = self.stdin.readline()
                if not line:  # end of input: nobody will answer here
                    self.progress.say("")
                    self.progress.say(f"  no terminal answer (end of input); {self.how_to_answer}")
                    self.stdin = None
                    return
                word = line.strip().lower()
                if word in _YES or word in _NO or word == "":
                    option = APPROVE_OPTION if word in _YES else REJECT_OPTION
                    self.answers.put((request.ti_id, option, TERMINAL_USER))
                    break
                self.progress.say("  answer y (approve) or n (reject)")


# ---------------------------------------------------------------------------------------------------------------
# The watcher


def newest_run_id(dag_id: str) -> int:
    """The highest DagRun.id of ``dag_id`` now (0 when none): the run dag.test() creates next is above it."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.max(DagRun.id)).where(DagRun.dag_id == dag_id)) or 0


def respond(ti_id: Any, option: str, responder: str) -> str | None:
    """Record ``option`` for the task instance's HITL request and resume it, as ``update_hitl_detail`` does.

    Returns None when recorded, else why not (already answered, no request).
    """
    from airflow._shared.timezones import timezone
    from airflow.models.hitl import HITLDetail, HITLUser
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    with create_session() as session:
        ti = session.get(TaskInstance, ti_id, with_for_update={"of": TaskInstance})
        detail = session.scalar(select(HITLDetail).where(HITLDetail.ti_id == ti_id).with_for_update(of=HITLDetail))
        if ti is None or detail is None:
            return "no such request"
        if detail.response_received:
            return f"already answered {detail.chosen_options} by {(detail.responded_by or {}).get('name')}"
        if option not in (detail.options or []):
            return f"{option!r} is not one of {detail.options}"
        detail.responded_by = HITLUser(id=responder, name=responder)
        detail.responded_at = timezone.utcnow()
        detail.chosen_options = [option]
        detail.params_input = {}
        session.add(detail)
        if ti.state in (TaskInstanceState.AWAITING_INPUT, TaskInstanceState.DEFERRED):
            handle_event_submit(TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session)
    return None


class RunWatcher(threading.Thread):
    """Polls the metadata DB for the run ``dag.test()`` is running; prints task lines and answers approvals."""

    def __init__(self, dag_id: str, after_id: int, approver: Approver, progress: Progress, interval: float = 0.5,
                 show_starts: bool = True):
        super().__init__(name="rehearsal-progress", daemon=True)
        self.dag_id, self.after_id = dag_id, after_id
        self.approver, self.progress, self.interval, self.show_starts = approver, progress, interval, show_starts
        self.run_id: str | None = None
        self.started_at = datetime.now(UTC)
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.seen: dict[tuple[str, int], tuple[int, str]] = {}  # (task_id, map_index) -> (try, state) printed
        self.asked: dict = {}  # ti id -> task name, for requests shown
        self.unapplied: list[tuple[Any, str, str]] = []
        self.approvals: dict[str, str] = {}  # task -> "Approve by terminal"
        self.errors = 0
        self.poll_lock = threading.Lock()

    # -- thread ------------------------------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.safe_poll()

    def finish(self, run_id: str | None = None) -> None:
        """Stop the thread and print whatever happened since its last poll (call after dag.test() returns).

        ``run_id``: the run dag.test() returned, when known; if the thread had latched onto another run, it is
        corrected here, so the last lines are this run's.
        """
        self.stop_event.set()
        if self.is_alive():
            self.join(timeout=30)
        if run_id and run_id != self.run_id:
            self.run_id = run_id
            self.seen.clear()
        self.safe_poll()

    def safe_poll(self) -> None:
        try:
            with self.poll_lock:
                self.poll()
            self.errors = 0
        except Exception as exc:  # a locked SQLite file, a transient error: try again next time
            self.errors += 1
            print(f"[rehearsal] progress watcher: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if self.errors == 20:
                self.progress.say(f"progress watcher keeps failing ({type(exc).__name__}: {exc}); see the full log")

    # -- one poll ----------------------------------------------------------------------------------------------
    def elapsed(self, when: datetime | None) -> float:
        if when is None:
            return time.monotonic() - self.started
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - self.started_at).total_seconds())

    def when(self, r) -> float:
        moment = r.end_date or r.start_date
        return float("inf") if moment is None else self.elapsed(moment)

    def find_run(self, session) -> str | None:
        from airflow.models.dagrun import DagRun
        from airflow.utils.types import DagRunTriggeredByType
        from sqlalchemy import select

        return session.scalar(select(DagRun.run_id).where(
            DagRun.dag_id == self.dag_id, DagRun.id > self.after_id, DagRun.triggered_by == DagRunTriggeredByType.TEST,
        ).order_by(DagRun.id.desc()).limit(1))

    def poll(self) -> None:
        from airflow.models.hitl import HITLDetail
        from airflow.models.taskinstance import TaskInstance
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        self.apply_answers()
        with create_session() as session:
            if self.run_id is None:
                self.run_id = self.find_run(session)
                if self.run_id is None:
                    return
            rows = session.execute(select(
                TaskInstance.id, TaskInstance.task_id, TaskInstance.map_index, TaskInstance.try_number,
                TaskInstance.state, TaskInstance.start_date, TaskInstance.end_date,
            ).where(TaskInstance.dag_id == self.dag_id, TaskInstance.run_id == self.run_id)).all()
            changed = [r for r in rows if self.seen.get((r.task_id, r.map_index)) != (r.try_number, str(r.state))]
            if not changed:
                return
            hitl = {d.ti_id: d for d in session.scalars(select(HITLDetail).where(
                HITLDetail.ti_id.in_([r.id for r in changed])))}
            steps = {}
            if any(str(r.state) in (*FINISHED, "up_for_retry") for r in changed):
                for task_id, map_index, value in session.execute(select(
                        XComModel.task_id, XComModel.map_index, XComModel.value).where(
                        XComModel.dag_id == self.dag_id, XComModel.run_id == self.run_id, XComModel.key == "step")):
                    steps[(task_id, map_index)] = step_value(value)
            for r in sorted(changed, key=self.when):
                self.report_task(r, hitl.get(r.id), steps.get((r.task_id, r.map_index)) or {})
        self.apply_answers()

    def report_task(self, r, detail, step: dict) -> None:
        state = str(r.state) if r.state is not None else "none"
        key = (r.task_id, r.map_index)
        previous = self.seen.get(key)
        self.seen[key] = (r.try_number, state)
        name = task_name(r.task_id, r.map_index)
        if state == "running":
            if self.show_starts:
                self.progress.say(task_line(self.elapsed(None), "running", name))
        elif state == "awaiting_input":
            if previous is None or previous[1] != "awaiting_input":
                self.progress.say(task_line(self.elapsed(None), "waiting", name, "awaiting approval"))
            if detail is not None and r.id not in self.asked and not detail.response_received:
                self.asked[r.id] = name
                self.approver.pending(Request(r.id, name, detail.subject, detail.body, list(detail.options or [])))
            elif detail is None:
                self.seen.pop(key, None)  # its request is not written yet: look again next poll
        elif state == "up_for_retry":
            self.progress.say(task_line(self.elapsed(r.end_date), "retry", name, step.get("detail", "")))
        elif state in FINISHED:
            parts = []
            if detail is not None and detail.response_received:
                answer = f"{', '.join(detail.chosen_options or [])} by {(detail.responded_by or {}).get('name')}"
                self.approvals[name] = answer
                parts.append(answer)
            if step.get("detail"):
                parts.append(step["detail"])
            self.progress.say(task_line(self.elapsed(r.end_date), state, name, "; ".join(parts)))

    def apply_answers(self) -> None:
        while True:
            try:
                self.unapplied.append(self.approver.answers.get_nowait())
            except queue.Empty:
                break
        left = []
        for ti_id, option, responder in self.unapplied:
            try:
                why_not = respond(ti_id, option, responder)
            except Exception as exc:  # e.g. database is locked: keep it for the next poll
                print(f"[rehearsal] recording the answer failed, retrying: {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)
                left.append((ti_id, option, responder))
                continue
            if why_not:
                self.progress.say(f"  answer {option} by {responder} not recorded: {why_not}")
            else:
                self.progress.say(task_line(self.elapsed(None), "answer", self.asked.get(ti_id, str(ti_id)),
                                            f"{option} by {responder}"))
        self.unapplied = left


def step_value(value: Any) -> dict:
    """An XCom ``step`` value as stored (JSON text or already decoded) -> dict."""
    for _ in range(2):  # stored JSON may itself be a JSON string
        if isinstance(value, str | bytes):
            try:
                value = json.loads(value)
            except ValueError:
                return {}
    return value if isinstance(value, dict) else {}
