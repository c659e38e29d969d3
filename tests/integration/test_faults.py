"""A flaky Bedrock: retryable faults are retried with backoff and every job still succeeds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack
from tests.integration.test_end_to_end import wait_all
from tests.support import emulator_stats

pytestmark = pytest.mark.integration

FAULT_STACK_DB = 12


@pytest.fixture(scope="module")
def flaky_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("flaky"),
        FAULT_STACK_DB,
        worker_concurrency=4,
        extra_env={**FAST_RETRIES, "IMAGEGEN_MAX_ATTEMPTS": "10"},
        emulator_args=(
            "--internal-rate",
            "0.15",
            "--unavailable-rate",
            "0.1",
            "--inference-error-rate",
            "0.1",
            "--fault-seed",
            "7",
        ),
    )
    yield running
    running.stop()


def test_retryable_faults_are_retried_until_every_job_succeeds(flaky_stack: Stack) -> None:
    with Client(flaky_stack.settings()) as client:
        jobs = client.submit_many(client.spec(f"flaky {i}") for i in range(30))
        records = wait_all(client, [job.job_id for job in jobs], timeout_s=60)
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 30
    retried = [r for r in records if r.attempts > 1]
    assert retried, "with 35 % faults some job must have needed a retry"
    for record in retried:
        assert len(record.attempt_log) == record.attempts - 1
        assert {e.error_code for e in record.attempt_log} <= {
            "InternalServerException",
            "ServiceUnavailableException",
            "InferenceError",
        }
        assert all(e.retry_in_s is not None and e.retry_in_s <= 0.5 for e in record.attempt_log)
    stats = emulator_stats(flaky_stack.urls["bedrock"])
    assert stats["generated"] == 30
    assert stats["requests"] == sum(r.attempts for r in records)
