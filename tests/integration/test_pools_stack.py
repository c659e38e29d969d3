"""Two Bedrock pools on the real stack: the worker and the API as processes, one emulator
serving two Regions each with its own quota. Jobs spread over both pools; one pool failing
(503s, then access denied) costs no job; a resident tenant's calls stay in its pool."""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from devstack.stack import EmulatedPool, Stack
from imagegen.records import JobStatus
from imagegen.redis import keys
from imagegen.store.quota import QuotaStore
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack, wait_all
from tests.support import emulator_stats

pytestmark = pytest.mark.integration

POOLS_STACK_DB = 2
CORE = "stability.stable-image-core-v1:1"
WEST, EAST = "us-west-2", "us-east-1"
POOL_RPM = 300.0


@pytest.fixture(scope="module")
def pools_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("pools"),
        POOLS_STACK_DB,
        worker_concurrency=6,
        quota_rpm=6000,
        quota_burst=50,
        extra_env={**FAST_RETRIES, "IMAGEGEN_POOL_CIRCUIT_OPEN_S": "30"},
        # A call every 200 ms each: a worker reports a pool's failure well before a token
        # releases another job to it.
        pools=(EmulatedPool("west", WEST, POOL_RPM), EmulatedPool("east", EAST, POOL_RPM)),
    )
    yield running
    running.stop()


def set_pool(stack: Stack, region: str, behaviour: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{stack.urls['bedrock']}/_emulator/pools/{region}",
        data=json.dumps(behaviour).encode(),
        method="PUT",
    )
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 200


def calls_of(stack: Stack, job_ids: list[str]) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(stack.env["IMAGEGEN_REDIS_URL"], decode_responses=True)
    found = []
    for job_id in job_ids:
        raw = client.hget(keys.job_key(job_id), "calls") or ""
        found += [json.loads(line) for line in raw.splitlines()]
    return found


def submit(client: Client, n: int, tenant: str | None = None) -> list[str]:
    jobs = client.submit_many(
        (client.spec(f"pool {i} {time.time()}", model_id=CORE) for i in range(n)),
        tenant=tenant,
    )
    return [job.job_id for job in jobs]


def test_jobs_spread_over_both_pools_and_each_call_is_attributed(pools_stack: Stack) -> None:
    with Client(pools_stack.settings()) as client:
        job_ids = submit(client, 40)
        records = wait_all(client, job_ids, timeout_s=60)
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 40
    calls = calls_of(pools_stack, job_ids)
    assert len(calls) == 40
    by_pool = Counter(c["pool"] for c in calls)
    assert set(by_pool) == {"west", "east"}
    assert min(by_pool.values()) >= 10  # least used: both carry a share
    assert all(c["request_id"] and c["invocation_latency_ms"] is not None for c in calls)
    assert {c["region"] for c in calls if c["pool"] == "east"} == {EAST}
    served = emulator_stats(pools_stack.urls["bedrock"])["pools"]
    assert served[WEST]["ok"] >= by_pool["west"]
    assert served[EAST]["ok"] >= by_pool["east"]


def test_a_pool_answering_503_or_access_denied_costs_no_job(pools_stack: Stack) -> None:
    settings = pools_stack.settings()
    try:
        set_pool(pools_stack, WEST, {"fault_rates": {"unavailable": 1.0}})
        with Client(settings) as client:
            failing = submit(client, 20)
            records = wait_all(client, failing, timeout_s=60)
        assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 20
        west = [c for c in calls_of(pools_stack, failing) if c["pool"] == "west"]
        assert west
        assert {c["outcome"] for c in west} == {"ServiceUnavailableException"}
        # Five failures in a row opened its circuit: no more calls until a probe.
        connection = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        quota = QuotaStore(connection, settings)
        [west_status] = [s for s in quota.pool_statuses(CORE) if s.pool == "west"]
        assert (west_status.circuit, west_status.circuit_reason) == (
            "open",
            "ServiceUnavailableException",
        )
        assert len(west) <= 8  # the run of five, and the calls already released to it
        quota.report(CORE, pool="west")  # its probe answered: closed again

        set_pool(pools_stack, WEST, {"denied_models": [CORE]})
        with Client(settings) as client:
            # The least used pool (west) takes the first job and denies it; the rest follow.
            first = submit(client, 1)
            wait_all(client, first, timeout_s=60)
            assert [c["pool"] for c in calls_of(pools_stack, first)] == ["west", "east"]
            denied = first + submit(client, 19)
            records = wait_all(client, denied, timeout_s=60)
            assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 20
            assert all(r.attempts == 1 for r in records)  # a denial spends no attempt
        statuses = quota.pool_statuses(CORE)
        west_status = next(s for s in statuses if s.pool == "west")
        assert (west_status.circuit, west_status.circuit_reason) == (
            "open",
            "AccessDeniedException",
        )
        denied_calls = [c for c in calls_of(pools_stack, denied) if c["pool"] == "west"]
        assert len(denied_calls) == 1  # the circuit opened at the first denial
    finally:
        set_pool(pools_stack, WEST, {"quota_rpm": POOL_RPM, "quota_burst": 50})


def test_a_resident_tenants_calls_stay_in_its_pool(pools_stack: Stack) -> None:
    with Client(pools_stack.settings()) as client:
        client.operator.set_tenant_limits("east-only", pools=["east"])
        job_ids = submit(client, 10, tenant="east-only")
        records = wait_all(client, job_ids, timeout_s=60)
    assert [r.status for r in records] == [JobStatus.SUCCEEDED] * 10
    assert {c["pool"] for c in calls_of(pools_stack, job_ids)} == {"east"}
