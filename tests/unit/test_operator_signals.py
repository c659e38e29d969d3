"""What operators read says where jobs wait: the dispatcher's backlog, its oldest job's age, paused
tenant queues and recent waits, in the API's /metrics and on the console's operator page."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from imagegen.settings import Settings
from imagegen.store.spend import Budget
from producer.api.metrics import FleetCollector
from producer.client import Client

MODEL = "stability.stable-image-core-v1:0"


def scrape(redis: Any, settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(FleetCollector(redis, settings))
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_a_backlog_shows_where_it_waits_within_seconds(any_redis: Any) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, rate_limit_rpm=6, rate_limit_burst=1, dispatch_lookahead_s=3600
    )
    client = Client(settings, redis_client=any_redis)
    client.set_budget(Budget("broke", daily_hard=0.0))
    client.submit("a harbour", tenant="broke")  # its turn comes at once: its queue is paused
    client.submit_many(["a lighthouse"] * 5, tenant="acme")  # two tokens: three wait
    time.sleep(1.1)
    found = scrape(any_redis, settings)
    model = (("model", MODEL),)
    assert found[("imagegen_dispatch_waiting_jobs", model)] == 4
    oldest = found[
        ("imagegen_dispatch_oldest_waiting_seconds", (*model, ("priority", "interactive")))
    ]
    assert oldest >= 1.0
    assert found[("imagegen_dispatch_queues", (*model, ("state", "ready")))] == 1
    assert found[("imagegen_dispatch_queues", (*model, ("state", "paused_budget")))] == 1
    assert found[("imagegen_dispatch_jobs", (*model, ("state", "released")))] == 2
    assert found[("imagegen_dispatch_waiting", (*model, ("tenant", "acme")))] == 3
    # Jobs that start give their waits, every tenant's and each busy tenant's.
    for job_id in any_redis.zrange(f"imagegen:dispatch:{MODEL}:released", 0, -1):
        assert client.jobs.claim(str(job_id), "w", 60_000).state.value == "claimed"
    found = scrape(any_redis, settings)
    for tenant in ("*", "acme"):
        p99 = found[
            ("imagegen_dispatch_wait_seconds", (*model, ("quantile", "0.99"), ("tenant", tenant)))
        ]
        assert 0 <= p99 < 5
    assert found[("imagegen_dispatch_jobs", (*model, ("state", "active")))] == 2


@pytest.mark.parametrize("reason", ["concurrency"])
def test_the_operator_page_shows_the_backlog_and_paused_queues(any_redis: Any, reason: str) -> None:
    from fastapi.testclient import TestClient

    from producer.api.app import create_app

    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        rate_limit_rpm=0,
        api_admin_token="an-operator-token-of-enough-length",
    )
    client = Client(settings, redis_client=any_redis)
    client.set_tenant_limits("capped", max_concurrency=1)
    client.submit_many(["a lighthouse"] * 3, tenant="capped")
    client.dispatch.release(MODEL)
    with TestClient(create_app(settings, redis_client=any_redis)) as http:
        token = settings.api_admin_token.get_secret_value()  # type: ignore[union-attr]
        form = re.search(r'name="csrf" value="([^"]+)"', http.get("/console/login").text)
        assert form, "the login form carries no token"
        login = http.post(
            "/console/login", data={"key": token, "csrf": form[1]}, follow_redirects=False
        )
        assert login.status_code == 303
        html = http.get("/console/operator").text
    assert "Backlog: where jobs are" in html
    assert f"1 ({reason})" in html  # one queue paused, and why
