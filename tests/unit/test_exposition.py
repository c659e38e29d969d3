"""/metrics is written by its own renderer: the bytes prometheus_client would write for the same
families, per-tenant series, escapes and special values included."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imagegen.settings import Settings
from imagegen.store.spend import Budget
from producer.api.app import create_app
from producer.api.exposition import render
from producer.api.metrics import FleetCollector
from producer.client import Client

MODEL = "stability.stable-image-core-v1:0"


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Any:
        return iter(self.families)


def _prometheus_client(families: list[Metric]) -> bytes:
    registry = CollectorRegistry()
    registry.register(_Fixed(families))
    return generate_latest(registry)


def test_the_fleet_with_many_tenants_renders_as_prometheus_client_would(any_redis: Any) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, rate_limit_rpm=6, rate_limit_burst=3, dispatch_lookahead_s=3600
    )
    client = Client(settings, redis_client=any_redis)
    client.set_budget(Budget("broke", daily_hard=0.0))
    client.set_budget(Budget("acme", daily_soft=2.5, monthly_hard=1_250_000.0))
    client.submit("a harbour", tenant="broke")
    for tenant in ("acme", "globex", "initech"):
        client.submit_many(["a lighthouse"] * 3, tenant=tenant)
    any_redis.hset("imagegen:stats", mapping={"jobs|m|succeeded": 12_345_678, "retries|X": 1})
    for job_id in any_redis.zrange(f"imagegen:dispatch:{MODEL}:released", 0, -1):
        client.jobs.claim(str(job_id), "w", 60_000)
    families = list(FleetCollector(any_redis, settings).collect())
    tenants = {
        sample.labels.get("tenant")
        for family in families
        for sample in family.samples
        if "tenant" in sample.labels
    }
    assert {"acme", "globex", "initech", "broke"} <= tenants
    assert render(families) == _prometheus_client(families)
    # The endpoint serves that rendering.
    with TestClient(create_app(settings, redis_client=any_redis)) as http:
        scraped = http.get("/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain; version=")
    assert 'imagegen_dispatch_waiting{model="' + MODEL + '",tenant="globex"}' in scraped.text
    assert 'imagegen_jobs_total{model="m",status="succeeded"} 1.2345678e+07\n' in scraped.text


def test_escapes_and_special_values_render_as_prometheus_client_would() -> None:
    gauge = GaugeMetricFamily(
        "imagegen_odd", 'a "doc" with a \\ and\na newline', labels=["tenant", "model"]
    )
    for index, value in enumerate(
        (0.0, -1.5, 1e-7, 123456.0, 1234567.0, 1e22, math.inf, -math.inf, math.nan, 3)
    ):
        gauge.add_metric([f'we "say"\\n\n{index}', "m"], value)
    counter = CounterMetricFamily("imagegen_things", "Things", labels=["kind"])
    counter.add_metric(["a"], 7)
    families: list[Metric] = [
        gauge,
        counter,
        GaugeMetricFamily("imagegen_alone", "No labels", value=0.25),
        GaugeMetricFamily("imagegen_empty", "No samples", labels=["tenant"]),
    ]
    assert render(families) == _prometheus_client(families)


def test_a_family_of_another_type_is_refused_not_misrendered() -> None:
    histogram = Metric("imagegen_latency", "Latency", "histogram")
    with pytest.raises(ValueError, match="histogram"):
        render([histogram])
