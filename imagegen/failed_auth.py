"""Reading the brake on failed authentications without adding to it.

``imagegen.store.tenants.AuthFailures`` counts each failure per client address (and per key id)
in a rolling window; this reads a client's count as it stands, so a caller can refuse a client
past the limit before even comparing what it sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from imagegen.redis import keys

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["client_failures"]


def client_failures(redis: Redis, client: str) -> tuple[int, int]:
    """The failures counted against ``client`` in its current window, and the seconds until
    that window ends (0, 0 when none)."""
    key = keys.auth_failures_key(f"client:{client}")
    pipe = redis.pipeline(transaction=False)
    pipe.get(key)
    pipe.ttl(key)
    count, ttl = cast("tuple[str | bytes | None, int]", tuple(pipe.execute()))
    if count is None:
        return 0, 0
    return int(count), max(1, int(ttl))
