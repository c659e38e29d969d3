"""The tenant store: API keys (one tenant each, stored hashed, shown once when created), each
tenant's settings, and the failed-authentication counts behind the API's brake.

A key reads ``igk_<key id>_<secret>``; the key id (also in ``imagegen keys list``) names it for
revoking, and only the key's SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from imagegen.errors import ImagegenError
from imagegen.redis import keys
from imagegen.store.signing import new_secret_entry

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["TENANT_PATTERN", "ApiKey", "ApiKeys", "AuthFailures", "Tenants", "is_tenant_name"]

KEY_PREFIX = "igk_"
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_TENANT_RE = re.compile(TENANT_PATTERN)
_KEY_ID_BYTES = 6
_SECRET_BYTES = 24


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    created_ms: int


def is_tenant_name(tenant: str) -> bool:
    """True when ``tenant`` can name a tenant (it becomes part of Redis keys and job ids)."""
    return bool(_TENANT_RE.match(tenant))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def create(self, tenant: str) -> tuple[ApiKey, str]:
        """A new key for ``tenant``: its record, and the key itself (shown only now). The
        tenant's webhook signing secret is made with its first key."""
        if not is_tenant_name(tenant):
            msg = f"tenant {tenant!r} must match {TENANT_PATTERN}"
            raise ImagegenError(msg)
        key_id = secrets.token_hex(_KEY_ID_BYTES)
        key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        record = ApiKey(key_id=key_id, tenant=tenant, created_ms=int(time.time() * 1000))
        digest = _digest(key)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            keys.apikey_key(digest),
            mapping={
                "key_id": key_id,
                "tenant": tenant,
                "created_ms": record.created_ms,
            },
        )
        pipe.hset(keys.APIKEYS_KEY, key_id, digest)
        # A tenant's first key makes its signing secret (kept if it has one).
        pipe.set(keys.webhook_secrets_key(tenant), json.dumps([new_secret_entry()]), nx=True)
        pipe.execute()
        return record, key

    def authenticate(self, key: str) -> ApiKey | None:
        """The key's record, or None for an unknown or revoked key."""
        if not key.startswith(KEY_PREFIX):
            return None
        fields = cast("dict[str, str]", self._redis.hgetall(keys.apikey_key(_digest(key))))
        if not fields:
            return None
        return ApiKey(fields["key_id"], fields["tenant"], int(fields["created_ms"]))

    def revoke(self, key_id: str) -> bool:
        digest = self._redis.hget(keys.APIKEYS_KEY, key_id)
        if not digest:
            return False
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(keys.apikey_key(str(digest)))
        pipe.hdel(keys.APIKEYS_KEY, key_id)
        pipe.execute()
        return True

    def list(self) -> list[ApiKey]:
        digests = cast("dict[str, str]", self._redis.hgetall(keys.APIKEYS_KEY))
        pipe = self._redis.pipeline(transaction=False)
        for digest in digests.values():
            pipe.hgetall(keys.apikey_key(digest))
        found = [cast("dict[str, str]", f) for f in pipe.execute() if f]
        return sorted(
            (ApiKey(f["key_id"], f["tenant"], int(f["created_ms"])) for f in found),
            key=lambda k: k.created_ms,
        )


class Tenants:
    """Per-tenant settings: the default webhook endpoint."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def webhook_url(self, tenant: str) -> str | None:
        url = self._redis.hget(keys.tenant_key(tenant), "webhook_url")
        return str(url) if url else None

    def pools(self, tenant: str) -> tuple[str, ...]:
        """The pools the tenant's jobs may go to (empty: any)."""
        found = self._redis.hget(keys.tenant_key(tenant), "pools")
        return tuple(p for p in str(found or "").split(",") if p)

    def set_webhook_url(self, tenant: str, url: str | None) -> None:
        """Set (or with None, remove) the tenant's default webhook endpoint."""
        if url is None:
            self._redis.hdel(keys.tenant_key(tenant), "webhook_url")
        else:
            self._redis.hset(keys.tenant_key(tenant), "webhook_url", url)


class AuthFailures:
    """Failed authentications in a rolling window, per client address and per key id."""

    def __init__(self, redis: Redis, window_s: int) -> None:
        self._redis = redis
        self._window_s = window_s

    def add(self, client: str, key_id: str) -> tuple[int, int]:
        """Count one more failure, atomically; returns the higher of the two counts (client,
        key id) and the seconds until that window ends."""
        by_client = keys.auth_failures_key(f"client:{client}")
        by_key = keys.auth_failures_key(f"key:{key_id}")
        pipe = self._redis.pipeline(transaction=True)
        for key in (by_client, by_key):
            pipe.incr(key)
            pipe.expire(key, self._window_s, nx=True)
        pipe.ttl(by_client)
        client_count, _, key_count, _, ttl = pipe.execute()
        return max(int(client_count), int(key_count)), max(1, int(ttl))
