"""The quarantine: messages from our queues that were not well-formed tasks of ours, kept for an
operator with the reason they were set aside (``imagegen quarantine list|drop``)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imagegen.redis import keys

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["MAX_KEPT", "MAX_KEPT_BYTES", "Quarantine", "QuarantinedMessage"]

# The newest this many are kept; each message at most this long (the rest is cut).
MAX_KEPT = 10_000
MAX_KEPT_BYTES = 64 * 1024


@dataclass(frozen=True)
class QuarantinedMessage:
    entry_id: str
    at_ms: int
    queue: str
    reason: str
    detail: str
    size_bytes: int
    message: str


class Quarantine:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def add(self, queue: str, reason: str, detail: str, raw: str | bytes) -> str:
        """Set a message aside; counted by reason in the fleet's stats. Returns its entry id."""
        text = raw if isinstance(raw, str) else raw.decode("utf-8", errors="replace")
        entry_id = uuid.uuid4().hex
        entry = {
            "entry_id": entry_id,
            "at_ms": int(time.time() * 1000),
            "queue": queue,
            "reason": reason,
            "detail": detail,
            "size_bytes": len(raw),
            "message": text[:MAX_KEPT_BYTES],
        }
        pipe = self._redis.pipeline(transaction=True)
        pipe.lpush(keys.QUARANTINE_KEY, json.dumps(entry))
        pipe.ltrim(keys.QUARANTINE_KEY, 0, MAX_KEPT - 1)
        pipe.hincrby(keys.STATS_KEY, f"quarantined|{reason}", 1)
        pipe.execute()
        return entry_id

    def list(self, limit: int = 100) -> list[QuarantinedMessage]:
        """The newest first."""
        raw = self._redis.lrange(keys.QUARANTINE_KEY, 0, limit - 1)
        return [QuarantinedMessage(**json.loads(item)) for item in raw]

    def drop(self, entry_ids: Iterable[str] | None = None) -> int:
        """Forget these entries (all of them when None); returns how many went."""
        if entry_ids is None:
            count = int(self._redis.llen(keys.QUARANTINE_KEY))
            self._redis.delete(keys.QUARANTINE_KEY)
            return count
        wanted = set(entry_ids)
        dropped = 0
        for item in self._redis.lrange(keys.QUARANTINE_KEY, 0, -1):
            if json.loads(item)["entry_id"] in wanted:
                dropped += int(self._redis.lrem(keys.QUARANTINE_KEY, 1, str(item)))
        return dropped

    def count(self) -> int:
        return int(self._redis.llen(keys.QUARANTINE_KEY))
