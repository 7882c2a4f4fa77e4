"""A local PostgreSQL cluster run as the unprivileged server user: initdb, start, stop, kill."""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from rehearsal.postgres.binaries import chown_to_server, pg_tool, run_as_server, runtime_root

log = logging.getLogger(__name__)


def free_port(start: int = 0, host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` (a loopback address) that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((host, start))
        return sock.getsockname()[1]


def _serving(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@dataclass
class LocalCluster:
    """One PostgreSQL data directory and the server that runs on it, listening on ``host:port`` only.

    ``host`` is the address of the machine it runs on: a sandbox host's own address in 127.0.0.0/8, or 127.0.0.1 for
    what the Airflow worker makes for itself (a scratch copy of a restore test)."""

    name: str
    data_dir: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def socket_dir(self) -> Path:
        """Its Unix socket's folder, one per address: servers on several hosts may share a port."""
        return runtime_root() / "sockets" / self.host

    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def prepare_parent(self) -> None:
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir.parent.chmod(0o755)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.chmod(0o1777)
        self.socket_dir.parent.chmod(0o1777)

    def make_empty_data_dir(self) -> None:
        """An empty data directory owned by the server user (its parent stays root's)."""
        self.prepare_parent()
        self.data_dir.mkdir(mode=0o700)
        chown_to_server(self.data_dir)

    def initdb(self, superuser_password: str, wal_segsize_mb: int = 1) -> None:
        """Create the cluster: scram passwords over TCP, trust on the private socket only."""
        self.prepare_parent()
        if self.is_running():
            raise RuntimeError(f"refusing to initdb over {self.data_dir}: a server is running on it")
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
        self.make_empty_data_dir()
        pwfile = self.data_dir.parent / f".{self.name}.pw"
        pwfile.write_text(superuser_password)
        pwfile.chmod(0o600)
        chown_to_server(pwfile)
        try:
            run_as_server([
                pg_tool("initdb"), "-D", str(self.data_dir), "-U", "postgres", f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
                f"--wal-segsize={wal_segsize_mb}",
            ], timeout=120)
        finally:
            pwfile.unlink(missing_ok=True)

    def configure(self, settings: dict[str, object]) -> None:
        """Append settings to postgresql.auto.conf, which the server reads last: they override both a
        copied postgresql.conf and anything ALTER SYSTEM left in the copy (later lines win)."""
        lines = ["", "# --- set by rehearsal ---"]
        for key, value in settings.items():
            if isinstance(value, bool):
                rendered = "on" if value else "off"
            elif isinstance(value, int | float):
                rendered = str(value)
            else:
                rendered = "'" + str(value).replace("'", "''") + "'"
            lines.append(f"{key} = {rendered}")
        conf = self.data_dir / "postgresql.auto.conf"
        existed = conf.exists()
        with conf.open("a") as fh:
            fh.write("\n".join(lines) + "\n")
        if not existed:
            chown_to_server(conf)

    def allow_replication(self) -> None:
        hba = self.data_dir / "pg_hba.conf"
        with hba.open("a") as fh:
            fh.write("host replication all 127.0.0.1/32 scram-sha-256\n")

    def start(self, timeout: int = 60, wait: bool = True) -> None:
        if self.is_running():
            return
        self.prepare_parent()
        args = [pg_tool("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file), "-t", str(timeout),
                "-o", f"-p {self.port} -k {self.socket_dir} -c listen_addresses={self.host}"]
        args += ["-w"] if wait else ["-W"]
        self.log_file.touch(exist_ok=True)
        chown_to_server(self.log_file)
        result = run_as_server(args + ["start"], timeout=timeout + 10, check=False,
                               stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
        if result.returncode != 0 and wait:
            raise RuntimeError(f"cluster {self.name} at {self.address} did not start: {self.log_tail()}")

    def log_tail(self, lines: int = 8) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if psutil.pid_exists(pid) else None

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        if pid is None:
            return False
        try:
            return psutil.Process(pid).name() == "postgres"
        except psutil.Error:
            return False

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        if not self.is_running():
            return
        run_as_server([pg_tool("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-t", str(timeout), "-w", "stop"],
                      timeout=timeout + 10, check=False, stdout=open(os.devnull, "w"), stderr=open(os.devnull, "w"))
        if self.is_running():
            self.kill()

    def kill(self) -> int | None:
        """SIGKILL the postmaster and every child: the abrupt loss of a server, not a shutdown."""
        pid = self.postmaster_pid()
        if pid is None:
            return None
        try:
            proc = psutil.Process(pid)
            victims = [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return None
        for victim in victims:
            try:
                victim.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        # Dead once gone or a zombie (a zombie serves nothing; who reaps it is not ours to wait for): polled every
        # 10 ms, so the moment the fault took effect is recorded to within that.
        deadline = time.monotonic() + 10
        while any(_serving(v) for v in victims) and time.monotonic() < deadline:
            time.sleep(0.01)
        return pid

    def destroy(self) -> None:
        """Stop (or kill) the server and delete its data directory and log."""
        if self.is_running():
            self.stop(mode="immediate", timeout=20)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)

    def wait_until_accepting(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = run_as_server([pg_tool("pg_isready"), "-h", self.host, "-p", str(self.port), "-t", "2"],
                                   check=False, timeout=10)
            if result.returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"cluster {self.name} at {self.address} not accepting after {timeout}s: {self.log_tail()}")
