"""``imagegen worker | api | flower``: start a service in this process (exec); ``imagegen
health``: probe one."""

from __future__ import annotations

import argparse
import os
from typing import NoReturn

from imagegen.health import answering_workers
from imagegen.launcher import Launch, api_launch, flower_launch, worker_launch
from imagegen.messages import QUEUES
from producer.cli.common import EXIT_BAD_INPUT, EXIT_OK, EXIT_UNAVAILABLE, error
from producer.client import Client

__all__ = ["register"]


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
    api.add_argument(
        "--workers",
        type=int,
        help="worker processes (default: IMAGEGEN_API_WORKERS, else one per CPU)",
    )
    api.set_defaults(handler=_api)


def _worker(client: Client, args: argparse.Namespace) -> NoReturn:
    settings = client.settings
    _exec(
        worker_launch(
            pool=settings.worker_pool,
            concurrency=args.concurrency or settings.worker_concurrency,
            loglevel=settings.log_level,
            queues=args.queues.split(","),
            hostname=args.hostname,
            extra_args=args.celery_args,
        )
    )


def _flower(client: Client, args: argparse.Namespace) -> int:
    settings = client.settings
    if not settings.flower_basic_auth and not settings.flower_allow_no_auth:
        error(
            "Flower needs IMAGEGEN_FLOWER_BASIC_AUTH=user:password (or, on a machine of "
            "your own, IMAGEGEN_FLOWER_ALLOW_NO_AUTH=true)"
        )
        return EXIT_BAD_INPUT
    return _exec(
        flower_launch(
            address=args.address,
            port=args.port,
            db=args.db,
            basic_auth=settings.flower_basic_auth,
        )
    )


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
    settings = client.settings
    _exec(
        api_launch(
            host=args.host,
            port=args.port,
            workers=args.workers or settings.api_processes(),
            max_header_bytes=settings.api_max_header_bytes,
            keep_alive_s=settings.api_keep_alive_s,
        )
    )


def _exec(launch: Launch) -> NoReturn:
    """Become the service (a fixed argv): signals then reach it, not a wrapper."""
    os.execve(launch.argv[0], launch.argv, {**os.environ, **launch.env})  # noqa: S606
