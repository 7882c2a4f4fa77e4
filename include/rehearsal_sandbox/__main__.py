"""Sandbox commands: ``python -m rehearsal_sandbox up|down|status|backup``, the Airflow beside it, and the bodies
of its daemons (``run-heartbeat``, ``run-wal-shipper``, ``run-api``, ``run-scheduler``, ``run-reconciler``,
``run-agents``, ``run-prober``, ``run-load``, ``run-snapshot-store``, ``run-pgbench``: what the sandbox starts, not for people)."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rehearsal_sandbox.components.control_plane import SERVICES
from rehearsal_sandbox.sandbox import REGION, Sandbox


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rehearsal_sandbox")
    parser.add_argument("command", choices=["up", "down", "status", "backup", "run-heartbeat", "run-wal-shipper",
                                            *(f"run-{service}" for service in SERVICES), "run-snapshot-store",
                                            "run-edge", "run-dns", "run-customers", "run-pgbench",
                                            "airflow-up", "airflow-down", "airflow-status", "region-down", "region-up"])
    parser.add_argument("target_region", nargs="?", default=None, help="region-down / region-up: which region")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--region", default=REGION, help="the region a daemon belongs to (run-*)")
    parser.add_argument("--scale", type=float, default=None)
    parser.add_argument("--mode", default=None, help="the API's mode at start (run-api)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sandbox = Sandbox(args.state_dir, region=args.region)
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
        for name, item in status.items():  # one line per component
            print(f"{'ok  ' if item['ok'] else 'DOWN'} {name:28} {item['detail']}")
        return 0 if all(i["ok"] for i in status.values()) else 1
    if args.command == "backup":
        print(sandbox.take_backups())
        return 0
    if args.command == "run-wal-shipper":
        sandbox.wal_shipping.run()
        return 0
    if args.command == "run-heartbeat":
        sandbox.heartbeat.run()
        return 0
    if args.command == "run-snapshot-store":
        sandbox.snapshot_store.run()
        return 0
    if args.command in ("region-down", "region-up"):
        if not args.target_region:
            parser.error(f"{args.command} needs a region (us-east-1 or us-west-2)")
        done = (sandbox.region_down if args.command == "region-down" else sandbox.region_up)(args.target_region)
        print(json.dumps(done, indent=2))
        return 0
    if args.command == "run-api":
        sandbox.components(args.region)["api"].run(args.mode)
        return 0
    if args.command.startswith("run-"):
        daemon = args.command[4:]
        component = next((c for c in sandbox.components(args.region).values() if getattr(c, "daemon", None) == daemon),
                         None)
        if component is None:
            print(f"no daemon {daemon!r} in {args.region}", file=sys.stderr)
            return 2
        component.run()
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
