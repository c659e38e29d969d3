"""Pools in the dispatcher (``dispatch_release.lua``): fair share first, then a pool with a
token; each pool's own bucket and circuit; a tenant's residency. On fakeredis (with Lua) and a
real Redis, the clock passed in (``now_ms``)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

import pytest

from imagegen.contract import JobSpec
from imagegen.models import MODELS
from imagegen.records import NewJob
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.store.context import JobContext
from imagegen.store.jobs import ClaimState, JobStore
from imagegen.store.quota import QuotaStore

T0 = 1_000_000.0
LEASE_MS = 60_000


def pool(name: str, model_id: str, rpm: float = 600, **more: Any) -> dict[str, Any]:
    return {"name": name, "region": "us-west-2", "models": [model_id], "rpm": rpm, **more}


class Rig:
    """A model of its own, served by the pools given."""

    def __init__(self, redis: Any, pools: list[dict[str, Any]] | None = None, **values: Any):
        self.redis = redis
        self.model = f"test-model-{uuid.uuid4().hex[:8]}"
        given = [{**p, "models": [self.model]} for p in pools or []]
        self.settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            allowed_model_ids=(*MODELS, self.model),
            pools=given,
            rate_limit_rpm=600,
            dispatch_lookahead_s=3600,
            **values,
        )
        self.store = JobStore(
            redis, 3600, redrive_grace_s=0.0, context=JobContext.from_settings(self.settings)
        )
        from imagegen.store.dispatch import Dispatch

        self.dispatch = Dispatch(redis, self.settings)
        self.quota = QuotaStore(redis, self.settings)
        self.count = 0

    def submit(self, tenant: str, n: int = 1) -> list[str]:
        spec = JobSpec.parse({"request": {"prompt": "p"}, "priority": "interactive"})
        jobs = []
        for _ in range(n):
            self.count += 1
            job_id = f"{tenant}-{self.count:05d}-{self.model[-8:]}"
            jobs.append(NewJob(job_id, self.model, spec, 1, tenant=tenant))
        self.store.create(jobs)
        return [job.job_id for job in jobs]

    def release(self, now_ms: float | None = None) -> list[str]:
        before = self.redis.llen("interactive")
        self.dispatch.release(self.model, now_ms=now_ms)
        added = self.redis.llen("interactive") - before
        raw = self.redis.lrange("interactive", 0, added - 1) if added else []
        return [json.loads(m)["headers"]["id"] for m in reversed(raw)]

    def pool_of(self, job_id: str) -> str | None:
        found = self.redis.hget(keys.job_key(job_id), "pool")
        return str(found) if found else None

    def run_for(self, seconds: float, step_ms: float = 50, start: float = T0) -> list[str]:
        released = []
        clock = start
        while clock < start + seconds * 1000:
            released += self.release(clock)
            clock += step_ms
        return released


def test_pools_are_used_to_their_summed_quota_and_none_above_its_own(any_redis: Any) -> None:
    rig = Rig(any_redis, [pool("a", "", rpm=600), pool("b", "", rpm=1200)])
    rig.submit("acme", 400)
    released = rig.run_for(10)
    pools = Counter(rig.pool_of(j) for j in released)
    # 10 s at 10/s and 20/s, plus each bucket's two tokens at the start.
    assert pools["a"] == pytest.approx(102, abs=2)
    assert pools["b"] == pytest.approx(202, abs=2)
    assert len(released) == pools["a"] + pools["b"]
    assert rig.settings.limit_for(rig.model).rpm == 1800


def test_fair_share_holds_across_the_pools(any_redis: Any) -> None:
    rig = Rig(any_redis, [pool("a", ""), pool("b", "")])
    rig.submit("flood", 300)
    for tenant in ("light1", "light2", "light3"):
        rig.submit(tenant, 10)
    first = rig.run_for(2)[:40]
    assert Counter(j.split("-", 1)[0] for j in first) == {
        "flood": 10,
        "light1": 10,
        "light2": 10,
        "light3": 10,
    }
    assert {rig.pool_of(j) for j in first} == {"a", "b"}


def test_least_used_spreads_the_calls_and_cheapest_prefers_the_cheaper_pool(
    any_redis: Any,
) -> None:
    spread = Rig(any_redis, [pool("a", ""), pool("b", "")])
    spread.submit("acme", 40)
    counts = Counter(spread.pool_of(j) for j in spread.run_for(1.5))
    assert abs(counts["a"] - counts["b"]) <= 1

    cheap = Rig(
        any_redis,
        [pool("dear", "", price_usd=0.08), pool("cheap", "", price_usd=0.04)],
        pool_choice="cheapest",
    )
    cheap.submit("acme", 6)
    # Two tokens each at the start: the cheap pool's go first.
    order = [cheap.pool_of(j) for j in cheap.release(T0)]
    assert order == ["cheap", "cheap", "dear", "dear"]


def test_an_open_circuit_takes_no_calls_until_its_one_probe(any_redis: Any) -> None:
    rig = Rig(any_redis, [pool("a", ""), pool("b", "")], pool_circuit_open_s=5)
    rig.submit("acme", 200)
    rig.quota.report(rig.model, pool="a", denied="AccessDeniedException", now_ms=T0)
    [status_a, _] = rig.quota.pool_statuses(rig.model)
    assert (status_a.circuit, status_a.circuit_reason) == ("open", "AccessDeniedException")
    during = rig.run_for(4.9, start=T0)
    assert during
    assert {rig.pool_of(j) for j in during} == {"b"}
    after = rig.run_for(3, start=T0 + 5000)
    probes = [j for j in after if rig.pool_of(j) == "a"]
    assert len(probes) == 1  # one probe, no other call until it answers
    rig.quota.report(rig.model, pool="a", now_ms=T0 + 8000)  # the probe succeeded
    later = rig.run_for(2, start=T0 + 8000)
    assert Counter(rig.pool_of(j) for j in later)["a"] >= 8


def test_a_tenant_limited_to_a_pool_is_released_only_there(any_redis: Any) -> None:
    rig = Rig(any_redis, [pool("eu", ""), pool("us", "")])
    rig.redis.hset(keys.tenant_key("resident"), "pools", "eu")
    rig.submit("resident", 50)
    rig.submit("free", 50)
    released = rig.run_for(3)
    resident = [j for j in released if j.startswith("resident")]
    assert resident
    assert {rig.pool_of(j) for j in resident} == {"eu"}
    # The free tenant takes what the resident cannot use: together, the summed quota.
    assert len(released) == pytest.approx(64, abs=3)
    assert Counter(rig.pool_of(j) for j in released)["eu"] <= 32


def test_a_retry_avoids_the_pool_it_failed_on_and_a_pool_return_spends_no_attempt(
    any_redis: Any,
) -> None:
    rig = Rig(
        any_redis,
        [pool("a", "", price_usd=0.01), pool("b", "", price_usd=0.09)],
        pool_choice="cheapest",
    )
    [job] = rig.submit("acme")
    [released] = rig.release()  # the server's clock, as the retry's due time
    first_pool = rig.pool_of(released)
    assert first_pool == "a"
    claim = rig.store.claim(job, "w", LEASE_MS)
    assert (claim.state, claim.attempt, claim.pool) == (ClaimState.CLAIMED, 1, first_pool)
    assert rig.store.release_for_retry(
        job,
        "w",
        attempt=1,
        error_code="ThrottlingException",
        message="slow down",
        delay_s=0,
        free=True,
        avoid_pool=first_pool,
    )
    assert rig.release() == [job]
    claim = rig.store.claim(job, "w", LEASE_MS)
    assert claim.attempt == 1  # the pool's throttle spent none of the job's attempts
    assert claim.pool == "b"  # the dearer pool: the cheap one just failed it


def test_without_pools_nothing_changes(any_redis: Any) -> None:
    rig = Rig(any_redis)
    rig.submit("acme", 5)
    released = rig.release(T0)
    assert len(released) == 2  # the model's own bucket, two tokens at least
    assert {rig.pool_of(j) for j in released} == {None}
    assert rig.settings.pools_for(rig.model)[0].implicit


def test_a_run_of_failures_opens_the_circuit_and_a_success_breaks_the_run(any_redis: Any) -> None:
    rig = Rig(any_redis, [pool("a", ""), pool("b", "")], pool_circuit_failures=3)

    def circuit() -> str | None:
        return rig.quota.pool_statuses(rig.model)[0].circuit

    for _ in range(2):
        rig.quota.report(rig.model, pool="a", failed="ServiceUnavailableException")
    rig.quota.report(rig.model, pool="a")  # a success: the run starts again
    for _ in range(2):
        rig.quota.report(rig.model, pool="a", failed="ServiceUnavailableException")
    assert circuit() is None
    rig.quota.report(rig.model, pool="a", failed="ReadTimeout")
    [a, b] = rig.quota.pool_statuses(rig.model)
    assert (a.circuit, a.circuit_reason, b.circuit) == ("open", "ReadTimeout", None)


def test_a_job_reserves_the_price_of_the_pool_it_goes_to(any_redis: Any) -> None:
    rig = Rig(
        any_redis,
        [pool("dear", "", price_usd=0.08), pool("cheap", "", price_usd=0.03)],
        pool_choice="cheapest",
        model_prices_usd={},
    )
    rig.submit("acme", 4)
    released = rig.release(T0)
    reserved = {
        rig.pool_of(j): int(any_redis.hget(keys.job_key(j), "reserved_micro")) for j in released
    }
    assert reserved == {"cheap": 30_000, "dear": 80_000}
