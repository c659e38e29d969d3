"""``imagegen``: submit and follow jobs from a shell, operate the service, start its processes.

Exit status: 0 success; 1 a job ended without an image (failed, filtered, canceled, expired);
2 bad input; 3 timed out waiting; 4 no such job; 5 Redis or S3 unreachable; 6 too many jobs
waiting (try again later).
Errors go to stderr; ``--json`` prints exactly one JSON document on stdout.

The job commands (submit, upload, chain, status, wait, cancel, jobs, batch, models) talk to
Redis directly, or with ``--api URL`` to the HTTP API with the key in ``IMAGEGEN_API_KEY``; the
operator's commands always talk to Redis.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

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
    ReplicaAckTimeoutError,
)
from imagegen.settings import get_settings
from imagegen_client import (
    API_KEY_ENV,
    ApiConnectionError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    ImagegenClient,
    ImagegenClientError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from imagegen_client import InvalidRequestError as ApiInvalidRequestError
from producer.cli import jobs, ops, recover, run, setup, spend, submit
from producer.cli.backends import ApiJobs, RedisJobs
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
    (
        (
            JobConflictError,
            IdempotencyConflictError,
            ValueError,
            AuthenticationError,
            BadRequestError,
            ConflictError,
            PayloadTooLargeError,
        ),
        EXIT_BAD_INPUT,
    ),
    ((JobNotFoundError, NotFoundError), EXIT_NOT_FOUND),
    (JobTimeoutError, EXIT_TIMEOUT),
    ((QueueFullError, RateLimitedError), EXIT_BUSY),
    (
        (
            BotoCoreError,
            ClientError,
            ApiConnectionError,
            RequestTimeoutError,
            ServiceUnavailableError,
            ReplicaAckTimeoutError,
        ),
        EXIT_UNAVAILABLE,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegen",
        description="Stability image jobs on AWS Bedrock: submit, follow, operate, run.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    submit.register(commands)
    jobs.register(commands)
    ops.register(commands)
    recover.register(commands)
    run.register(commands)
    spend.register(commands)
    setup.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "api", None):
        return _guarded(lambda: _over_api(args), where=f"the API at {args.api}")
    try:
        settings = get_settings()
    except ValidationError as e:
        for item in validation_errors(e):
            error(f"setting IMAGEGEN_{item.field.upper()}: {item.message}")
        return EXIT_BAD_INPUT

    def over_redis() -> int:
        with Client(settings) as client:
            if hasattr(args, "jobs_handler"):
                return int(args.jobs_handler(RedisJobs(client), args))
            return int(args.handler(client, args))

    return _guarded(over_redis, where=f"Redis at {settings.redis_url}")


def _over_api(args: argparse.Namespace) -> int:
    key = os.environ.get(API_KEY_ENV)
    if not key:
        error(f"--api needs an API key in {API_KEY_ENV} (imagegen keys create --tenant NAME)")
        return EXIT_BAD_INPUT
    with ImagegenClient(args.api, key) as client:
        return int(args.jobs_handler(ApiJobs(client), args))


def _guarded(command: Callable[[], int], *, where: str) -> int:
    """Run a command; every failure becomes one clear message and its exit status."""
    try:
        return command()
    except (InvalidRequestError, ApiInvalidRequestError) as e:
        for message in [f"{item.field}: {item.message}" for item in e.errors] or [str(e)]:
            error(message)
        return EXIT_BAD_INPUT
    except redis.RedisError as e:
        error(f"{where} is not usable: {e}")
        return EXIT_UNAVAILABLE
    except (ApiConnectionError, RequestTimeoutError) as e:
        error(f"{where} is not reachable: {e}")
        return EXIT_UNAVAILABLE
    except AuthenticationError as e:
        error(f"{e} (check {API_KEY_ENV})")
        return EXIT_BAD_INPUT
    except (ImagegenError, ImagegenClientError, ValueError, BotoCoreError, ClientError) as e:
        error(str(e))
        return _exit_status(e)


def _exit_status(failure: Exception) -> int:
    for kinds, status in _EXIT_STATUSES:
        if isinstance(failure, kinds):
            return status
    return EXIT_JOB_UNSUCCESSFUL
