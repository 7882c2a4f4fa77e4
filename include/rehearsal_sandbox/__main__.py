"""Sandbox commands: ``python -m rehearsal_sandbox up|down|status|backup``."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import psycopg

from rehearsal import heartbeat
from rehearsal_sandbox import wal_shipper as wal_shipper_entry
from rehearsal_sandbox.platform import Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal_sandbox")
    parser.add_argument("command", choices=["up", "down", "status", "backup", "run-heartbeat", "run-wal-shipper",
                                            "airflow-up", "airflow-down", "airflow-status"])
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--scale", type=float, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sandbox = Sandbox(args.state_dir)
    if args.command == "up":
        sandbox.up(scale=args.scale)
        return 0
    if args.command.startswith("airflow-"):
        return airflow_command(sandbox, args.command)
    if args.command == "down":
        from rehearsal_sandbox.airflow_deployment import LocalAirflow

        LocalAirflow(sandbox).down()
        sandbox.down()
        print("[sandbox] down: clusters, processes and runtime files removed")
        return 0
    if args.command == "status":
        status = sandbox.status()
        for name, item in status.items():
            print(f"{'ok  ' if item['ok'] else 'DOWN'} {name:24} {item['detail']}")
        return 0 if all(i["ok"] for i in status.values()) else 1
    if args.command == "backup":
        print(sandbox.take_backups())
        return 0
    if args.command == "run-wal-shipper":
        wal_shipper_entry.run(Path(sandbox.state["spool"]), sandbox.store())
        return 0
    if args.command == "run-heartbeat":
        from rehearsal.discovery import resolve

        route53 = sandbox.aws("route53")
        record = sandbox.discovery()
        password = sandbox.state["passwords"]["controlplane"]

        def connect(host: str, port: int):
            return psycopg.connect(host=host, port=port, dbname="controlplane", user="controlplane", password=password,
                                   connect_timeout=1, autocommit=True, options="-c statement_timeout=2000",
                                   application_name="heartbeat")

        heartbeat.run_writer(lambda: resolve(route53, record), connect, sandbox.dir / "heartbeat.log")
        return 0
    return 2


def airflow_command(sandbox: Sandbox, command: str) -> int:
    from rehearsal_sandbox.airflow_deployment import LocalAirflow

    if command == "airflow-up":
        if not sandbox.is_up():
            sandbox.up()
        LocalAirflow(Sandbox(sandbox.dir)).up()
        return 0
    deployment = LocalAirflow(sandbox)
    if command == "airflow-down":
        deployment.down()
        print("[airflow] stopped")
        return 0
    status = deployment.status()
    for name, item in status.items():
        print(f"{'ok  ' if item['ok'] else 'DOWN'} {name:24} {item['detail']}")
    return 0 if status and all(i["ok"] for i in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
