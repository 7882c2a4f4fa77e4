"""The runbook documents name only what exists: every DAG id, task id and param an on-call engineer reads in
``docs/ops`` is checked against the DAG files (parsed once, as ``test_dag_integrity`` does; no sandbox, no run).

How the documents mark names (``docs/ops/runbooks/README.md`` says so too):

- a backticked ``dr_...`` is a DAG id; a backticked ``dr_<dag>.<task id>`` is a task of that DAG;
- ``<!-- tasks: <dag_id> -->`` before a table: each row's first backticked cell is a task id of that DAG;
- ``<!-- params: <dag_id> -->`` before a table: each row's first backticked cell is a param of that DAG, and
  every param of the DAG has a row (a param nobody documented is missing at 3 a.m.);
- a relative link to a ``.md`` file must lead to a file.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.dags.test_dag_integrity import REPO, dagbag  # noqa: F401 - the DAG files parsed, no network

DOCS = REPO / "docs" / "ops"
# The plan names the first two; one per scenario and per runbook DAG.
REQUIRED = ["runbooks/postgres-failover.md", "07-backup-restore-runbook.md", "runbooks/volume-restore.md",
            "runbooks/scenario-a-control-plane-down.md", "runbooks/scenario-b-postgres-corruption.md",
            "runbooks/scenario-c-region-outage.md", "runbooks/scenario-d-snapshot-store-loss.md",
            "runbooks/README.md"]

NAME = re.compile(r"`(dr_[a-z0-9_]+)(?:\.([A-Za-z0-9_.]+))?`")
MARKER = re.compile(r"<!--\s*(tasks|params):\s*(dr_[a-z0-9_]+)\s*-->")
FIRST_CELL = re.compile(r"^\|\s*`([^`]+)`")
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def _table_after(lines: list[str], start: int) -> list[tuple[int, str]]:
    """(line number, first backticked cell) of each body row of the table that follows line ``start``."""
    rows, i = [], start + 1
    while i < len(lines) and not lines[i].startswith("|"):
        i += 1
    for n in range(i + 2, len(lines)):  # past the header and its separator
        if not lines[n].startswith("|"):
            break
        cell = FIRST_CELL.match(lines[n])
        rows.append((n + 1, cell.group(1) if cell else ""))
    return rows


def unknown_names(path: Path, text: str, dags: dict) -> list[str]:
    """Every DAG id, task id, param and link ``text`` names that does not exist, as ``<doc>:<line>: <what>``."""
    doc, lines, problems = path.name, text.splitlines(), []
    for n, line in enumerate(lines, 1):
        for dag_id, task_id in NAME.findall(line):
            if dag_id not in dags:
                problems.append(f"{doc}:{n}: no DAG {dag_id!r}")
            elif task_id and not dags[dag_id].has_task(task_id):
                problems.append(f"{doc}:{n}: DAG {dag_id!r} has no task {task_id!r}")
        for target in LINK.findall(line):
            if "://" not in target and not (path.parent / target).resolve().is_file():
                problems.append(f"{doc}:{n}: link to a missing file {target!r}")
        marker = MARKER.search(line)
        if not marker:
            continue
        kind, dag_id = marker.groups()
        if dag_id not in dags:
            problems.append(f"{doc}:{n}: no DAG {dag_id!r}")
            continue
        rows = _table_after(lines, n - 1)
        if not rows:
            problems.append(f"{doc}:{n}: no table after the {kind} marker of {dag_id!r}")
        dag = dags[dag_id]
        for row, name in rows:
            if kind == "tasks" and not dag.has_task(name):
                problems.append(f"{doc}:{row}: DAG {dag_id!r} has no task {name!r}")
            if kind == "params" and name not in dag.params:
                problems.append(f"{doc}:{row}: DAG {dag_id!r} has no param {name!r}")
        if kind == "params":
            documented = {name for _, name in rows}
            problems += [f"{doc}:{n}: param {name!r} of {dag_id!r} is not in the table" for name in dag.params
                         if name not in documented]
    return problems


@pytest.mark.parametrize("doc", REQUIRED)
def test_every_runbook_document_names_only_dags_tasks_and_params_that_exist(dagbag, doc):  # noqa: F811
    path = DOCS / doc
    assert path.is_file(), f"missing runbook document {path.relative_to(REPO)}"
    text = path.read_text()
    assert NAME.search(text), f"{doc} names no DAG"
    assert unknown_names(path, text, dagbag.dags) == []


def test_every_document_under_docs_ops_is_checked():
    assert sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")) == sorted(REQUIRED)


def test_the_check_names_the_document_and_each_missing_name(dagbag):  # noqa: F811
    bad = "\n".join([
        "Trigger `dr_runbook_postgres_failovr`, then `dr_runbook_postgres_failover.postgres_failover.promote`.",
        "See [the other one](no-such-runbook.md).",
        "<!-- tasks: dr_runbook_volume_restore -->",
        "| task id | what |", "|---|---|",
        "| `volume_restore.restore_volumes` | fine |",
        "| `volume_restore.restore_everything` | no such step |",
        "",
        "<!-- params: dr_runbook_volume_restore -->",
        "| param | meaning |", "|---|---|",
        "| `mode` | fine |", "| `volume` | misspelt |",
    ])
    problems = unknown_names(DOCS / "runbooks" / "bad.md", bad, dagbag.dags)
    assert problems[:5] == [
        "bad.md:1: no DAG 'dr_runbook_postgres_failovr'",
        "bad.md:1: DAG 'dr_runbook_postgres_failover' has no task 'postgres_failover.promote'",
        "bad.md:2: link to a missing file 'no-such-runbook.md'",
        "bad.md:7: DAG 'dr_runbook_volume_restore' has no task 'volume_restore.restore_everything'",
        "bad.md:13: DAG 'dr_runbook_volume_restore' has no param 'volume'",
    ]
    undocumented = {p.split("'")[1] for p in problems[5:]}
    assert undocumented == set(dagbag.dags["dr_runbook_volume_restore"].params) - {"mode"}
    assert all(p.startswith("bad.md:9: param ") for p in problems[5:])
