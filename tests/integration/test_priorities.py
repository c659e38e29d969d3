"""Interactive jobs overtake a big batch; deadlines end jobs that waited too long."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus, NewJob
from imagegen.store.dispatch import UNLIMITED_LOOKAHEAD
from imagegen.store.spend import Budget
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack
from tests.integration.test_end_to_end import wait_all

pytestmark = pytest.mark.integration

BUSY_STACK_DB = 9
BATCH_SIZE = 500
BUSY_WORKER_CONCURRENCY = 4


@pytest.fixture(scope="module")
def busy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("busy"),
        BUSY_STACK_DB,
        worker_concurrency=BUSY_WORKER_CONCURRENCY,
        extra_env={**FAST_RETRIES, "IMAGEGEN_WEBHOOK_SWEEP_INTERVAL_S": "0.2"},
        emulator_args=("--latency-ms", "40"),
        quota_rpm=0,
    )
    yield running
    running.stop()


def test_interactive_jobs_finish_before_a_500_job_batch_ahead_of_them(
    busy_stack: Stack,
) -> None:
    with Client(busy_stack.settings()) as client:
        _, batch = client.submit_batch(
            [client.spec(f"batch picture {i}") for i in range(BATCH_SIZE)]
        )
        time.sleep(0.5)  # the batch is being worked on
        interactive = [client.submit(f"urgent picture {i}") for i in range(5)]
        urgent = wait_all(client, [j.job_id for j in interactive], timeout_s=30)
        batch_records = wait_all(client, [j.job_id for j in batch], timeout_s=120)
    assert {r.status for r in urgent} == {JobStatus.SUCCEEDED}
    last_urgent = max(r.finished_at for r in urgent if r.finished_at)
    batch_done = sorted(r.finished_at for r in batch_records if r.finished_at)
    assert len(batch_done) == BATCH_SIZE
    finished_before = sum(1 for t in batch_done if t <= last_urgent)
    # Only what was in flight or already done when they arrived ran ahead of them.
    assert finished_before < BATCH_SIZE * 0.2, finished_before


def test_a_deadline_goes_ahead_of_its_tenants_backlog_and_is_met(busy_stack: Stack) -> None:
    """Earliest deadline first: a job with a deadline behind 300 of its tenant's jobs without
    one is accepted (its estimate counts only what goes before it), starts in time, and only
    the fillers already released when it came started before it."""
    with Client(busy_stack.settings()) as client:
        _, fillers = client.submit_batch([client.spec(f"filler {i}") for i in range(300)])
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        soon = client.submit("due soon", priority="batch", expires_at=deadline)
        record = client.wait(soon.job_id, timeout_s=60)
        started = [client.get(job.job_id).started_at for job in fillers]
    assert record.status is JobStatus.SUCCEEDED
    assert record.started_at is not None
    assert record.started_at < deadline
    # Ahead of it: what was already released (at most a lookahead) or running when it came.
    ahead = sum(1 for at in started if at is not None and at < record.started_at)
    assert ahead <= UNLIMITED_LOOKAHEAD + BUSY_WORKER_CONCURRENCY, ahead


def test_a_job_not_started_by_its_deadline_expires_without_calling_bedrock(
    busy_stack: Stack,
) -> None:
    """A job whose tenant cannot be served (no budget left) when its deadline passes ends
    expired by the sweeper, never claimed."""
    tenant = f"broke-{uuid.uuid4().hex[:8]}"
    with Client(busy_stack.settings()) as client:
        client.set_budget(Budget(tenant, daily_hard=0.0))
        deadline = datetime.now(UTC) + timedelta(seconds=1)
        spec = client.spec("too late", priority="batch", expires_at=deadline)
        late = NewJob(
            f"{tenant}.late", client.settings.model_id, spec, int(time.time() * 1000), tenant
        )
        # Stored as a backend's raw write would be: no estimate refuses it at the door.
        client.jobs.create([late], dispatch=client.dispatch)
        record = client.wait(late.job_id, timeout_s=60)
    assert record.status is JobStatus.EXPIRED
    assert record.started_at is None
    assert record.finished_at is not None
    assert record.finished_at < deadline + timedelta(seconds=3)  # the sweeper, not the queue
    assert record.attempts == 0  # never claimed, so never sent to Bedrock
