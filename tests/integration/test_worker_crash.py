"""A worker killed with SIGKILL mid-job, or between the release of a job and its start: the job
runs again and completes exactly once."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack
from tests.support import emulator_stats

pytestmark = pytest.mark.integration

CRASH_STACK_DB = 13
# Short timings so redelivery happens within seconds: a Bedrock call of about 2 s, a lease and
# hard limit of 6.5 s, and a released job nobody claims put back to wait after 2 s.
SHORT_TIMINGS = {
    **FAST_RETRIES,
    "IMAGEGEN_BEDROCK_CONNECT_TIMEOUT_S": "1",
    "IMAGEGEN_BEDROCK_READ_TIMEOUT_S": "3",
    "IMAGEGEN_S3_UPLOAD_ATTEMPTS": "1",
    "IMAGEGEN_S3_CONNECT_TIMEOUT_S": "1",
    "IMAGEGEN_S3_READ_TIMEOUT_S": "1",
    "IMAGEGEN_TASK_SOFT_TIME_LIMIT_S": "6",
    "IMAGEGEN_TASK_TIME_LIMIT_S": "6.5",
    "IMAGEGEN_DISPATCH_REDRIVE_GRACE_S": "2",
}


@pytest.fixture(scope="module")
def crash_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("crash"),
        CRASH_STACK_DB,
        worker_concurrency=2,
        workers=(("doomed", "interactive,batch"),),
        extra_env=SHORT_TIMINGS,
        emulator_args=("--latency-ms", "2000"),
    )
    yield running
    running.stop()


def test_a_killed_worker_loses_no_job_and_writes_one_object(crash_stack: Stack) -> None:
    emulator = crash_stack.urls["bedrock"]
    with Client(crash_stack.settings()) as client:
        job = client.submit("a job that survives its worker", output_format="png")
        deadline = time.monotonic() + 10
        while emulator_stats(emulator)["in_flight"] == 0:
            assert time.monotonic() < deadline, "the worker never called Bedrock"
            time.sleep(0.05)
        assert client.get(job.job_id).status is JobStatus.RUNNING

        crash_stack.processes.stop("doomed", signal.SIGKILL)
        crash_stack.start_worker("survivor", "interactive,batch")

        record = client.wait(job.job_id, timeout_s=40)
    assert record.status is JobStatus.SUCCEEDED
    assert record.attempts == 2
    assert record.s3_key is not None

    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=crash_stack.env["IMAGEGEN_S3_ENDPOINT_URL"], region_name="us-west-2"
    )
    prefix = str(Path(record.s3_key).parent) + "/"
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=record.s3_bucket, Prefix=prefix).get("Contents", [])
    ]
    assert keys == [record.s3_key]


def test_a_job_whose_release_went_with_a_dead_worker_runs_once(crash_stack: Stack) -> None:
    with Client(crash_stack.settings()) as client:
        for name in ("doomed", "survivor", "after-release"):  # every worker this module starts
            crash_stack.processes.stop(name, signal.SIGKILL)
        calls_before = emulator_stats(crash_stack.urls["bedrock"])["requests"]
        job = client.submit("a job released to a worker that died before starting it")
        redis = client.jobs.redis
        # The release's message, popped by a worker that died before it claimed the job.
        assert redis.rpop("interactive") is not None
        assert client.get(job.job_id).status is JobStatus.QUEUED
        crash_stack.start_worker("after-release", "interactive,batch")
        record = client.wait(job.job_id, timeout_s=30)
    assert (record.status, record.attempts) == (JobStatus.SUCCEEDED, 1)
    assert emulator_stats(crash_stack.urls["bedrock"])["requests"] == calls_before + 1
