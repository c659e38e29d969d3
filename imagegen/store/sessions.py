"""Console sessions: who is logged in to the web console, kept in Redis (so every API process
knows them), the token stored only hashed.

A tenant logs in with an API key: the session remembers the key's id, and ends as soon as that
key is revoked. An operator logs in with the admin token. The token itself lives only in the
browser's cookie (HttpOnly), never in a URL.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, cast

from imagegen.redis import keys

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["ConsoleSession", "ConsoleSessions", "Role"]

Role = Literal["tenant", "operator"]
_TOKEN_BYTES = 32


@dataclass(frozen=True)
class ConsoleSession:
    role: Role
    tenant: str | None
    key_id: str | None
    created_ms: int


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConsoleSessions:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    def create(self, role: Role, *, tenant: str | None = None, key_id: str | None = None) -> str:
        """A new session; returns its token (for the cookie)."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        key = keys.console_session_key(_digest(token))
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            key,
            mapping={
                "role": role,
                "tenant": tenant or "",
                "key_id": key_id or "",
                "created_ms": int(time.time() * 1000),
            },
        )
        pipe.expire(key, self._ttl_s)
        pipe.execute()
        return token

    def get(self, token: str) -> ConsoleSession | None:
        """The live session of ``token``: None when unknown, expired, or its API key revoked."""
        if not token:
            return None
        fields = cast(
            "dict[str, str]", self._redis.hgetall(keys.console_session_key(_digest(token)))
        )
        if not fields:
            return None
        key_id = fields.get("key_id") or None
        if key_id is not None and not self._redis.hexists(keys.APIKEYS_KEY, key_id):
            self.end(token)
            return None
        role = cast("Role", fields["role"])
        return ConsoleSession(role, fields.get("tenant") or None, key_id, int(fields["created_ms"]))

    def end(self, token: str) -> None:
        self._redis.delete(keys.console_session_key(_digest(token)))
