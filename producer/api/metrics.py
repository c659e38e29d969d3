"""Fleet-wide Prometheus metrics, read from Redis on each scrape (served by the API).

Counters kept by the Lua transitions in ``imagegen:stats``, the shared quota of each model, the
dispatcher per model and tenant (jobs waiting, released, each tenant's share of the rate against
its fair share), the queues' depth and the age of their oldest message, and the dead-letter sets.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from imagegen.contract import PRIORITIES
from imagegen.epoch import read_found
from imagegen.messages import QUEUES
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.pool_stats import PoolStats
from imagegen.store.quota import QuotaStore
from imagegen.store.spend import Ledger
from imagegen.store.stats import Stats
from producer.api.exposition import render
from producer.api.problems import ProblemError

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["FleetCollector", "metrics_router"]


class FleetCollector(Collector):
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._settings = settings
        self._stats = Stats(redis)
        self._quota_store = QuotaStore(redis, settings)
        self._dispatch = Dispatch(redis, settings)
        self._ledger = Ledger(redis, settings)
        self._redis = redis

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._quota()
        yield from self._pools()
        yield from self._dispatcher()
        yield from self._spend()
        yield from self._queues()
        yield GaugeMetricFamily(
            "imagegen_redis_data_lost_timestamp_seconds",
            "When a worker last found Redis with less than the mark of its epoch in S3 "
            "remembers (Unix time; 0: never, as far as this Redis records)",
            value=read_found(self._redis).lost_at_ms / 1000,
        )

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
            "Jobs nobody held any more (a lease ran out, a release nobody claimed), put back to "
            "wait by the sweeper",
            labels=["reason"],
        )
        warnings = CounterMetricFamily(
            "imagegen_budget_warnings",
            "Soft budgets crossed, by period (daily, monthly); per tenant: "
            "imagegen_tenant_soft_budget_crossed",
            labels=["period"],
        )
        released = CounterMetricFamily(
            "imagegen_dispatch_released",
            "Jobs the dispatcher released to the workers, by model",
            labels=["model"],
        )
        paused = CounterMetricFamily(
            "imagegen_dispatch_pauses",
            "Tenant queues paused because they could not be served, by reason",
            labels=["reason"],
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
            elif kind == "released" and len(labels) == 1:
                released.add_metric(labels, value)
            elif kind == "budget_warnings" and len(labels) == 1:
                warnings.add_metric(labels, value)
            elif kind == "paused" and len(labels) == 1:
                paused.add_metric(labels, value)
        yield from (jobs, images, spend, retries, webhooks, quarantined, redriven, released)
        yield from (warnings, paused)

    def _spend(self) -> Iterator[Metric]:
        spent = GaugeMetricFamily(
            "imagegen_tenant_spend_usd",
            "What Bedrock billed for the tenant's images this UTC day or month",
            labels=["tenant", "period"],
        )
        reserved = GaugeMetricFamily(
            "imagegen_tenant_reserved_usd",
            "Released jobs' prices held against the tenant's budgets, not settled yet",
            labels=["tenant", "period"],
        )
        budgets = GaugeMetricFamily(
            "imagegen_tenant_budget_usd",
            "The tenant's budgets",
            labels=["tenant", "period", "kind"],
        )
        crossed = GaugeMetricFamily(
            "imagegen_tenant_soft_budget_crossed",
            "1 when the tenant's soft budget of this UTC day or month was crossed",
            labels=["tenant", "period"],
        )
        tenants = self._ledger.tenants(most=self._settings.metrics_tenants_max)
        for tenant, day, month, budget in self._ledger.snapshot(tenants):
            for name, found in (("day", day), ("month", month)):
                spent.add_metric([tenant, name], found.spent_usd)
                reserved.add_metric([tenant, name], found.reserved_usd)
                crossed.add_metric([tenant, name], float(found.soft_budget_crossed))
            for period_name, kind, amount in (
                ("day", "hard", budget.daily_hard),
                ("day", "soft", budget.daily_soft),
                ("month", "hard", budget.monthly_hard),
                ("month", "soft", budget.monthly_soft),
            ):
                if amount is not None:
                    budgets.add_metric([tenant, period_name, kind], amount)
        yield from (spent, reserved, budgets, crossed)

    def _dispatcher(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            "imagegen_dispatch_waiting",
            "Jobs waiting in the dispatcher for their turn (the busiest tenants)",
            labels=["model", "tenant"],
        )
        share = GaugeMetricFamily(
            "imagegen_dispatch_share",
            "The tenant's part of the jobs released over the last minute",
            labels=["model", "tenant"],
        )
        fair = GaugeMetricFamily(
            "imagegen_dispatch_fair_share",
            "The tenant's weight over the weights of every tenant queue ready to be served",
            labels=["model", "tenant"],
        )
        held = GaugeMetricFamily(
            "imagegen_dispatch_jobs",
            "Jobs of a model due later (retries), released and unclaimed, or in flight",
            labels=["model", "state"],
        )
        queued = GaugeMetricFamily(
            "imagegen_dispatch_waiting_jobs",
            "Jobs waiting in the dispatcher, every tenant",
            labels=["model"],
        )
        queues = GaugeMetricFamily(
            "imagegen_dispatch_queues",
            "Tenant queues with jobs waiting: ready to be served, or paused (by reason)",
            labels=["model", "state"],
        )
        oldest = GaugeMetricFamily(
            "imagegen_dispatch_oldest_waiting_seconds",
            "How long the oldest job waiting in the dispatcher has waited, by priority class",
            labels=["model", "priority"],
        )
        waits = GaugeMetricFamily(
            "imagegen_dispatch_wait_seconds",
            "Wait (submit, or return to the dispatcher, to start) of the jobs started over the "
            "last 5 minutes: p50 and p99, every tenant ('*') and the busiest ones",
            labels=["model", "tenant", "quantile"],
        )
        busiest = self._settings.metrics_tenants_max
        for model in self._dispatch.snapshot(self._dispatch.known_models(), busiest):
            model_id = model.model_id
            for tenant in model.shares:
                labels = [model_id, tenant.tenant]
                waiting.add_metric(labels, tenant.waiting)
                share.add_metric(labels, tenant.share)
                if tenant.fair_share is not None:
                    fair.add_metric(labels, tenant.fair_share)
            for state, value in (
                ("delayed", model.delayed),
                ("released", model.released),
                ("active", model.active),
            ):
                held.add_metric([model_id, state], value)
            queued.add_metric([model_id], model.waiting)
            queues.add_metric([model_id, "ready"], model.ready)
            for reason, count in sorted(model.paused.items()):
                queues.add_metric([model_id, f"paused_{reason}"], count)
            for priority in PRIORITIES:
                oldest.add_metric([model_id, priority], model.oldest_waiting_s.get(priority, 0.0))
            found = {"*": model.waits, **model.tenant_waits}
            for name, stats in found.items():
                if stats is not None:
                    waits.add_metric([model_id, name, "0.5"], stats.p50_s)
                    waits.add_metric([model_id, name, "0.99"], stats.p99_s)
        yield from (waiting, share, fair, held, queued, queues, oldest, waits)

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
        limited = [m for m in self._settings.allowed_model_ids if self._settings.limit_for(m).rpm]
        for status in self._quota_store.statuses(limited):
            model_id = status.model_id
            configured.add_metric([model_id], status.configured_rpm)
            effective.add_metric([model_id], status.effective_rpm)
            tokens.add_metric([model_id], status.tokens)
            calls.add_metric([model_id], status.calls_last_minute)
            throttles.add_metric([model_id], status.throttles_total)
        yield from (configured, effective, tokens, calls, throttles)

    def _pools(self) -> Iterator[Metric]:
        """Each configured pool's quota, circuit and today's calls, per model (the families are
        there, empty, without pools)."""
        settings = self._settings
        labels = ["pool", "region", "model"]
        configured = GaugeMetricFamily(
            "imagegen_pool_configured_rpm", "A pool's own quota", labels=labels
        )
        effective = GaugeMetricFamily(
            "imagegen_pool_effective_rpm", "A pool's rate after its throttles (AIMD)", labels=labels
        )
        tokens = GaugeMetricFamily(
            "imagegen_pool_tokens", "Tokens in a pool's bucket", labels=labels
        )
        calls = GaugeMetricFamily(
            "imagegen_pool_calls_last_minute",
            "Calls released to a pool in the last minute",
            labels=labels,
        )
        throttles = CounterMetricFamily(
            "imagegen_pool_throttles", "ThrottlingExceptions from a pool", labels=labels
        )
        circuit = GaugeMetricFamily(
            "imagegen_pool_circuit_open",
            "1 while a pool's circuit is open or probing (access denied, no subscription, no "
            "such model in its Region)",
            labels=labels,
        )
        today = GaugeMetricFamily(
            "imagegen_pool_today",
            "A pool's calls, images, spend (USD), throttles and errors today (UTC)",
            labels=[*labels, "what"],
        )
        regions = {spec.name: spec.region for spec in settings.pools}
        for model_id in settings.allowed_model_ids if regions else ():
            for status in self._quota_store.pool_statuses(model_id):
                found = [status.pool, status.region, model_id]
                quota = status.quota
                configured.add_metric(found, quota.configured_rpm)
                effective.add_metric(found, quota.effective_rpm)
                tokens.add_metric(found, quota.tokens)
                calls.add_metric(found, quota.calls_last_minute)
                throttles.add_metric(found, quota.throttles_total)
                circuit.add_metric(found, 1.0 if status.circuit else 0.0)
        day = time.strftime("%Y-%m-%d", time.gmtime())
        for entry in PoolStats(self._redis).days(list(regions), [day]) if regions else ():
            found = [entry.pool, regions[entry.pool], entry.model_id]
            for what, value in (
                ("calls", entry.calls),
                ("images", entry.images),
                ("spend_usd", entry.spent_usd),
                ("throttles", entry.throttles),
                ("errors", entry.errors),
            ):
                today.add_metric([*found, what], value)
        yield from (configured, effective, tokens, calls, throttles, circuit, today)

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
        waiting, dlq = snapshot.jobs_open, snapshot.dead_letter_jobs
        webhook_dlq, outbox = snapshot.dead_letter_deliveries, snapshot.outbox_pending
        yield from (depth, oldest)
        yield GaugeMetricFamily(
            "imagegen_jobs_open", "Jobs not final yet (what the queue caps count)", value=waiting
        )
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
    collector = FleetCollector(redis, settings)
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
        return Response(render(collector.collect()), media_type=CONTENT_TYPE_LATEST)

    return router
