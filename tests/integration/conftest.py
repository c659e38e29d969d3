"""Real processes: Redis, a Celery worker (threads pool), the Bedrock emulator over HTTP and
moto's S3 server over HTTP, started by the same code as ``make demo``."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis

from devstack.processes import StackError, redis_answers, redis_server_binary
from devstack.stack import Stack, StackOptions
from imagegen.records import JobRecord
from producer.client import Client
from tests.conftest import require_service

pytestmark = pytest.mark.integration

# Each stack gets a Redis database of its own, flushed before it starts.
MAIN_STACK_DB = 14
BASE_REDIS = os.environ.get("IMAGEGEN_TEST_REDIS_BASE", "redis://127.0.0.1:6379")
FAST_RETRIES = {"IMAGEGEN_RETRY_BASE_S": "0.05", "IMAGEGEN_RETRY_CAP_S": "0.5"}
# The test stacks' APIs run one process, so the per-process bounds (streams, waits, memory)
# are tested as such; test_api_processes runs several.
ONE_API_PROCESS = {"IMAGEGEN_API_WORKERS": "1"}


def stack_redis_url(db: int) -> str | None:
    """A flushed database on the test Redis, or None to let the stack start a private one."""
    url = f"{BASE_REDIS}/{db}"
    if redis_answers(url):
        redis.Redis.from_url(url).flushdb()
        return url
    if redis_server_binary() is None:
        require_service(f"no Redis at {url} and no redis-server binary to start one")
    return None


def start_stack(run_dir: Path, db: int, **options: Any) -> Stack:
    url = stack_redis_url(db)
    options["extra_env"] = {**ONE_API_PROCESS, **options.get("extra_env", {})}
    stack = Stack(
        StackOptions(run_dir=run_dir, redis_url=url, force_private_redis=url is None, **options)
    )
    try:
        stack.__enter__()
    except StackError as e:
        pytest.fail(f"the local stack did not start: {e}")
    return stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The shared stack: one worker with 8 threads, an emulator without faults."""
    running = start_stack(
        tmp_path_factory.mktemp("stack"),
        MAIN_STACK_DB,
        worker_concurrency=8,
        extra_env=FAST_RETRIES,
        quota_rpm=6000,
        quota_burst=50,
    )
    yield running
    running.stop()


@pytest.fixture
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.settings()) as c:
        yield c


@pytest.fixture
def s3(stack: Stack) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=stack.env["IMAGEGEN_S3_ENDPOINT_URL"],
        region_name=stack.env["IMAGEGEN_AWS_REGION"],
    )


def wait_all(client: Client, job_ids: list[str], timeout_s: float = 90) -> list[JobRecord]:
    """Every job's record once all are final; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [r for r in client.get_many(job_ids) if r is not None]
        if len(records) == len(job_ids) and all(r.is_terminal for r in records):
            return records
        if time.monotonic() > deadline:
            pending = [f"{r.job_id}={r.status.value}" for r in records if not r.is_terminal]
            pytest.fail(f"jobs not final after {timeout_s} s: {pending}")
        time.sleep(0.1)
