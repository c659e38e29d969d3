"""The image cache: a job with a fixed, non-zero seed that asks for exactly what an earlier job
of the same scope bought (same model, same normalised request) gets that image, without a
Bedrock call, a token or a reservation; an identical job submitted while the first still runs
waits for it instead of calling too. The lookup is part of the submit script
(``job_submit.lua``); filling and serving followers is part of the final transition
(the final place in ``scripts/lib/lifecycle.lua``).

Each tenant has its own scope; tenants that opt in share one (``+shared``), so an image is
shared only between tenants that both opted in. Entries expire after ``cache_ttl_s``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from imagegen.redis import keys

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["ImageCache"]

_SCAN_COUNT = 1000


class ImageCache:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def set_shared(self, tenant: str, shared: bool) -> None:
        """Let the tenant's jobs use (and fill) the scope shared by every opted-in tenant."""
        if shared:
            self._redis.hset(keys.tenant_key(tenant), "cache_shared", "1")
        else:
            self._redis.hdel(keys.tenant_key(tenant), "cache_shared")

    def shared(self, tenant: str) -> bool:
        return self._redis.hget(keys.tenant_key(tenant), "cache_shared") == "1"

    def purge(self, scope: str | None = None) -> int:
        """Forget cached images: one tenant's (``-``: jobs without a tenant; ``+shared``: the
        shared scope), or every scope's (None). Jobs in flight are not touched. Returns how
        many entries went."""
        pattern = f"{keys.CACHE_PREFIX}{scope if scope else '*'}:*"
        purged = 0
        batch: list[str] = []
        for key in self._redis.scan_iter(match=pattern, count=_SCAN_COUNT):
            name = str(key)
            if name.endswith((":leader", ":followers")):
                continue
            batch.append(name)
            if len(batch) >= _SCAN_COUNT:
                purged += int(self._redis.delete(*batch))
                batch = []
        if batch:
            purged += int(self._redis.delete(*batch))
        return purged
