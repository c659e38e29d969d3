"""Budgets and the image cache on the real stack: a worker, the emulator counting calls, S3."""

from __future__ import annotations

import uuid

import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus
from imagegen.store.spend import Budget, periods
from producer.client import Client
from tests.integration.conftest import wait_all
from tests.support import emulator_stats

pytestmark = pytest.mark.integration


def test_twenty_jobs_under_a_budget_worth_ten_images_make_ten_calls(
    stack: Stack, client: Client
) -> None:
    tenant = f"budget-{uuid.uuid4().hex[:6]}"
    client.set_budget(Budget(tenant, daily_hard=0.40, on_exceed="fail"))  # ten Core images
    calls_before = emulator_stats(stack.urls["bedrock"])["requests"]
    jobs = client.submit_many(
        (client.spec(f"budgeted picture {i}") for i in range(20)), tenant=tenant
    )
    records = wait_all(client, [job.job_id for job in jobs], timeout_s=60)
    statuses = sorted(r.status.value for r in records)
    assert statuses == ["budget_exceeded"] * 10 + ["succeeded"] * 10
    assert emulator_stats(stack.urls["bedrock"])["requests"] - calls_before == 10
    today, _ = client.spend_now(tenant)
    assert (today.spent_usd, today.reserved_usd) == (pytest.approx(0.40), 0)
    assert sum(r.cost_usd or 0 for r in records) == pytest.approx(0.40)


def test_the_same_fixed_seed_twice_at_once_makes_one_call(stack: Stack, client: Client) -> None:
    tenant = f"cache-{uuid.uuid4().hex[:6]}"
    calls_before = emulator_stats(stack.urls["bedrock"])["requests"]
    twins = [client.submit("a cached harbour", seed=1234, tenant=tenant) for _ in range(2)]
    first, second = wait_all(client, [job.job_id for job in twins], timeout_s=60)
    later = client.submit("a cached harbour", seed=1234, tenant=tenant)
    assert emulator_stats(stack.urls["bedrock"])["requests"] - calls_before == 1
    assert (first.cached, second.cached, later.cached) == (False, True, True)
    assert first.s3_key == second.s3_key == later.s3_key
    assert later.status is JobStatus.SUCCEEDED
    [row] = client.spend(tenant)
    assert (row.period, row.images, row.cache_hits) == (periods()[0][2:], 1, 2)
