"""Scratch-area bookkeeping: what a run restored under ``<scratch_root>/<run key>`` and how it goes away.

Every cluster a run creates there has a ``<name>.port`` marker beside its data directory (written before the
cluster is created, so a crash leaves a trace). A cluster that became the platform's primary is kept.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from rehearsal.postgres.cluster import LocalCluster


def run_cluster(run_dir: Path, name: str) -> LocalCluster:
    """The cluster ``name`` of a run: the same one a crashed earlier try created (same port, from its marker), or a
    new one on a free port, its marker written first so a crash leaves a trace the teardown finds."""
    from rehearsal.postgres.cluster import free_port

    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    marker = run_dir / f"{name}.port"
    if not marker.exists():
        marker.write_text(str(free_port()))
    return LocalCluster(name=name, data_dir=run_dir / name, port=int(marker.read_text()))


def run_clusters(run_dir: Path) -> list[LocalCluster]:
    """The clusters a run's markers name (whether or not they still exist)."""
    if not run_dir.exists():
        return []
    return [LocalCluster(m.name[: -len(".port")], run_dir / m.name[: -len(".port")], int(m.read_text()))
            for m in sorted(run_dir.glob("*.port"))]


def destroy_run_area(run_dir: Path, keep_data_dirs: set[str] = frozenset()) -> list[str]:
    """Destroy every cluster of the run (processes, data, markers, logs, quarantine) except those whose data
    directory is in ``keep_data_dirs``; remove the folder when nothing is kept. Returns what was removed."""
    cleaned = []
    kept = {Path(d).name for d in keep_data_dirs if Path(d).parent == run_dir}
    for cluster in run_clusters(run_dir):
        if cluster.name in kept:
            continue
        cluster.destroy()
        cleaned.append(f"cluster:{cluster.name}@{cluster.address}")
    if not run_dir.exists():
        return cleaned
    for leftover in run_dir.iterdir():
        if any(leftover.name == k or leftover.name.startswith(k + ".") for k in kept):
            continue  # a kept cluster, its log and markers
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    if not kept:
        shutil.rmtree(run_dir, ignore_errors=True)
        cleaned.append(f"dir:{run_dir}")
    return cleaned
