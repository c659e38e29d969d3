"""A short history of each model's quota and backlog, kept in Redis so the operator's chart opens
full instead of empty: effective and configured rate, throttles and calls in the last minute,
jobs waiting, and the wait p99 of the jobs started lately.

One sample per model every ``SAMPLE_EVERY_S``, fleet-wide: whoever records first in an interval
takes the interval's slot (``SET NX``), so many sweepers record it once. A model's list keeps its
newest ``SAMPLES_KEPT`` samples (half an hour) and expires when nobody records for as long.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from imagegen.redis import keys

if TYPE_CHECKING:
    from redis import Redis

    from imagegen.store.dispatch import ModelSnapshot
    from imagegen.store.quota import QuotaStatus

__all__ = ["SAMPLES_KEPT", "SAMPLE_EVERY_S", "QuotaHistory", "QuotaSample"]

SAMPLE_EVERY_S = 10
SAMPLES_KEPT = 180


@dataclass(frozen=True)
class QuotaSample:
    """One model at one moment."""

    at_ms: int
    effective_rpm: float
    configured_rpm: float
    calls_last_minute: int
    throttles_last_minute: int
    waiting: int
    wait_p99_s: float | None


class QuotaHistory:
    """The samples on a Redis client with ``decode_responses=True``."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def take_slot(self, now_ms: int | None = None) -> bool:
        """Whether this caller records the current interval (the first to ask does)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        slot = now_ms // (SAMPLE_EVERY_S * 1000)
        return bool(
            self._redis.set(keys.quota_history_slot_key(), str(slot), nx=True, px=_slot_ms(now_ms))
        )

    def record(
        self,
        statuses: Iterable[QuotaStatus],
        snapshots: Sequence[ModelSnapshot],
        now_ms: int | None = None,
    ) -> list[QuotaSample]:
        """Append one sample per model (its quota status with its dispatcher snapshot)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        by_model = {snapshot.model_id: snapshot for snapshot in snapshots}
        samples = []
        pipe = self._redis.pipeline(transaction=False)
        for status in statuses:
            snapshot = by_model.get(status.model_id)
            sample = QuotaSample(
                at_ms=now_ms,
                effective_rpm=status.effective_rpm,
                configured_rpm=status.configured_rpm,
                calls_last_minute=status.calls_last_minute,
                throttles_last_minute=status.throttles_last_minute,
                waiting=snapshot.waiting if snapshot else 0,
                wait_p99_s=snapshot.waits.p99_s if snapshot and snapshot.waits else None,
            )
            key = keys.quota_history_key(status.model_id)
            pipe.rpush(key, json.dumps(asdict(sample), separators=(",", ":")))
            pipe.ltrim(key, -SAMPLES_KEPT, -1)
            pipe.expire(key, SAMPLES_KEPT * SAMPLE_EVERY_S)
            samples.append(sample)
        pipe.execute()
        return samples

    def read(self, model_ids: Sequence[str]) -> dict[str, list[QuotaSample]]:
        """Each model's samples, oldest first (one round trip)."""
        pipe = self._redis.pipeline(transaction=False)
        for model_id in model_ids:
            pipe.lrange(keys.quota_history_key(model_id), 0, -1)
        return {
            model_id: sorted(
                (QuotaSample(**json.loads(raw)) for raw in found), key=lambda s: s.at_ms
            )
            for model_id, found in zip(model_ids, pipe.execute(), strict=True)
        }


def _slot_ms(now_ms: int) -> int:
    """What is left of the current interval (at least 1 ms)."""
    every_ms = SAMPLE_EVERY_S * 1000
    return max(1, every_ms - now_ms % every_ms)
