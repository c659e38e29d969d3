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

from imagegen.redis import keys
from imagegen.redis.scripts import Scripts
from imagegen.settings import Settings

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["KEY_TTL_MS", "QuotaStatus", "QuotaStore"]

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

    def report(self, model_id: str, *, throttled: bool, now_ms: float | None = None) -> float:
        """Tell the shared rate how a call went; returns the new effective rate (per minute)."""
        settings = self._settings
        limit = settings.limit_for(model_id)
        bucket = self._keys(model_id)
        rate = self._scripts.run(
            "quota_report",
            [bucket.bucket, bucket.throttles],
            [
                *self._bucket_args(model_id),
                "throttled" if throttled else "ok",
                limit.rpm * settings.rate_increase_fraction,
                settings.rate_decrease_factor,
                settings.rate_decrease_cooldown_s * 1000,
                uuid.uuid4().hex,
                KEY_TTL_MS,
            ],
            now_ms=now_ms,
        )
        return float(rate)

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
