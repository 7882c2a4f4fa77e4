"""Helpers shared by the sandbox-level tests: source-backup fingerprints and leak checks."""
from __future__ import annotations

from pathlib import Path

import psutil


def source_fingerprint(store) -> dict[str, tuple[int, str]]:
    """(size, ETag) of every base-backup and dump object: proof that nothing modified a source backup."""
    out = {}
    for kind in ("base_backup", "logical_dump"):
        for page_obj in store.iter_objects(store.prefix(kind)):
            head = store.head(page_obj.key)
            out[page_obj.key] = (head["ContentLength"], head["ETag"])
    return out


def server_processes(runtime: str) -> list[str]:
    """postgres processes whose data directory lives under ``runtime``."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if proc.info["name"] == "postgres" and any(runtime in part for part in proc.info["cmdline"] or []):
                found.append(" ".join(proc.info["cmdline"]))
        except psutil.Error:
            continue
    return found


def leftovers(sandbox) -> dict[str, list]:
    """Drill-owned resources that should not exist outside the sandbox's own inventory."""
    runtime = Path(sandbox.runtime)
    known_dirs = {str(Path(i["data_dir"])) for i in sandbox.clusters.values()}
    running = [p for p in server_processes(str(runtime)) if not any(d in p for d in known_dirs)]
    scratch = runtime / "scratch"
    stray = []
    if scratch.exists():
        for run_dir in scratch.iterdir():
            for item in run_dir.iterdir():
                if not any(str(item) == d or str(item).startswith(d + ".") for d in known_dirs):
                    stray.append(str(item))
    lost = runtime / "lost"  # data directories a fault moved aside: the teardown deletes them
    if lost.exists():
        stray += [str(item) for item in lost.iterdir()]
    # A run's copies on hosts the provisioner placed: released by the run's teardown unless production adopted them.
    stray += [f"copy {name} ({info['role']}) at {info.get('host', '127.0.0.1')}:{info['port']}"
              for name, info in sandbox.clusters.items() if info["role"] in ("restoring", "scratch")]
    return {"processes": running, "scratch": stray}
