"""Fleet-wide Prometheus metrics, read from Redis on each scrape (served by the API).

Counters kept by the Lua transitions in ``imagegen:stats``, the shared quota of each model, the
queues' depth and the age of their oldest message, and the dead-letter sets.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from producer import keys
from producer.messages import QUEUES
from producer.quota import read_quota
from producer.settings import Settings

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["FleetCollector"]


class FleetCollector(Collector):
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._quota()
        yield from self._queues()

    def _counters(self) -> Iterator[Metric]:
        stats = cast("dict[str, str]", self._redis.hgetall(keys.STATS_KEY))
        jobs = CounterMetricFamily(
            "imagegen_jobs", "Jobs that reached a final status", labels=["model", "status"]
        )
        images = CounterMetricFamily(
            "imagegen_images_generated", "Images Bedrock returned (and billed)", labels=["model"]
        )
        spend = CounterMetricFamily(
            "imagegen_estimated_spend_usd",
            "Estimated Bedrock spend: images x price",
            labels=["model"],
        )
        retries = CounterMetricFamily(
            "imagegen_retries", "Retries scheduled, by error code", labels=["code"]
        )
        webhooks = CounterMetricFamily(
            "imagegen_webhook_deliveries",
            "Webhook delivery attempts by outcome",
            labels=["outcome"],
        )
        prices = self._settings.model_prices_usd
        for field, raw in sorted(stats.items()):
            kind, *labels = field.split("|")
            value = float(raw)
            if kind == "jobs" and len(labels) == 2:
                jobs.add_metric(labels, value)
            elif kind == "images" and len(labels) == 1:
                images.add_metric(labels, value)
                spend.add_metric(labels, value * prices.get(labels[0], 0.0))
            elif kind == "retries" and len(labels) == 1:
                retries.add_metric(labels, value)
            elif kind == "webhooks" and len(labels) == 1:
                webhooks.add_metric(labels, value)
        yield from (jobs, images, spend, retries, webhooks)

    def _quota(self) -> Iterator[Metric]:
        configured = GaugeMetricFamily(
            "imagegen_rate_limit_configured_rpm", "The quota the fleet is set to", labels=["model"]
        )
        effective = GaugeMetricFamily(
            "imagegen_rate_limit_effective_rpm",
            "The shared rate after throttles (AIMD)",
            labels=["model"],
        )
        tokens = GaugeMetricFamily(
            "imagegen_rate_limit_tokens", "Tokens in the shared bucket", labels=["model"]
        )
        calls = GaugeMetricFamily(
            "imagegen_bedrock_calls_last_minute",
            "Bedrock calls granted in the last minute",
            labels=["model"],
        )
        throttles = CounterMetricFamily(
            "imagegen_throttles", "ThrottlingExceptions from Bedrock", labels=["model"]
        )
        for model_id in self._settings.allowed_model_ids:
            if not self._settings.limit_for(model_id).rpm:
                continue
            status = read_quota(self._redis, self._settings, model_id)
            configured.add_metric([model_id], status.configured_rpm)
            effective.add_metric([model_id], status.effective_rpm)
            tokens.add_metric([model_id], status.tokens)
            calls.add_metric([model_id], status.calls_last_minute)
            throttles.add_metric([model_id], status.throttles_total)
        yield from (configured, effective, tokens, calls, throttles)

    def _queues(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "imagegen_queue_depth", "Messages waiting on a queue", labels=["queue"]
        )
        oldest = GaugeMetricFamily(
            "imagegen_queue_oldest_age_seconds",
            "Age of the job behind the oldest waiting message",
            labels=["queue"],
        )
        pipe = self._redis.pipeline(transaction=False)
        for queue in QUEUES:
            pipe.llen(queue)
            pipe.lindex(queue, -1)
        pipe.zcard(keys.QUEUED_KEY)
        pipe.zcard(keys.DLQ_KEY)
        pipe.zcard(keys.WEBHOOKS_DLQ_KEY)
        pipe.zcard(keys.WEBHOOKS_DUE_KEY)
        replies = pipe.execute()
        now_s = time.time()
        for index, queue in enumerate(QUEUES):
            length, tail = replies[2 * index], replies[2 * index + 1]
            depth.add_metric([queue], float(length))
            oldest.add_metric([queue], self._age_s(tail, now_s) if tail else 0.0)
        waiting, dlq, webhook_dlq, outbox = replies[2 * len(QUEUES) :]
        yield from (depth, oldest)
        yield GaugeMetricFamily("imagegen_jobs_waiting", "Jobs not started yet", value=waiting)
        yield GaugeMetricFamily(
            "imagegen_dlq_jobs", "Failed jobs in the dead-letter set", value=dlq
        )
        yield GaugeMetricFamily(
            "imagegen_webhook_dlq_deliveries",
            "Webhook deliveries that ran out of retries",
            value=webhook_dlq,
        )
        yield GaugeMetricFamily(
            "imagegen_webhook_outbox_pending", "Webhook deliveries not delivered yet", value=outbox
        )

    def _age_s(self, raw_message: Any, now_s: float) -> float:
        """How long the job of a queued message has existed (0 when it cannot be told)."""
        try:
            job_id = json.loads(raw_message)["headers"]["id"]
        except (ValueError, KeyError, TypeError):
            return 0.0
        created_ms = self._redis.hget(keys.job_key(str(job_id)), "created_ms")
        if not created_ms:
            return 0.0
        return max(0.0, now_s - int(str(created_ms)) / 1000)
