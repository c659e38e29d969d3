"""One Bedrock quota shared by every worker: a token bucket in Redis with an adaptive rate, and
an optional cap on calls in flight.

Why not Celery's ``rate_limit``: it is per worker process, so N processes make N times the rate.
Why not ``throttled-py``: its buckets take the rate from each caller's static configuration and
its token bucket reads the caller's clock in whole seconds; a quota shared by a fleet needs the
effective rate itself to live in Redis (so a ThrottlingException seen by one worker slows all of
them) and a clock every worker agrees on. So the bucket is one Lua script on the server's clock.

Waiting never spins on Redis: ``reserve`` takes a token now even when the bucket is empty (it
goes negative) and says how long to sleep until that token is due. Each call to Bedrock costs
one round trip to the limiter, however many threads are waiting. A wait longer than
``limiter_max_wait_s`` reserves nothing: the job goes back on its queue with a countdown.

Adaptive rate (AIMD): a ThrottlingException multiplies the shared rate by
``rate_decrease_factor`` (once per ``rate_decrease_cooldown_s``, since calls in flight are
throttled together) and empties the bucket; each successful call adds
``rate_increase_fraction`` of the quota back, never above the quota nor below its floor.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import redis

from imagegen.settings import Settings
from imagegen.store.quota import QuotaStatus, QuotaStore, Reservation

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Limiter", "LimiterWaitTooLongError", "Reservation"]

log = logging.getLogger("imagegen.limiter")

_SLOT_POLL_FIRST_S = 0.02
_SLOT_POLL_MAX_S = 0.5


class LimiterWaitTooLongError(Exception):
    """The quota has no room soon enough; come back after ``delay_s``."""

    def __init__(self, model_id: str, delay_s: float) -> None:
        super().__init__(f"{model_id}: no quota for {delay_s:.1f} s")
        self.delay_s = delay_s


class Limiter:
    """The fleet-wide limiter policy for every model, over the shared quota store."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._settings = settings
        self.quota = QuotaStore(redis, settings)

    def enabled(self, model_id: str) -> bool:
        return self._settings.limit_for(model_id).rpm > 0

    def reserve(self, model_id: str, max_wait_s: float, now_ms: float | None = None) -> Reservation:
        """Take one token, due in ``wait_s``; ``now_ms`` replaces the server clock in tests."""
        return self.quota.reserve(model_id, max_wait_s, now_ms)

    def report(self, model_id: str, *, throttled: bool, now_ms: float | None = None) -> float:
        """Tell the shared rate how a call went; returns the new effective rate (per minute)."""
        return self.quota.report(model_id, throttled=throttled, now_ms=now_ms)

    def wait_for_token(self, model_id: str) -> float:
        """Block until a token is due (sleeping, not polling); returns the seconds waited.

        Raises ``LimiterWaitTooLongError`` when the wait would exceed ``limiter_max_wait_s``."""
        if not self.enabled(model_id):
            return 0.0
        reservation = self.reserve(model_id, self._settings.limiter_max_wait_s)
        if not reservation.granted:
            raise LimiterWaitTooLongError(model_id, reservation.wait_s)
        if reservation.wait_s > 0:
            time.sleep(reservation.wait_s)
        return reservation.wait_s

    @contextmanager
    def concurrency_slot(self, model_id: str, lease_s: float) -> Iterator[None]:
        """Hold one of the model's ``max_concurrency`` slots (no-op without a cap). The lease
        ends by itself after ``lease_s``, so a worker that dies never keeps a slot."""
        cap = self._settings.limit_for(model_id).max_concurrency
        if cap <= 0:
            yield
            return
        slot = uuid.uuid4().hex
        deadline = time.monotonic() + self._settings.limiter_max_wait_s
        pause_s = _SLOT_POLL_FIRST_S
        while not self.quota.take_slot(model_id, cap, round(lease_s * 1000), slot):
            if time.monotonic() + pause_s > deadline:
                raise LimiterWaitTooLongError(model_id, self._settings.limiter_max_wait_s)
            time.sleep(pause_s * random.uniform(0.5, 1.5))
            pause_s = min(pause_s * 2, _SLOT_POLL_MAX_S)
        try:
            yield
        finally:
            try:
                self.quota.free_slot(model_id, slot)
            except redis.RedisError:
                # The slot's lease ends by itself; a call that already ran must not fail here.
                log.warning("concurrency slot not freed; its lease will end it", exc_info=True)

    def status(self, model_id: str) -> QuotaStatus:
        return self.quota.status(model_id)
