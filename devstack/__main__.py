"""``python -m devstack demo|dev``: the embedded local stack."""

from __future__ import annotations

import argparse
import secrets
import shlex
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from devstack.chaos import FAILOVER_PLANS, ChaosPlan, run_chaos, run_failover_chaos
from devstack.demo import run_demo
from devstack.processes import StackError, free_port, interrupt_on_signal
from devstack.stack import DEV_POOLS, EmulatedPool, Stack, StackOptions

FLOWER_PORT = 5555
API_PORT = 8000
_WATCH_S = 0.5


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack")
    parser.add_argument("command", choices=("demo", "dev", "chaos", "chaos-failover"))
    parser.add_argument("--jobs", type=int, default=ChaosPlan.jobs, help="chaos: jobs to run")
    parser.add_argument(
        "--failover",
        choices=(*FAILOVER_PLANS, "both"),
        default="both",
        help="chaos-failover: lose the primary by SIGKILL, by a partition, or one run of each",
    )
    parser.add_argument("--out", default="out", help="where the demo saves images and records")
    parser.add_argument(
        "--pools",
        type=int,
        choices=(0, 1, 2),
        default=0,
        help="dev: Bedrock pools on the emulator (two: two Regions, each its own quota)",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, interrupt_on_signal)
    try:
        if args.command == "demo":
            return run_demo(Path(args.out))
        if args.command == "chaos":
            report = run_chaos(ChaosPlan(jobs=args.jobs), Path(args.out), Path(".imagegen/chaos"))
            return 0 if report["goals_met"] else 1
        if args.command == "chaos-failover":
            modes = list(FAILOVER_PLANS) if args.failover == "both" else [args.failover]
            plans = {mode: replace(FAILOVER_PLANS[mode], jobs=args.jobs) for mode in modes}
            report = run_failover_chaos(plans, Path(args.out), Path(".imagegen/chaos-failover"))
            return 0 if report["goals_met"] else 1
        return run_dev(DEV_POOLS[: args.pools])
    except StackError as e:
        print(f"devstack: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # interrupted while starting: what had started is stopped
        return 130


def run_dev(pools: Sequence[EmulatedPool] = ()) -> int:
    """The stack in the foreground, with Flower, until Ctrl-C (with ``pools``, the emulator
    serves them and the settings name them)."""
    flower_port = FLOWER_PORT if _port_free(FLOWER_PORT) else free_port()
    print("Starting the local stack...", flush=True)
    api_port = API_PORT if _port_free(API_PORT) else free_port()
    # The console's operator view (and /v1/admin) for this run only.
    operator_token = secrets.token_urlsafe(24)
    options = StackOptions(
        flower_port=flower_port,
        api_port=api_port,
        extra_env={"IMAGEGEN_API_ADMIN_TOKEN": operator_token},
        pools=pools,
    )
    with Stack(options) as stack:
        print("\nUp:")
        for name, url in stack.urls.items():
            processes = stack.api_workers.get(name)
            print(f"  {name:<8} {url}" + (f"  ({processes} processes)" if processes else ""))
        print(f"  console  {stack.urls['api']}/console  (log in with an API key, below, or")
        print(f"           the operator token {operator_token})")
        print(f"  docs     {stack.urls['api']}/docs")
        print(f"  metrics  {stack.urls['api']}/metrics")
        print(f"  Flower login: {stack.flower_auth}")
        print(f"  logs     {stack.processes.log_dir}")
        for pool in pools:
            print(f"  pool     {pool.name} ({pool.region}, {pool.rpm:g}/min on the emulator)")
        print("\nTo use it from another shell:")
        for line in export_lines(stack.exports()):
            print(f"  {line}")
        print('  .venv/bin/imagegen submit "a lighthouse at dawn" --wait --output lighthouse.png')
        print("  KEY=$(.venv/bin/imagegen keys create --tenant me)   # then, for the HTTP API:")
        print(
            f'  curl -H "Authorization: Bearer $KEY" {stack.urls["api"]}/v1/jobs '
            """-d '{"request": {"prompt": "a lighthouse"}}'"""
        )
        print("\nCtrl-C stops everything.", flush=True)
        try:
            while not (failed := stack.processes.failed()):
                time.sleep(_WATCH_S)
            print(f"devstack: {', '.join(failed)} exited; stopping.", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            for sig in (signal.SIGINT, signal.SIGTERM):  # one stop is enough
                signal.signal(sig, signal.SIG_IGN)
            print("\nStopping...", flush=True)
    return 0


def export_lines(exports: Mapping[str, str]) -> list[str]:
    """``export NAME=value`` lines a shell reads back as the same values (JSON included)."""
    return [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]


def _port_free(port: int) -> bool:

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    sys.exit(main())
