"""The dispatcher: jobs wait in Redis, in one set per (model, tenant, priority class), and are
released into the Celery queues only as fast as the model's shared token bucket allows and only
as many as workers can start now.

Releasing is one Lua script (``dispatch_release.lua``: weighted fair queuing between tenants'
queues, interactive before batch with a bound, earliest deadline first) that any process may run
at any time; several at once are safe. A tenant's queue that cannot be served (its budget, its
caps) is paused, out of the scan, until it can be (``imagegen.lifecycle``). A submission runs the
release in its own transaction, so a job that finds tokens free and nothing ahead of it is
released at once; every worker runs it from its release loop (``worker.release_loop``) and as it
finishes a job. Nobody leads.

Tenants' weights and caps come from the settings and, per tenant, from the tenant's record (set
through the API or ``imagegen tenants set``), which wins.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from imagegen.contract import PRIORITIES
from imagegen.messages import generate_message_template
from imagegen.pools import Pool
from imagegen.redis import keys
from imagegen.redis.scripts import Scripts
from imagegen.settings import Settings
from imagegen.store.context import JobContext
from imagegen.store.quota import KEY_TTL_MS
from imagegen.store.spend import to_micro

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline

    from imagegen.records import NewJob

__all__ = [
    "UNLIMITED_LOOKAHEAD",
    "Dispatch",
    "ModelSnapshot",
    "Position",
    "Release",
    "TenantLimits",
    "WaitStats",
]

# Most jobs one run of the release script releases (a run holds Redis about 15 us per job).
RELEASE_MOST = 64
# Why a tenant's queue is paused (``scripts/lib/queues.lua``).
PAUSE_REASONS = ("budget", "concurrency", "rate")
# How many of a model's last starts its waits list keeps (a few more between trims:
# scripts/lib/lifecycle.lua).
RECENT_WAITS = 2000
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
    """Where a waiting job stands: 1 is next. ``start_in_s`` is None when nothing bounds it (no
    rate limit, cap or pause); ``paused_reason`` says why its tenant's queue is paused."""

    position: int
    start_in_s: float | None
    share: float
    rate_rpm: float
    paused_reason: str | None = None


@dataclass(frozen=True)
class ModelSnapshot:
    """One model's figures for the metrics: the busiest tenants' shares, jobs waiting (every
    tenant), tenant queues ready and paused (by reason), jobs due later, released, active."""

    model_id: str
    shares: list[TenantShare]
    waiting: int
    ready: int
    paused: dict[str, int]
    delayed: int
    released: int
    active: int
    # How long the oldest waiting job of each class has waited (seconds; absent: none waits).
    oldest_waiting_s: dict[str, float] = field(default_factory=dict)
    # Waits of the jobs started over the last minutes: every tenant's, and the busiest ones'.
    waits: WaitStats | None = None
    tenant_waits: dict[str, WaitStats] = field(default_factory=dict)


@dataclass(frozen=True)
class WaitStats:
    """How long jobs waited, submit (or their return to the dispatcher) to start: seconds."""

    started: int
    p50_s: float
    p99_s: float


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's weight and caps as the dispatcher applies them (record over settings)."""

    tenant: str
    weight: float
    rate_rpm: float
    max_concurrency: int
    # The pools its jobs may go to (empty: any).
    pools: tuple[str, ...] = ()


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
        self._context = JobContext.from_settings(settings)
        self._weights = json.dumps(settings.tenant_weights, sort_keys=True)
        self._templates = (
            generate_message_template("interactive"),
            generate_message_template("batch"),
        )

    def _bucket(self, model_id: str) -> keys.LimiterKeys:
        return keys.limiter_keys(self._settings.aws_region, model_id)

    def _release_keys(self, model_id: str) -> list[str]:
        """The model's bucket and calls, then its configured pools' buckets and calls."""
        bucket = self._bucket(model_id)
        pools = [keys.pool_limiter_keys(p.name, model_id) for p in self._pools(model_id)]
        return [bucket.bucket, bucket.calls, *(k.bucket for k in pools), *(k.calls for k in pools)]

    def _pools(self, model_id: str) -> tuple[Pool, ...]:
        return self._settings.configured_pools(model_id)

    def _pool_args(self, model_id: str) -> list[Any]:
        settings = self._settings
        pools = self._pools(model_id)
        args: list[Any] = [
            settings.pool_choice,
            round(settings.pool_circuit_open_s * 1000),
            len(pools),
        ]
        model_price = settings.price_usd(model_id)
        for pool in pools:
            price = model_price if pool.price_usd is None else pool.price_usd
            args += [
                pool.name,
                pool.rpm,
                pool.burst,
                pool.rpm * settings.rate_floor_fraction,
                to_micro(price),
            ]
        return args

    def lookahead(self, model_id: str) -> int:
        """Released jobs not yet claimed that the model may have: a few seconds of its rate."""
        rpm = self._settings.limit_for(model_id).rpm
        if rpm <= 0:
            return UNLIMITED_LOOKAHEAD
        return max(2, math.ceil(rpm / 60 * self._settings.dispatch_lookahead_s))

    def _release_args(self, model_id: str) -> list[Any]:
        settings = self._settings
        limit = settings.limit_for(model_id)
        return [
            *self._context.args(),
            model_id,
            limit.rpm,
            limit.burst,
            limit.rpm * settings.rate_floor_fraction,
            RELEASE_MOST,
            self.lookahead(model_id),
            limit.max_concurrency,
            KEY_TTL_MS,
            settings.dispatch_batch_every,
            *self._templates,
            settings.tenant_rate_limit_rpm,
            settings.tenant_max_concurrency,
            to_micro(settings.price_usd(model_id)),
            *self._pool_args(model_id),
        ]

    def release(self, model_id: str, now_ms: float | None = None) -> Release:
        """Release what the model's quota and caps allow now (``now_ms`` replaces the clock)."""
        raw = self._scripts.run(
            "dispatch_release",
            self._release_keys(model_id),
            self._release_args(model_id),
            now_ms=now_ms,
        )
        return _release_from(raw)

    def release_in(self, pipe: Pipeline, model_ids: Iterable[str]) -> None:
        """Queue a release of each model on ``pipe`` (a submission's transaction, a finish's
        round trip); ``release_of`` reads each one's reply."""
        for model_id in model_ids:
            self._scripts.run(
                "dispatch_release",
                self._release_keys(model_id),
                self._release_args(model_id),
                client=pipe,
            )

    @staticmethod
    def release_of(reply: Any) -> Release:
        """What a release queued by ``release_in`` did, from its reply."""
        return _release_from(reply)

    def submit_fields(self, job: NewJob) -> dict[str, str]:
        """What a job's record needs beyond its submission: the price it reserves when released,
        and for the cache (fixed seeds) its key and how long an entry serves."""
        settings = self._settings
        fields = {"price_micro": str(to_micro(settings.price_usd(job.model_id)))}
        cache_key = job.cache_key
        if cache_key is None or settings.cache_ttl_s <= 0:
            return fields
        copy = {"cache_copy": "1"} if settings.cache_copy_objects else {}
        return {**fields, **copy, "cache_key": cache_key, "cache_ttl": str(settings.cache_ttl_s)}

    def models_with_work(self) -> list[str]:
        """Models with jobs waiting, paused, due later or released and unclaimed."""
        return sorted(str(m) for m in self.redis.smembers(keys.DISPATCH_MODELS_KEY))

    def known_models(self) -> list[str]:
        """Every allowed model, and any other that still has jobs in the dispatcher."""
        return sorted({*self._settings.allowed_model_ids, *self.models_with_work()})

    # -- where jobs stand --------------------------------------------------------------------

    def _limits_args(self, model_id: str) -> list[Any]:
        limit = self._settings.limit_for(model_id)
        return [
            self._weights,
            limit.rpm,
            limit.burst,
            limit.rpm * self._settings.rate_floor_fraction,
            self._settings.tenant_rate_limit_rpm,
            self._settings.tenant_max_concurrency,
            self._settings.dispatch_batch_every,
        ]

    def position(self, job_id: str, model_id: str) -> Position | None:
        """The waiting job's position and start estimate; None when it is not waiting. Costs
        O(log n) in tenants and jobs."""
        raw = self._scripts.run(
            "dispatch_position",
            [self._bucket(model_id).bucket],
            [job_id, *self._limits_args(model_id)],
        )
        return _position_from(raw)

    def estimates(
        self,
        model_id: str,
        tenant: str | None,
        priority: str,
        jobs: Sequence[tuple[int | None, int]],
    ) -> list[Position]:
        """Where jobs about to be submitted would stand: per job its deadline (ms, or None) and
        how many jobs of the same submission go before it. Each counts only the tenant's jobs
        that run before it (earlier deadlines), at the share its caps let it have."""
        args: list[Any] = [model_id, tenant or "", priority, *self._limits_args(model_id)]
        for deadline_ms, ahead in jobs:
            args += ["" if deadline_ms is None else deadline_ms, ahead]
        raw = self._scripts.run("dispatch_estimate", [self._bucket(model_id).bucket], args)
        found = [_position_from(item) for item in raw]
        return [item for item in found if item is not None]

    def waiting(self, model_id: str, busiest: int | None = None) -> dict[str, int]:
        """Jobs waiting per tenant for one model (``-`` for jobs without a tenant), the
        ``busiest`` only when given: one read."""
        raw = self.redis.zrange(
            keys.dispatch_keys(model_id).waiting,
            0,
            -1 if busiest is None else busiest - 1,
            desc=True,
            withscores=True,
        )
        pairs = cast("list[tuple[str, float]]", raw)
        return {str(tenant): int(count) for tenant, count in pairs if int(count) > 0}

    def waiting_total(self, model_id: str) -> int:
        """Jobs of the model waiting, every tenant."""
        return int(self.redis.hget(keys.dispatch_keys(model_id).state, "jobs") or 0)

    def paused(self, model_id: str) -> dict[str, str]:
        """Tenants whose queue of the model is paused, and why (budget, concurrency, rate)."""
        names = keys.dispatch_keys(model_id)
        tenants = [str(t) for t in self.redis.zrange(names.paused, 0, -1)]
        if not tenants:
            return {}
        reasons = self.redis.hmget(names.state, [f"pause|{t}" for t in tenants])
        return {t: str(r or "") for t, r in zip(tenants, reasons, strict=True)}

    def released_last_minute(self, model_id: str) -> Counter[str]:
        """Jobs released per tenant over the last minute: each tenant's share of the rate."""
        bucket = self._bucket(model_id)
        now_s, now_us = self.redis.time()
        now_ms = now_s * 1000 + now_us / 1000
        members = self.redis.zrangebyscore(bucket.calls, now_ms - 60_000, "+inf")
        return Counter(str(m).split("|", 1)[0] for m in members)

    def shares(
        self, model_id: str, tenant: str | None = None, *, busiest: int | None = None
    ) -> list[TenantShare]:
        """Every tenant with jobs waiting or released over the last minute, for one model (only
        ``tenant``'s when given; the ``busiest`` by jobs waiting, then released, when given): a
        few reads whatever the number of tenants."""
        names = keys.dispatch_keys(model_id)
        if tenant is None:
            waiting = self.waiting(model_id, busiest)
        else:
            found = self.redis.zscore(names.waiting, tenant)
            waiting = {tenant: int(found)} if found else {}
        everyone = self.released_last_minute(model_id)
        released = sum(everyone.values())
        recent = everyone
        if tenant is not None:
            recent = Counter({tenant: everyone[tenant]}) if everyone[tenant] else Counter()
        tenants = _busiest(waiting, recent, busiest)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(names.state, "weight_sum")
        pipe.hmget(names.weight, tenants or ["-"])
        raw_sum, raw_weights = pipe.execute()
        ready = {t: float(w) for t, w in zip(tenants, raw_weights, strict=False) if w}
        weight_sum = float(raw_sum or 0)
        unknown = [t for t in tenants if t not in ready]
        weights = {**dict(zip(unknown, self._weights_of(unknown), strict=True)), **ready}
        return [
            TenantShare(
                model_id=model_id,
                tenant=name,
                weight=weights[name],
                waiting=waiting.get(name, 0),
                released_last_minute=recent[name],
                share=recent[name] / released if released else 0.0,
                fair_share=ready[name] / weight_sum if name in ready and weight_sum else None,
            )
            for name in tenants
        ]

    def _weights_of(self, tenants: list[str]) -> list[float]:
        """Tenants' weights as the dispatcher applies them (record over settings), one read."""
        if not tenants:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in tenants:
            pipe.hget(keys.tenant_key(name), "weight")
        defaults = self._settings.tenant_weights
        return [
            float(found) if found else defaults.get(name, 1.0)
            for name, found in zip(tenants, pipe.execute(), strict=True)
        ]

    def queue_counts(self, model_id: str) -> tuple[int, int, dict[str, int]]:
        """Jobs waiting (all tenants), tenant queues ready, and paused queues by reason: one
        round trip whatever the number of tenants."""
        names = keys.dispatch_keys(model_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(names.state, ["jobs", *(f"paused|{reason}" for reason in PAUSE_REASONS)])
        pipe.zcard(names.tenants)
        (jobs, *paused), ready = pipe.execute()
        counts = {r: int(n or 0) for r, n in zip(PAUSE_REASONS, paused, strict=True) if n}
        return int(jobs or 0), int(ready), {r: n for r, n in counts.items() if n > 0}

    def snapshot(self, model_ids: Sequence[str], busiest: int) -> list[ModelSnapshot]:
        """Every model's figures for the fleet's metrics and the operators' page, with the
        ``busiest`` tenants' shares and waits: two round trips whatever the number of models
        and tenants."""
        now_ms = time.time() * 1000
        pipe = self.redis.pipeline(transaction=False)
        for model_id in model_ids:
            names = keys.dispatch_keys(model_id)
            pipe.zrange(names.waiting, 0, busiest - 1, desc=True, withscores=True)
            pipe.hmget(names.state, ["jobs", "weight_sum", *(f"paused|{r}" for r in PAUSE_REASONS)])
            pipe.zcard(names.tenants)
            pipe.zcard(names.delayed)
            pipe.zcard(names.released)
            pipe.zcard(names.active)
            pipe.zrangebyscore(self._bucket(model_id).calls, now_ms - 60_000, "+inf")
            for priority in PRIORITIES:
                pipe.zrange(keys.waiting_since_key(model_id, priority), 0, 0, withscores=True)
            pipe.lrange(keys.recent_waits_key(model_id), 0, RECENT_WAITS - 1)
        replies = pipe.execute()
        width = len(replies) // max(1, len(model_ids))
        raw = [replies[width * i : width * (i + 1)] for i in range(len(model_ids))]
        weights_pipe = self.redis.pipeline(transaction=False)
        picked = []
        for model_id, (top, *_, calls) in zip(model_ids, (r[:7] for r in raw), strict=True):
            waiting = {str(t): int(n) for t, n in cast("list[tuple[str, float]]", top) if n > 0}
            recent = Counter(str(m).partition("|")[0] for m in calls)
            tenants = _busiest(waiting, recent, busiest)
            weights_pipe.hmget(keys.dispatch_keys(model_id).weight, tenants or ["-"])
            picked.append((waiting, recent, tenants))
        return [
            self._model_snapshot(model_id, model_raw, chosen, ready_weights, now_ms)
            for model_id, model_raw, chosen, ready_weights in zip(
                model_ids, raw, picked, weights_pipe.execute(), strict=True
            )
        ]

    def _model_snapshot(
        self,
        model_id: str,
        raw: list[Any],
        chosen: tuple[dict[str, int], Counter[str], list[str]],
        raw_weights: list[Any],
        now_ms: float,
    ) -> ModelSnapshot:
        _, state, ready, delayed, released, active, _ = raw[:7]
        firsts, starts = raw[7:-1], [str(item) for item in raw[-1]]
        waiting, recent, tenants = chosen
        jobs, weight_sum, *paused = state
        ready_weights = {t: float(w) for t, w in zip(tenants, raw_weights, strict=False) if w}
        unknown = [t for t in tenants if t not in ready_weights]
        weights = {**dict(zip(unknown, self._weights_of(unknown), strict=True)), **ready_weights}
        total_released = sum(recent.values())
        total_weight = float(weight_sum or 0)
        shares = [
            TenantShare(
                model_id=model_id,
                tenant=name,
                weight=weights[name],
                waiting=waiting.get(name, 0),
                released_last_minute=recent[name],
                share=recent[name] / total_released if total_released else 0.0,
                fair_share=ready_weights[name] / total_weight
                if name in ready_weights and total_weight
                else None,
            )
            for name in tenants
        ]
        every, by_tenant = _recent_waits(starts, now_ms)
        tenant_waits = {}
        for name in tenants:
            found = _wait_stats(by_tenant.get(name, []))
            if found is not None:
                tenant_waits[name] = found
        return ModelSnapshot(
            model_id=model_id,
            shares=shares,
            waiting=int(jobs or 0),
            ready=int(ready),
            paused={r: int(n) for r, n in zip(PAUSE_REASONS, paused, strict=True) if n and int(n)},
            delayed=int(delayed),
            released=int(released),
            active=int(active),
            oldest_waiting_s={
                priority: max(0.0, (now_ms - float(first[0][1])) / 1000)
                for priority, first in zip(PRIORITIES, firsts, strict=True)
                if first
            },
            waits=_wait_stats(every),
            tenant_waits=tenant_waits,
        )

    def tenant_shares(self, tenant: str, model_ids: Sequence[str]) -> list[TenantShare]:
        """One tenant's share of each model's rate (the models it has jobs waiting for or
        released over the last minute): two round trips whatever the number of models."""
        since_ms = time.time() * 1000 - 60_000
        pipe = self.redis.pipeline(transaction=False)
        for model_id in model_ids:
            names = keys.dispatch_keys(model_id)
            pipe.zscore(names.waiting, tenant)
            pipe.hget(names.weight, tenant)
            pipe.hget(names.state, "weight_sum")
            pipe.zrangebyscore(self._bucket(model_id).calls, since_ms, "+inf")
        replies = pipe.execute()
        [weight] = self._weights_of([tenant])
        found = []
        for index, model_id in enumerate(model_ids):
            waiting, ready_weight, weight_sum, calls = replies[4 * index : 4 * index + 4]
            recent = Counter(str(m).split("|", 1)[0] for m in calls)
            if not waiting and not recent[tenant]:
                continue
            released = sum(recent.values())
            total_weight = float(weight_sum or 0)
            found.append(
                TenantShare(
                    model_id=model_id,
                    tenant=tenant,
                    weight=float(ready_weight) if ready_weight else weight,
                    waiting=int(waiting or 0),
                    released_last_minute=recent[tenant],
                    share=recent[tenant] / released if released else 0.0,
                    fair_share=float(ready_weight) / total_weight
                    if ready_weight and total_weight
                    else None,
                )
            )
        return found

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
        pools: Sequence[str] | None = None,
    ) -> TenantLimits:
        """Set a tenant's weight or caps (None leaves one as it is; a negative value clears it
        back to the settings' default; a weight must be above 0), or the pools its jobs may go
        to (empty: any). Its paused queues are looked at again by the next release."""
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
        if pools is not None:
            if pools:
                self.redis.hset(key, "pools", ",".join(pools))
            else:
                self.redis.hdel(key, "pools")
        self._scripts.run("tenant_resume", [], [tenant, self._weights])
        return self.tenant_limits(tenant)

    def tenant_limits(self, tenant: str) -> TenantLimits:
        settings = self._settings
        raw = self.redis.hmget(keys.tenant_key(tenant), [*_LIMIT_FIELDS, "pools"])
        weight, rate_rpm, max_concurrency, pools = (str(v) if v else None for v in raw)
        return TenantLimits(
            tenant=tenant,
            weight=float(weight) if weight else settings.tenant_weights.get(tenant, 1.0),
            rate_rpm=float(rate_rpm) if rate_rpm else settings.tenant_rate_limit_rpm,
            max_concurrency=int(max_concurrency)
            if max_concurrency
            else settings.tenant_max_concurrency,
            pools=tuple(p for p in (pools or "").split(",") if p),
        )


def _busiest(waiting: dict[str, int], recent: Counter[str], most: int | None) -> list[str]:
    """The ``most`` tenants with the most jobs waiting, then released (every one without
    ``most``), sorted by name. A tenant with jobs waiting goes before any without: when
    ``most`` of them wait, the tenants that only released are not even ranked."""
    if most is None:
        return sorted(waiting.keys() | recent.keys())
    candidates: Iterable[str] = waiting.keys()
    if len(waiting) < most:
        candidates = waiting.keys() | recent.keys()
        if len(candidates) <= most:
            return sorted(candidates)
    ranked = heapq.nsmallest(most, candidates, key=lambda t: (-waiting.get(t, 0), -recent[t], t))
    return sorted(ranked)


# The window the operators' wait figures cover.
RECENT_WAITS_WINDOW_MS = 5 * 60_000


def _recent_waits(starts: list[str], now_ms: float) -> tuple[list[float], dict[str, list[float]]]:
    """The waits (seconds) of the jobs started over the last minutes, from the model's list of
    last starts (newest first): every job's, and each tenant's; one pass over the list."""
    every: list[float] = []
    by_tenant: dict[str, list[float]] = {}
    oldest_ms = now_ms - RECENT_WAITS_WINDOW_MS
    for item in starts:
        name, waited, at = item.rsplit("|", 2)
        if float(at) < oldest_ms:
            break  # newest first: the rest is older
        wait_s = float(waited) / 1000
        every.append(wait_s)
        by_tenant.setdefault(name, []).append(wait_s)
    return every, by_tenant


def _wait_stats(waits: list[float]) -> WaitStats | None:
    """p50 and p99 of some waits (seconds)."""
    if not waits:
        return None
    ordered = sorted(waits)
    return WaitStats(
        started=len(ordered),
        p50_s=ordered[len(ordered) // 2],
        p99_s=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    )


def _position_from(raw: list[Any]) -> Position | None:
    position, start_ms, share, rate, reason = raw
    if int(position) == 0:
        return None
    start = float(start_ms)
    return Position(
        position=int(position),
        start_in_s=None if start < 0 else start / 1000,
        share=float(share),
        rate_rpm=float(rate),
        paused_reason=str(reason) or None,
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
