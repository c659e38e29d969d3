"""The command lines of the service's processes (worker, API, Flower), built in one place for
``imagegen worker|api|flower`` and for the local stack (``devstack``).

Each is a ``Launch``: the argv to run and the environment it needs on top of the caller's. The
producer names the worker's Celery app; it never imports it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from imagegen.messages import QUEUES

__all__ = ["CELERY_APP", "Launch", "api_launch", "flower_launch", "worker_launch"]

CELERY_APP = "worker.app"
API_FACTORY = "producer.api:app_from_env"
# The producer names its protocol class; the launcher never imports it.
API_PROTOCOL = "producer.api.http_protocol:BoundedH11Protocol"
# glibc gives each thread that allocates an arena of its own (up to 8 a core): with tens of
# threads their free pages stay resident. Two are enough for a worker whose threads mostly wait.
WORKER_MALLOC_ARENAS = "2"


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, *args]


def worker_launch(
    *,
    pool: str,
    concurrency: int,
    loglevel: str,
    queues: Sequence[str] = QUEUES,
    hostname: str | None = None,
    extra_args: Sequence[str] = (),
) -> Launch:
    """A Celery worker. The concurrency also goes to the worker's settings
    (``IMAGEGEN_WORKER_CONCURRENCY``), which size its Redis and boto3 connection pools; glibc's
    malloc keeps ``WORKER_MALLOC_ARENAS`` arenas unless ``MALLOC_ARENA_MAX`` is set."""
    argv = _celery(
        "worker",
        "--queues",
        ",".join(queues),
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        loglevel,
        "--events",
    )
    if hostname:
        argv += ["--hostname", hostname]
    argv += [arg for arg in extra_args if arg != "--"]
    env = {
        "IMAGEGEN_WORKER_CONCURRENCY": str(concurrency),
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", WORKER_MALLOC_ARENAS),
    }
    return Launch(argv, env)


def api_launch(
    *,
    host: str,
    port: int,
    workers: int = 1,
    max_header_bytes: int = 16_384,
    keep_alive_s: int = 5,
) -> Launch:
    """The HTTP API under uvicorn, with our h11 protocol (``producer.api.http_protocol``): a
    request's head bounded in bytes (431) and in time (``api_header_timeout_s``, which the
    protocol reads from the settings), idle keep-alive connections closed after
    ``keep_alive_s``."""
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        API_FACTORY,
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        # uvicorn would trust X-Forwarded-For and X-Forwarded-Proto from 127.0.0.1 itself; the
        # API decides whom to trust (IMAGEGEN_API_TRUSTED_PROXIES).
        "--no-proxy-headers",
        "--http",
        API_PROTOCOL,
        "--h11-max-incomplete-event-size",
        str(max_header_bytes),
        "--timeout-keep-alive",
        str(keep_alive_s),
        # The API serves no WebSocket: an Upgrade request is answered as plain HTTP.
        "--ws",
        "none",
        "--no-server-header",
    ]
    return Launch(argv)


def flower_launch(*, address: str, port: int, db: str, basic_auth: str | None) -> Launch:
    """Flower with a persistent state file. The password travels in the environment
    (``FLOWER_BASIC_AUTH``), never on the command line where ``ps`` shows it."""
    argv = _celery(
        "flower",
        f"--address={address}",
        f"--port={port}",
        "--persistent=True",
        f"--db={db}",
        "--purge_offline_workers=600",
    )
    return Launch(argv, {"FLOWER_BASIC_AUTH": basic_auth} if basic_auth else {})
