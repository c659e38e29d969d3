"""What each Bedrock pool did, per UTC day and model: calls, images, spend, throttles, errors.

Workers count every call here as it ends (``worker.pipeline``), so each account's bill can be
checked against it (``imagegen spend --pools``, the operators' page). Days are kept
``POOL_STATS_DAYS``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from imagegen.redis import keys
from imagegen.redis.codecs import MICRO_USD

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["POOL_STATS_DAYS", "PoolDay", "PoolStats"]

POOL_STATS_DAYS = 62
# What a call's outcome counts as (anything else is an error).
_IMAGES = frozenset({"image", "filtered"})
_THROTTLED = "ThrottlingException"


@dataclass
class PoolDay:
    """One pool's day for one model."""

    pool: str
    day: str
    model_id: str
    calls: int = 0
    images: int = 0
    spent_usd: float = 0.0
    throttles: int = 0
    errors: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)


def _today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")


class PoolStats:
    """The pools' counters on one Redis client (``decode_responses=True``)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def count(
        self,
        pool: str,
        model_id: str,
        outcome: str,
        *,
        billed_micro: int | None = None,
        day: str | None = None,
        pipe: Any = None,
    ) -> None:
        """Count one call of ``pool``: ``outcome`` is ``image``, ``filtered`` or the error's
        code; ``billed_micro`` what the image it bought cost (None: it bought none). With
        ``pipe``, the counts are queued on that pipeline (sent with its other commands)."""
        key = keys.pool_stats_key(pool, day or _today())
        own = pipe is None
        if pipe is None:
            pipe = self._redis.pipeline(transaction=False)
        pipe.hincrby(key, f"calls|{model_id}", 1)
        if billed_micro is not None:
            pipe.hincrby(key, f"images|{model_id}", 1)
            if billed_micro > 0:
                pipe.hincrby(key, f"spent_micro|{model_id}", billed_micro)
        if outcome == _THROTTLED:
            pipe.hincrby(key, f"throttles|{model_id}", 1)
        elif outcome not in _IMAGES:
            pipe.hincrby(key, f"error:{outcome}|{model_id}", 1)
        pipe.expire(key, POOL_STATS_DAYS * 86_400)
        if own:
            pipe.execute()

    def days(self, pools: list[str], days: list[str]) -> list[PoolDay]:
        """Each pool's figures of each day, per model (those with any call), one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for pool in pools:
            for day in days:
                pipe.hgetall(keys.pool_stats_key(pool, day))
        replies = iter(pipe.execute())
        found: list[PoolDay] = []
        for pool in pools:
            for day in days:
                by_model: dict[str, PoolDay] = {}
                for name, value in dict(next(replies)).items():
                    what, _, model_id = str(name).partition("|")
                    entry = by_model.setdefault(model_id, PoolDay(pool, day, model_id))
                    n = int(value)
                    if what == "calls":
                        entry.calls += n
                    elif what == "images":
                        entry.images += n
                    elif what == "spent_micro":
                        entry.spent_usd += n / MICRO_USD
                    elif what == "throttles":
                        entry.throttles += n
                    elif what.startswith("error:"):
                        entry.errors += n
                        code = what.removeprefix("error:")
                        entry.errors_by_code[code] = entry.errors_by_code.get(code, 0) + n
                found += sorted(by_model.values(), key=lambda e: e.model_id)
        return found
