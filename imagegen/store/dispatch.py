"""The dispatcher: jobs wait in Redis, in one set per (model, tenant, priority class), and are
released into the Celery queues only as fast as the model's shared token bucket allows and only
as many as workers can start now.

Releasing is one Lua script (``dispatch_release.lua``: weighted fair queuing between tenants,
interactive before batch with a bound, earliest deadline first) that any process may run at any
time; several at once are safe. A submission runs it in its own transaction, so a job that finds
tokens free and nothing ahead of it is released at once; every worker runs it from its release
loop (``worker.release_loop``) and as it finishes a job. Nobody leads.

Tenants' weights and caps come from the settings and, per tenant, from the tenant's record (set
through the API or ``imagegen tenants set``), which wins.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagegen.messages import delivery_message_template, generate_message_template
from imagegen.redis import keys
from imagegen.redis.scripts import Scripts
from imagegen.settings import Settings
from imagegen.store.quota import KEY_TTL_MS
from imagegen.store.spend import periods, to_micro

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline

    from imagegen.records import NewJob

__all__ = ["UNLIMITED_LOOKAHEAD", "Dispatch", "Position", "Release", "TenantLimits"]

# Most jobs one run of the release script releases.
RELEASE_MOST = 200
# Released and unclaimed jobs allowed for a model without a rate limit.
UNLIMITED_LOOKAHEAD = 64
_NOTHING_WAITS = -1
_CAPS_FULL = -2


@dataclass(frozen=True)
class Release:
    """One run of the release script: jobs released, and when to run it again (seconds from
    now; None when nothing waits, ``math.inf`` when only a claim or a finished job can make
    room)."""

    released: int
    next_s: float | None
    tenants_waiting: int


@dataclass(frozen=True)
class Position:
    """Where a waiting job stands: 1 is next. ``start_in_s`` is None without a rate limit."""

    position: int
    start_in_s: float | None
    share: float
    rate_rpm: float


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's weight and caps as the dispatcher applies them (record over settings)."""

    tenant: str
    weight: float
    rate_rpm: float
    max_concurrency: int


@dataclass(frozen=True)
class TenantShare:
    """One tenant's use of one model's rate: jobs waiting, jobs released over the last minute,
    their part of all released (``share``) and what weighted fair share gives it while it has
    jobs waiting (``fair_share``, None when it has none)."""

    model_id: str
    tenant: str
    weight: float
    waiting: int
    released_last_minute: int
    share: float
    fair_share: float | None


_LIMIT_FIELDS = ("weight", "rate_rpm", "max_concurrency")


class Dispatch:
    """The dispatcher's state on one Redis client (built with ``decode_responses=True``)."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self._settings = settings
        self._scripts = Scripts.of(redis)
        self._weights = json.dumps(settings.tenant_weights)
        self._templates = (
            generate_message_template("interactive"),
            generate_message_template("batch"),
        )
        self._delivery_template = delivery_message_template()

    def _bucket(self, model_id: str) -> keys.LimiterKeys:
        return keys.limiter_keys(self._settings.aws_region, model_id)

    def lookahead(self, model_id: str) -> int:
        """Released jobs not yet claimed that the model may have: a few seconds of its rate."""
        rpm = self._settings.limit_for(model_id).rpm
        if rpm <= 0:
            return UNLIMITED_LOOKAHEAD
        return max(2, math.ceil(rpm / 60 * self._settings.dispatch_lookahead_s))

    def _release_args(self, model_id: str, now_ms: float | None) -> list[Any]:
        settings = self._settings
        limit = settings.limit_for(model_id)
        day, month = periods()
        return [
            model_id,
            limit.rpm,
            limit.burst,
            limit.rpm * settings.rate_floor_fraction,
            RELEASE_MOST,
            self.lookahead(model_id),
            limit.max_concurrency,
            "" if now_ms is None else now_ms,
            KEY_TTL_MS,
            settings.dispatch_batch_every,
            *self._templates,
            self._weights,
            settings.tenant_rate_limit_rpm,
            settings.tenant_max_concurrency,
            settings.job_retention_s,
            round(settings.webhook_handoff_grace_s * 1000),
            self._delivery_template,
            to_micro(settings.price_usd(model_id)),
            day,
            month,
            settings.spend_retention_days * 86_400,
        ]

    def release(self, model_id: str, now_ms: float | None = None) -> Release:
        """Release what the model's quota and caps allow now (``now_ms`` replaces the server
        clock in tests)."""
        bucket = self._bucket(model_id)
        raw = self._scripts["dispatch_release"](
            keys=[bucket.bucket, bucket.calls], args=self._release_args(model_id, now_ms)
        )
        return _release_from(raw)

    def release_in(self, pipe: Pipeline, model_ids: Iterable[str]) -> None:
        """Queue a release of each model on ``pipe`` (a submission's transaction)."""
        script = self._scripts["dispatch_release"]
        for model_id in model_ids:
            bucket = self._bucket(model_id)
            script(
                keys=[bucket.bucket, bucket.calls],
                args=self._release_args(model_id, None),
                client=pipe,
            )

    def submit_fields(self, job: NewJob) -> dict[str, str]:
        """What a job's record needs beyond its submission for the cache (fixed seeds): its key,
        how long an entry serves, and where a hit is booked (price, day, month)."""
        settings = self._settings
        cache_key = job.cache_key
        if cache_key is None or settings.cache_ttl_s <= 0:
            return {}
        day, month = periods()
        copy = {"cache_copy": "1"} if settings.cache_copy_objects else {}
        return {
            **copy,
            "cache_key": cache_key,
            "cache_ttl": str(settings.cache_ttl_s),
            "price_micro": str(to_micro(settings.price_usd(job.model_id))),
            "cache_day": day,
            "cache_month": month,
            "ledger_ttl": str(settings.spend_retention_days * 86_400),
        }

    def models_with_work(self) -> list[str]:
        """Models with jobs waiting, due later or released and unclaimed."""
        return sorted(str(m) for m in self.redis.smembers(keys.DISPATCH_MODELS_KEY))

    def known_models(self) -> list[str]:
        """Every allowed model, and any other that still has jobs in the dispatcher."""
        return sorted({*self._settings.allowed_model_ids, *self.models_with_work()})

    # -- where jobs stand --------------------------------------------------------------------

    def _position(
        self, job_id: str, model_id: str, tenant: str | None, priority: str, ahead: int
    ) -> Position | None:
        limit = self._settings.limit_for(model_id)
        position, start_ms, share, rate = self._scripts["dispatch_position"](
            keys=[self._bucket(model_id).bucket],
            args=[
                job_id,
                model_id,
                tenant or "",
                priority,
                self._weights,
                limit.rpm,
                limit.burst,
                limit.rpm * self._settings.rate_floor_fraction,
                ahead,
            ],
        )
        if int(position) == 0:
            return None
        start = float(start_ms)
        return Position(
            position=int(position),
            start_in_s=None if start < 0 else start / 1000,
            share=float(share),
            rate_rpm=float(rate),
        )

    def position(
        self, job_id: str, model_id: str, tenant: str | None, priority: str
    ) -> Position | None:
        """The waiting job's position and start estimate; None when it is not waiting."""
        return self._position(job_id, model_id, tenant, priority, 0)

    def estimate(
        self, model_id: str, tenant: str | None, priority: str, ahead_in_submission: int = 0
    ) -> Position:
        """Where a job about to be submitted would stand, after ``ahead_in_submission`` jobs of
        the same model, tenant and class submitted with it."""
        found = self._position("", model_id, tenant, priority, ahead_in_submission)
        assert found is not None  # a new job always has a position
        return found

    def waiting(self, model_id: str) -> dict[str, int]:
        """Jobs waiting per tenant for one model (``-`` for jobs without a tenant)."""
        tenants = [str(t) for t in self.redis.zrange(keys.dispatch_keys(model_id).tenants, 0, -1)]
        pipe = self.redis.pipeline(transaction=False)
        for tenant in tenants:
            for priority in ("interactive", "batch"):
                pipe.zcard(keys.waiting_key(model_id, tenant, priority))
        counts = pipe.execute()
        return {
            tenant: int(counts[2 * i]) + int(counts[2 * i + 1]) for i, tenant in enumerate(tenants)
        }

    def released_last_minute(self, model_id: str) -> Counter[str]:
        """Jobs released per tenant over the last minute: each tenant's share of the rate."""
        bucket = self._bucket(model_id)
        now_s, now_us = self.redis.time()
        now_ms = now_s * 1000 + now_us / 1000
        members = self.redis.zrangebyscore(bucket.calls, now_ms - 60_000, "+inf")
        return Counter(str(m).split("|", 1)[0] for m in members)

    def shares(self, model_id: str) -> list[TenantShare]:
        """Every tenant with jobs waiting or released over the last minute, for one model."""
        waiting = self.waiting(model_id)
        recent = self.released_last_minute(model_id)
        tenants = sorted({*waiting, *recent})
        weights = {tenant: self.tenant_limits(tenant).weight for tenant in tenants}
        waiting_weight = sum(weights[t] for t in waiting)
        released = sum(recent.values())
        return [
            TenantShare(
                model_id=model_id,
                tenant=tenant,
                weight=weights[tenant],
                waiting=waiting.get(tenant, 0),
                released_last_minute=recent[tenant],
                share=recent[tenant] / released if released else 0.0,
                fair_share=weights[tenant] / waiting_weight if tenant in waiting else None,
            )
            for tenant in tenants
        ]

    def counts(self, model_id: str) -> tuple[int, int, int]:
        """Jobs of the model due later (retries), released and unclaimed, released or running."""
        names = keys.dispatch_keys(model_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(names.delayed)
        pipe.zcard(names.released)
        pipe.zcard(names.active)
        delayed, released, active = pipe.execute()
        return int(delayed), int(released), int(active)

    # -- tenants' weights and caps -----------------------------------------------------------

    def set_tenant_limits(
        self,
        tenant: str,
        *,
        weight: float | None = None,
        rate_rpm: float | None = None,
        max_concurrency: int | None = None,
    ) -> TenantLimits:
        """Set a tenant's weight or caps (None leaves one as it is; a negative value clears it
        back to the settings' default; a weight must be above 0)."""
        if weight == 0:
            msg = "a weight must be above 0 (a negative one clears it)"
            raise ValueError(msg)
        given = {"weight": weight, "rate_rpm": rate_rpm, "max_concurrency": max_concurrency}
        key = keys.tenant_key(tenant)
        for name, value in given.items():
            if value is None:
                continue
            if value < 0:
                self.redis.hdel(key, name)
            else:
                self.redis.hset(key, name, str(value))
        return self.tenant_limits(tenant)

    def tenant_limits(self, tenant: str) -> TenantLimits:
        settings = self._settings
        raw = self.redis.hmget(keys.tenant_key(tenant), list(_LIMIT_FIELDS))
        weight, rate_rpm, max_concurrency = (str(v) if v else None for v in raw)
        return TenantLimits(
            tenant=tenant,
            weight=float(weight) if weight else settings.tenant_weights.get(tenant, 1.0),
            rate_rpm=float(rate_rpm) if rate_rpm else settings.tenant_rate_limit_rpm,
            max_concurrency=int(max_concurrency)
            if max_concurrency
            else settings.tenant_max_concurrency,
        )


def _release_from(raw: list[Any]) -> Release:
    released, next_ms, waiting = raw
    wait = float(next_ms)
    if wait == _NOTHING_WAITS:
        next_s = None
    elif wait == _CAPS_FULL:
        next_s = math.inf
    else:
        next_s = wait / 1000
    return Release(int(released), next_s, int(waiting))
