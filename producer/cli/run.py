"""``imagegen worker | api``: start a service in this process (exec)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from producer.client import Client
from producer.messages import QUEUES

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

    api = commands.add_parser("api", help="serve the HTTP API (uvicorn)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    api.set_defaults(handler=_api)


def _worker(client: Client, args: argparse.Namespace) -> NoReturn:
    settings = client.settings
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
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
    os.execv(sys.executable, command)  # noqa: S606  (a fixed argv, replacing this process)


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
    os.execv(sys.executable, command)  # noqa: S606  (a fixed argv, replacing this process)
