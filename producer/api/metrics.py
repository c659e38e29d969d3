"""Fleet-wide Prometheus metrics, read from Redis on each scrape (served by the API).

Counters kept by the Lua transitions in ``imagegen:stats``, the shared quota of each model, the
queues' depth and the age of their oldest message, and the dead-letter sets.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imagegen.messages import QUEUES
from imagegen.settings import Settings
from imagegen.store.quota import QuotaStore
from imagegen.store.stats import Stats
from producer.api.problems import ProblemError

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["FleetCollector", "metrics_router"]


class FleetCollector(Collector):
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._settings = settings
        self._stats = Stats(redis)
        self._quota_store = QuotaStore(redis, settings)

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._quota()
        yield from self._queues()

    def _counters(self) -> Iterator[Metric]:
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
        quarantined = CounterMetricFamily(
            "imagegen_quarantined_messages",
            "Messages on our queues that were not tasks of ours, by reason",
            labels=["reason"],
        )
        redriven = CounterMetricFamily(
            "imagegen_jobs_redriven",
            "Started jobs nobody held any more, sent again by the sweeper",
            labels=["queue"],
        )
        prices = self._settings.model_prices_usd
        for counter in self._stats.counters():
            kind, labels, value = counter.kind, list(counter.labels), counter.value
            if kind == "jobs" and len(labels) == 2:
                jobs.add_metric(labels, value)
            elif kind == "images" and len(labels) == 1:
                images.add_metric(labels, value)
                spend.add_metric(labels, value * prices.get(labels[0], 0.0))
            elif kind == "retries" and len(labels) == 1:
                retries.add_metric(labels, value)
            elif kind == "webhooks" and len(labels) == 1:
                webhooks.add_metric(labels, value)
            elif kind == "quarantined" and len(labels) == 1:
                quarantined.add_metric(labels, value)
            elif kind == "redriven" and len(labels) == 1:
                redriven.add_metric(labels, value)
        yield from (jobs, images, spend, retries, webhooks, quarantined, redriven)

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
            status = self._quota_store.status(model_id)
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
            "Age of the job (or webhook event) behind the oldest waiting message",
            labels=["queue"],
        )
        snapshot = self._stats.queues()
        for queue in QUEUES:
            depth.add_metric([queue], float(snapshot.depth[queue]))
            oldest.add_metric([queue], snapshot.oldest_age_s[queue])
        waiting, dlq = snapshot.jobs_waiting, snapshot.dead_letter_jobs
        webhook_dlq, outbox = snapshot.dead_letter_deliveries, snapshot.outbox_pending
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


def metrics_router(redis: Redis, settings: Settings) -> APIRouter:
    """``/metrics`` (not in the OpenAPI document) for this app's Redis; behind a bearer token
    when ``api_metrics_token`` is set."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(redis, settings))
    router = APIRouter()
    token = settings.api_metrics_token.get_secret_value() if settings.api_metrics_token else None

    @router.get("/metrics", include_in_schema=False)
    def metrics(authorization: Annotated[str | None, Header(max_length=512)] = None) -> Response:
        if token is not None:
            presented = (authorization or "").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(presented.encode(), token.encode()):
                raise ProblemError(
                    401,
                    "Unauthorized",
                    "send Authorization: Bearer <metrics token>",
                    headers={"WWW-Authenticate": 'Bearer realm="imagegen-metrics"'},
                )
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
