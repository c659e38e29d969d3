"""The quota store: one token bucket per Bedrock quota (region and model) with its adaptive
rate, and the calls and throttles of the last minute.

The dispatcher takes the tokens (``dispatch_release.lua``); workers report each call's outcome
here (``worker.limiter``). Each step is one Lua script on the server clock (``load_bucket`` in
``scripts/lib/bucket.lua`` computes the bucket the same way for every script).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from imagegen.pools import Pool
from imagegen.redis import keys
from imagegen.redis.scripts import Scripts
from imagegen.settings import Settings

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["KEY_TTL_MS", "PoolStatus", "QuotaStatus", "QuotaStore"]

# The bucket and its sets vanish this long after the last call, so a retired model leaves no
# state behind.
KEY_TTL_MS = 10 * 60_000


@dataclass(frozen=True)
class QuotaStatus:
    model_id: str
    configured_rpm: float
    effective_rpm: float
    tokens: float
    calls_last_minute: int
    throttles_last_minute: int
    throttles_total: int


@dataclass(frozen=True)
class PoolStatus:
    """One pool's quota of one model, and its circuit (None: closed)."""

    pool: str
    region: str
    quota: QuotaStatus
    circuit: str | None
    circuit_reason: str | None
    circuit_until_ms: float | None
    circuit_opens: int


class QuotaStore:
    """Every model's quota on one Redis client, as the settings configure it."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._scripts = Scripts.of(redis)

    def _keys(self, model_id: str) -> keys.LimiterKeys:
        return keys.limiter_keys(self._settings.aws_region, model_id)

    def _bucket_args(self, model_id: str) -> list[float]:
        limit = self._settings.limit_for(model_id)
        return [limit.rpm, limit.burst, limit.rpm * self._settings.rate_floor_fraction]

    def _pool(self, model_id: str, pool: str | None) -> Pool | None:
        """The configured pool ``pool`` of ``model_id`` (None: the model's own bucket)."""
        if pool is None:
            return None
        return next((p for p in self._settings.configured_pools(model_id) if p.name == pool), None)

    def report(
        self,
        model_id: str,
        *,
        throttled: bool = False,
        pool: str | None = None,
        denied: str | None = None,
        failed: str | None = None,
        now_ms: float | None = None,
    ) -> float:
        """Tell the shared rate how a call went (on ``pool``'s own bucket when it is a configured
        pool of the model); ``denied`` (the error's code) opens the pool's circuit, ``failed`` (a
        5xx or a timeout's code) does after ``pool_circuit_failures`` in a row. Returns the new
        effective rate (per minute)."""
        rate = self.report_in(
            None,
            model_id,
            throttled=throttled,
            pool=pool,
            denied=denied,
            failed=failed,
            now_ms=now_ms,
        )
        return float(rate)

    def report_in(
        self,
        pipe: Any,
        model_id: str,
        *,
        throttled: bool = False,
        pool: str | None = None,
        denied: str | None = None,
        failed: str | None = None,
        now_ms: float | None = None,
    ) -> Any:
        """``report``, queued on ``pipe`` (its reply is the new rate) when one is given; run now
        (returning the rate) when ``pipe`` is None."""
        settings = self._settings
        found = self._pool(model_id, pool)
        if found is None:
            bucket = self._keys(model_id)
            args = self._bucket_args(model_id)
        else:
            bucket = keys.pool_limiter_keys(found.name, model_id)
            args = [found.rpm, max(found.burst, 2), found.rpm * settings.rate_floor_fraction]
        outcome = "denied" if denied else "failed" if failed else "throttled" if throttled else "ok"
        return self._scripts.run(
            "quota_report",
            [bucket.bucket, bucket.throttles],
            [
                *args,
                outcome,
                args[0] * settings.rate_increase_fraction,
                settings.rate_decrease_factor,
                settings.rate_decrease_cooldown_s * 1000,
                uuid.uuid4().hex,
                KEY_TTL_MS,
                round(settings.pool_circuit_open_s * 1000),
                denied or failed or "",
                settings.pool_circuit_failures,
            ],
            now_ms=now_ms,
            client=pipe,
        )

    def pool_statuses(self, model_id: str) -> list[PoolStatus]:
        """The configured pools of ``model_id``: each one's quota and circuit, one round trip."""
        settings = self._settings
        pools = settings.configured_pools(model_id)

        def build(pipe: Any) -> None:
            for pool in pools:
                bucket = keys.pool_limiter_keys(pool.name, model_id)
                self._scripts.run(
                    "quota_peek",
                    [bucket.bucket, bucket.calls, bucket.throttles],
                    [pool.rpm, max(pool.burst, 2), pool.rpm * settings.rate_floor_fraction],
                    client=pipe,
                )
                pipe.hmget(
                    bucket.bucket,
                    ["circuit", "circuit_reason", "circuit_until_ms", "circuit_opens"],
                )

        replies = self._scripts.execute(build, transaction=False) if pools else []
        found = []
        for index, pool in enumerate(pools):
            (tokens, rate, calls, throttles, total), circuit = replies[2 * index : 2 * index + 2]
            state, reason, until, opens = circuit
            found.append(
                PoolStatus(
                    pool=pool.name,
                    region=pool.region,
                    quota=QuotaStatus(
                        model_id=model_id,
                        configured_rpm=pool.rpm,
                        effective_rpm=float(rate),
                        tokens=float(tokens),
                        calls_last_minute=int(calls),
                        throttles_last_minute=int(throttles),
                        throttles_total=int(float(total)),
                    ),
                    circuit=str(state) if state else None,
                    circuit_reason=str(reason) if reason else None,
                    circuit_until_ms=float(until) if until else None,
                    circuit_opens=int(opens or 0),
                )
            )
        return found

    def status(self, model_id: str) -> QuotaStatus:
        """The quota of ``model_id`` as every worker sees it now (Redis server clock)."""
        [found] = self.statuses([model_id])
        return found

    def statuses(self, model_ids: list[str]) -> list[QuotaStatus]:
        """The quotas of ``model_ids``, in one round trip."""

        def build(pipe: Any) -> None:
            for model_id in model_ids:
                bucket = self._keys(model_id)
                self._scripts.run(
                    "quota_peek",
                    [bucket.bucket, bucket.calls, bucket.throttles],
                    self._bucket_args(model_id),
                    client=pipe,
                )

        replies = self._scripts.execute(build, transaction=False)
        return [
            QuotaStatus(
                model_id=model_id,
                configured_rpm=self._settings.limit_for(model_id).rpm,
                effective_rpm=float(rate),
                tokens=float(tokens),
                calls_last_minute=int(calls),
                throttles_last_minute=int(throttles),
                throttles_total=int(float(total)),
            )
            for model_id, (tokens, rate, calls, throttles, total) in zip(
                model_ids, replies, strict=True
            )
        ]
