"""The worker's side of one Bedrock quota shared by every worker: it tells the shared token
bucket how each call went, so the rate the dispatcher releases jobs at adapts (AIMD).

The token itself is taken by the dispatcher when it releases a job (``imagegen.store.dispatch``),
so a worker never waits for quota. Why the bucket lives in Redis rather than in Celery's
``rate_limit`` (per worker process, so N processes make N times the rate) or ``throttled-py``
(the rate from each caller's static configuration, the caller's clock in whole seconds): a quota
shared by a fleet needs the effective rate itself to live in Redis, so a ThrottlingException
seen by one worker slows all of them, on a clock every process agrees on.

Adaptive rate (AIMD): a ThrottlingException multiplies the shared rate by
``rate_decrease_factor`` (once per ``rate_decrease_cooldown_s``, since calls in flight are
throttled together) and empties the bucket; each successful call adds
``rate_increase_fraction`` of the quota back, never above the quota nor below its floor.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from imagegen.settings import Settings
from imagegen.store.quota import QuotaStatus, QuotaStore

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Limiter"]


class Limiter:
    """The fleet-wide limiter policy for every model, over the shared quota store."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._settings = settings
        self.quota = QuotaStore(redis, settings)

    def enabled(self, model_id: str) -> bool:
        return self._settings.limit_for(model_id).rpm > 0

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
        """Tell the shared rate how a call went (the pool's own, for a configured pool; a
        ``denied`` code opens its circuit); returns the new effective rate (per minute)."""
        return self.quota.report(
            model_id, throttled=throttled, pool=pool, denied=denied, failed=failed, now_ms=now_ms
        )

    def report_in(self, pipe: Any, model_id: str, *, pool: str | None = None) -> None:
        """Queue the report of a call that was answered on ``pipe`` (sent with its commands)."""
        self.quota.report_in(pipe, model_id, pool=pool)

    def status(self, model_id: str) -> QuotaStatus:
        return self.quota.status(model_id)
