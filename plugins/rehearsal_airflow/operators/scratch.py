"""Scratch space: folders the operators create for themselves, and the setup step that prepares a run's area.

The restored clusters live below ``<scratch_root>/<run key>`` and run as the unprivileged server user
(``rehearsal-pg`` when we are root), so every folder on that path must be traversable by it, whatever
the umask. Nothing here assumes that the sandbox (or anything else) created ``scratch_root``.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from airflow.sdk import Context

from rehearsal_airflow.environment import current_environment
from rehearsal_airflow.operators.base import DrillStepOperator, key_of

TRAVERSABLE = 0o755
_TRAVERSE_BITS = 0o055  # group and others may list and enter


def ensure_traversable_dir(path: Path | str) -> Path:
    """Create ``path`` and any missing parent, each ``0755`` whatever the umask; return it.

    Folders that already existed are left as they are, except ``path`` itself when it is ours: it gets
    group/other read and search added if it lacks them (the server user must traverse it).
    """
    path = Path(path)
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)  # another task may create it at the same moment
        if folder.stat().st_uid == os.geteuid():
            folder.chmod(TRAVERSABLE)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    info = path.stat()
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & _TRAVERSE_BITS != _TRAVERSE_BITS:
        path.chmod(stat.S_IMODE(info.st_mode) | _TRAVERSE_BITS)
    return path


def run_scratch_dir(context: Context) -> Path | None:
    """``<scratch_root>/<run key>``: where this run's scratch clusters live (None without a scratch_root)."""
    root = current_environment().scratch_root
    return Path(root) / key_of(context) if root else None


class PrepareScratchAreaOperator(DrillStepOperator):
    """Setup step: create this run's scratch folder (and ``scratch_root`` if missing), traversable by the
    server user. It starts nothing, so it succeeds whenever the folder can exist at all; its teardown
    (``DrillTeardownOperator``) then runs whatever the steps in between did or failed to do."""

    def run_step(self, context: Context) -> dict:
        run_dir = run_scratch_dir(context)
        if run_dir is None:
            return {"scratch_dir": None, "detail": "the environment sets no scratch_root: nothing to prepare"}
        existed = run_dir.exists()
        ensure_traversable_dir(run_dir.parent)
        ensure_traversable_dir(run_dir)
        return {"scratch_dir": str(run_dir),
                "detail": f"scratch area {run_dir} {'reused' if existed else 'created'}"}


class DestroyScratchAreaOperator(DrillStepOperator):
    """Teardown of ``PrepareScratchAreaOperator``: every cluster the run restored into its scratch area is destroyed
    (processes, data, markers, logs) and the folder removed, whatever the steps in between did."""

    def run_step(self, context: Context) -> dict:
        from rehearsal.scratch import destroy_run_area

        run_dir = run_scratch_dir(context)
        cleaned = destroy_run_area(run_dir) if run_dir else []
        return {"resources_cleaned": cleaned, "resources_created": [], "detail": f"cleaned {len(cleaned)} resource(s)"}
