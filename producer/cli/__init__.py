"""``imagegen``: submit and follow jobs from a shell, operate the service, start its processes.

Exit status: 0 success; 1 a job ended without an image (failed, filtered, canceled, expired);
2 bad input; 3 timed out waiting; 4 no such job; 5 Redis or S3 unreachable; 6 too many jobs
waiting (try again later).
Errors go to stderr; ``--json`` prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import redis
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from imagegen.contract import validation_errors
from imagegen.errors import (
    IdempotencyConflictError,
    ImagegenError,
    InvalidRequestError,
    JobConflictError,
    JobNotFoundError,
    JobTimeoutError,
    QueueFullError,
)
from imagegen.settings import get_settings
from producer.cli import jobs, ops, run, setup, spend
from producer.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_JOB_UNSUCCESSFUL,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_UNAVAILABLE,
    error,
)
from producer.client import Client

__all__ = ["build_parser", "main"]

_EXIT_STATUSES: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int], ...] = (
    ((JobConflictError, IdempotencyConflictError, ValueError), EXIT_BAD_INPUT),
    (JobNotFoundError, EXIT_NOT_FOUND),
    (JobTimeoutError, EXIT_TIMEOUT),
    (QueueFullError, EXIT_BUSY),
    ((BotoCoreError, ClientError), EXIT_UNAVAILABLE),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegen",
        description="Stability image jobs on AWS Bedrock: submit, follow, operate, run.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    jobs.register(commands)
    ops.register(commands)
    run.register(commands)
    spend.register(commands)
    setup.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as e:
        for item in validation_errors(e):
            error(f"setting IMAGEGEN_{item.field.upper()}: {item.message}")
        return EXIT_BAD_INPUT
    try:
        with Client(settings) as client:
            return int(args.handler(client, args))
    except InvalidRequestError as e:
        for item in e.errors:
            error(str(item))
        return EXIT_BAD_INPUT
    except redis.RedisError as e:
        error(f"Redis at {settings.redis_url} is not usable: {e}")
        return EXIT_UNAVAILABLE
    except (ImagegenError, ValueError, BotoCoreError, ClientError) as e:
        error(str(e))
        return _exit_status(e)


def _exit_status(failure: Exception) -> int:
    for kinds, status in _EXIT_STATUSES:
        if isinstance(failure, kinds):
            return status
    return EXIT_JOB_UNSUCCESSFUL
