"""The operator's chart opens full: each model's quota and backlog sampled every 10 s by the
fleet (once per interval, whatever the number of workers), kept bounded, served with the
chart's data."""

from __future__ import annotations

import re
import time
from typing import Any

import fakeredis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from imagegen.settings import Settings
from imagegen.store.quota import QuotaStore
from imagegen.store.quota_history import SAMPLE_EVERY_S, SAMPLES_KEPT, QuotaHistory
from producer.api import create_app
from producer.client import Client
from worker.sweeper import OutboxSweeper

CORE = "stability.stable-image-core-v1:0"
OPERATOR_TOKEN = "an-operator-token-of-30-chars!"


def test_many_sweepers_record_one_sample_per_interval(any_redis: Any, settings: Settings) -> None:
    Client(settings, redis_client=any_redis).submit_many(
        [{"request": {"prompt": f"p{i}"}} for i in range(3)], tenant="acme"
    )
    sweepers = [OutboxSweeper(any_redis, settings) for _ in range(3)]
    recorded = [sweeper.sample_quota() for sweeper in sweepers]
    assert [len(samples) > 0 for samples in recorded] == [True, False, False]
    history = QuotaHistory(any_redis).read([CORE])[CORE]
    assert len(history) == 1
    [sample] = history
    assert sample.waiting + _released(any_redis) == 3
    assert sample.configured_rpm == settings.limit_for(CORE).rpm
    assert abs(sample.at_ms - time.time() * 1000) < 5_000


def test_the_next_interval_records_again(any_redis: Any, settings: Settings) -> None:
    history = QuotaHistory(any_redis)
    now_ms = int(time.time() * 1000)
    assert history.take_slot(now_ms)
    assert not history.take_slot(now_ms)
    any_redis.delete("imagegen:history-slot")  # the interval passed (its key expired)
    assert history.take_slot(now_ms + SAMPLE_EVERY_S * 1000)


def test_the_history_is_bounded_and_oldest_first(any_redis: Any, settings: Settings) -> None:
    history = QuotaHistory(any_redis)
    status = QuotaStore(any_redis, settings).status(CORE)
    for i in range(SAMPLES_KEPT + 20):
        history.record([status], [], now_ms=1_000_000 + i)
    kept = history.read([CORE])[CORE]
    assert len(kept) == SAMPLES_KEPT
    assert [s.at_ms for s in kept] == list(range(1_000_020, 1_000_000 + SAMPLES_KEPT + 20))
    assert 0 < any_redis.ttl(f"imagegen:history:{CORE}") <= SAMPLES_KEPT * SAMPLE_EVERY_S


def test_the_chart_data_carries_the_kept_samples(settings: Settings) -> None:
    settings = settings.model_copy(update={"api_admin_token": SecretStr(OPERATOR_TOKEN)})
    redis = fakeredis.FakeRedis(decode_responses=True)
    status = QuotaStore(redis, settings).status(CORE)
    for i in range(5):
        QuotaHistory(redis).record([status], [], now_ms=1_000_000 + i * 10_000)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        form = http.get("/console/login").text
        token = re.search(r'name="csrf" value="([^"]+)"', form)
        assert token
        http.post("/console/login", data={"key": OPERATOR_TOKEN, "csrf": token[1]})
        live = http.get("/console/operator/quota.json").json()
        assert "history" not in live
        full = http.get("/console/operator/quota.json?history=1").json()
    assert [s["at_ms"] for s in full["history"][CORE]] == [1_000_000 + i * 10_000 for i in range(5)]
    assert CORE in {m["model_id"] for m in full["models"]}


def _released(redis: Any) -> int:
    return int(redis.zcard(f"imagegen:dispatch:{CORE}:released") or 0)
