"""SIGTERM: a worker stops taking jobs, finishes the ones in flight, leaves the rest queued."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack
from tests.integration.test_end_to_end import wait_all
from tests.support import emulator_stats

pytestmark = pytest.mark.integration

SHUTDOWN_STACK_DB = 7


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("shutdown"),
        SHUTDOWN_STACK_DB,
        worker_concurrency=2,
        workers=(("draining", "interactive,batch"),),
        extra_env=FAST_RETRIES,
        emulator_args=("--latency-ms", "2000"),
        quota_rpm=0,
    )
    yield running
    running.stop()


def test_sigterm_finishes_jobs_in_flight_and_loses_none(slow_stack: Stack) -> None:
    emulator = slow_stack.urls["bedrock"]
    with Client(slow_stack.settings()) as client:
        jobs = client.submit_many([client.spec(f"shutdown {i}") for i in range(6)])
        deadline = time.monotonic() + 15
        while emulator_stats(emulator)["in_flight"] < 2:
            assert time.monotonic() < deadline, "the worker never got busy"
            time.sleep(0.05)
        # The messages of the jobs in flight are in the worker's memory only: kombu keeps no
        # copy in Redis (its `unacked` hash), the records bring the jobs back if it dies.
        assert client.jobs.redis.exists("unacked", "unacked_index") == 0

        stopped = time.monotonic()
        slow_stack.processes.stop("draining", signal.SIGTERM, grace_s=30)
        took_s = time.monotonic() - stopped
        records = client.get_many([j.job_id for j in jobs])
        statuses = [r.status for r in records if r is not None]
        assert statuses.count(JobStatus.SUCCEEDED) == 2, statuses  # finished, not abandoned
        assert statuses.count(JobStatus.QUEUED) == 4, statuses  # left on the queue
        assert took_s < 10

        slow_stack.start_worker("successor", "interactive,batch")
        done = wait_all(client, [j.job_id for j in jobs], timeout_s=60)
    assert {r.status for r in done} == {JobStatus.SUCCEEDED}
    assert [r.attempts for r in done] == [1] * 6  # nothing ran twice
    assert emulator_stats(emulator)["requests"] == 6
