"""``imagegen worker | api | flower``: start a service in this process (exec); ``imagegen
health``: probe one."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from producer.cli.common import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNAVAILABLE, error
from producer.client import Client
from producer.health import answering_workers
from producer.messages import QUEUES

__all__ = ["register"]

# The Celery command line, pointed at our app (the producer names it, never imports it).
_CELERY = (sys.executable, "-m", "celery", "-A", "worker.app")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = commands.add_parser(
        "worker", help="run a Celery worker (extra arguments go to `celery worker`)"
    )
    worker.add_argument("-Q", "--queues", default=",".join(QUEUES))
    worker.add_argument("-c", "--concurrency", type=int, help="threads (default: setting)")
    worker.add_argument("-n", "--hostname", help="worker name, e.g. worker-interactive@%%h")
    worker.add_argument("celery_args", nargs=argparse.REMAINDER)
    worker.set_defaults(handler=_worker)

    flower = commands.add_parser("flower", help="run the Flower dashboard (needs a password)")
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--db", default=".imagegen/flower.db", help="persistent state file")
    flower.set_defaults(handler=_flower)

    health = commands.add_parser("health", help="exit 0 when the named part is alive")
    parts = health.add_subparsers(dest="part", required=True, metavar="PART")
    worker_health = parts.add_parser("worker", help="a worker answers a ping")
    worker_health.add_argument(
        "--destination", help="worker name, e.g. worker@host (default: any worker)"
    )
    worker_health.add_argument("--timeout", type=float, default=5.0)
    health.set_defaults(handler=_health)

    api = commands.add_parser("api", help="serve the HTTP API (uvicorn)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    api.set_defaults(handler=_api)


def _worker(client: Client, args: argparse.Namespace) -> NoReturn:
    settings = client.settings
    command = [
        *_CELERY,
        "worker",
        "--queues",
        args.queues,
        "--pool",
        settings.worker_pool,
        "--concurrency",
        str(args.concurrency or settings.worker_concurrency),
        "--loglevel",
        settings.log_level,
        "--events",
    ]
    if args.hostname:
        command += ["--hostname", args.hostname]
    command += [arg for arg in args.celery_args if arg != "--"]
    _exec(command)


def _flower(client: Client, args: argparse.Namespace) -> int:
    settings = client.settings
    command = [
        *_CELERY,
        "flower",
        f"--address={args.address}",
        f"--port={args.port}",
        "--persistent=True",
        f"--db={args.db}",
        "--purge_offline_workers=600",
    ]
    if settings.flower_basic_auth:
        command.append(f"--basic-auth={settings.flower_basic_auth}")
    elif not settings.flower_allow_no_auth:
        error(
            "Flower needs IMAGEGEN_FLOWER_BASIC_AUTH=user:password (or, on a machine of "
            "your own, IMAGEGEN_FLOWER_ALLOW_NO_AUTH=true)"
        )
        return EXIT_BAD_INPUT
    return _exec(command)


def _health(client: Client, args: argparse.Namespace) -> int:
    names = answering_workers(client.settings.redis_url, args.destination, args.timeout)
    if not names:
        error(
            f"no worker answered{f' as {args.destination}' if args.destination else ''} "
            f"within {args.timeout:g} s"
        )
        return EXIT_UNAVAILABLE
    for name in names:
        print(f"{name} ok")
    return EXIT_OK


def _api(client: Client, args: argparse.Namespace) -> NoReturn:
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "producer.api:app_from_env",
        "--factory",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--workers",
        str(args.workers),
        "--no-access-log",
    ]
    _exec(command)


def _exec(command: list[str]) -> NoReturn:
    """Become ``command`` (a fixed argv): signals then reach the service, not a wrapper."""
    os.execv(command[0], command)  # noqa: S606
