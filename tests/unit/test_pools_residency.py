"""Residency: a tenant limited to some pools has its jobs released only there, and a job no
pool it may use serves is refused at submit, naming why. On fakeredis and a real Redis."""

from __future__ import annotations

from typing import Any

import pytest

from imagegen.errors import InvalidRequestError
from imagegen.pools import PoolSpec
from imagegen.redis import keys
from imagegen.settings import Settings
from producer.client import Client

CORE = "stability.stable-image-core-v1:1"
ULTRA = "stability.stable-image-ultra-v1:1"


def pools_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "pools": (
                PoolSpec(name="eu", region="eu-central-1", models=(CORE,), rpm=1),
                PoolSpec(name="us", region="us-west-2", models=(CORE, ULTRA), rpm=600),
            )
        }
    )


def test_a_resident_tenants_jobs_go_only_to_its_pools(any_redis: Any, settings: Settings) -> None:
    client = Client(pools_settings(settings), redis_client=any_redis)
    limits = client.operator.set_tenant_limits("resident", pools=["eu"])
    assert limits.pools == ("eu",)
    jobs = [client.submit("a lighthouse", model_id=CORE, tenant="resident") for _ in range(4)]
    pools = [any_redis.hget(keys.job_key(job.job_id), "pool") for job in jobs]
    # The eu pool's two tokens; the us pool has tokens too, but not for this tenant.
    assert pools == ["eu", "eu", None, None]
    assert client.operator.dispatch.paused(CORE) == {"resident": "rate"}
    other = client.submit("a lighthouse", model_id=CORE, tenant="other")
    assert any_redis.hget(keys.job_key(other.job_id), "pool") == "us"


def test_a_job_no_allowed_pool_serves_is_refused_at_submit(
    any_redis: Any, settings: Settings
) -> None:
    client = Client(pools_settings(settings), redis_client=any_redis)
    client.operator.set_tenant_limits("resident", pools=["eu"])
    with pytest.raises(InvalidRequestError) as refused:
        client.submit("a lighthouse", model_id=ULTRA, tenant="resident")
    [error] = refused.value.errors
    assert error.field == "model_id"
    assert "may use pools eu" in error.message
    assert f"{ULTRA} is served only by us" in error.message
    assert not any_redis.keys("imagegen:job:*")  # nothing stored
    # Any other tenant, and the resident once its pools allow it, may submit it.
    assert client.submit("a lighthouse", model_id=ULTRA, tenant="other").job_id
    client.operator.set_tenant_limits("resident", pools=[])
    assert client.submit("a lighthouse", model_id=ULTRA, tenant="resident").job_id


def test_an_unknown_pool_name_is_refused_naming_the_field(
    any_redis: Any, settings: Settings
) -> None:
    client = Client(pools_settings(settings), redis_client=any_redis)
    with pytest.raises(InvalidRequestError) as refused:
        client.operator.set_tenant_limits("resident", pools=["mars"])
    [error] = refused.value.errors
    assert error.field == "pools"
    assert "no pool named mars (pools: eu, us, default)" in error.message


def test_the_metrics_show_each_pools_quota_circuit_and_day(
    any_redis: Any, settings: Settings
) -> None:
    from fastapi.testclient import TestClient

    from imagegen.store.pool_stats import PoolStats
    from imagegen.store.quota import QuotaStore
    from producer.api import create_app

    pooled = pools_settings(settings)
    QuotaStore(any_redis, pooled).report(CORE, pool="eu", denied="AccessDeniedException")
    QuotaStore(any_redis, pooled).report(CORE, pool="us", throttled=True)
    PoolStats(any_redis).count("us", CORE, "image", billed_micro=40_000)
    with TestClient(create_app(pooled, redis_client=any_redis)) as http:
        text = http.get("/metrics").text
    eu = f'model="{CORE}",pool="eu",region="eu-central-1"'
    us = f'model="{CORE}",pool="us",region="us-west-2"'
    assert f"imagegen_pool_circuit_open{{{eu}}} 1.0" in text
    assert f"imagegen_pool_circuit_open{{{us}}} 0.0" in text
    assert f"imagegen_pool_throttles_total{{{us}}} 1.0" in text
    assert f"imagegen_pool_configured_rpm{{{us}}} 600.0" in text
    assert f'imagegen_pool_today{{{us},what="spend_usd"}} 0.04' in text
    assert f'imagegen_pool_today{{{us},what="images"}} 1.0' in text
    assert "imagegen_pool_today{" + eu not in text  # no call there today
