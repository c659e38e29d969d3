"""The plain intake's list, read by any number of workers at once, without a lock, and without
losing a message when a reader dies or stalls.

A reader's pass:

1. it puts back the messages of readers whose lease lapsed (they died, or stalled past it): each
   lapsed reader's list goes back onto the tail of ``imagegen:intake``, where the oldest messages
   are, so they are read next;
2. it registers a token of its own in ``imagegen:intake:readers``, scored by when its lease ends
   (the Redis server's clock), then moves up to N of the oldest messages, one ``LMOVE`` each, into
   its list ``imagegen:intake:reader:{token}``;
3. it handles them one by one, renewing its lease as it goes;
4. it deletes its list and its token.

Each ``LMOVE`` is atomic, so a message is always in exactly one list: the intake, or the list of
the one reader that took it. The token is registered before the first move (same connection,
sent first), so no list exists without a lease that ends. Two readers putting back the same
lapsed list share its messages, never copy them. A reader that stalled and lost its lease finds
out at its next renewal and stops; what it handled meanwhile may be handled again by another
reader, which is why handling a message must be idempotent.

Messages are read as bytes, never decoded by the client: a message that is not UTF-8 is the
handler's to set aside, not an error that would leave the batch stuck.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from redis.client import NEVER_DECODE

from imagegen.redis import keys

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline

__all__ = ["INTAKE_LEASE_S", "IntakeQueue", "TakenMessages"]

# How long a reader may go without renewing before its messages go back onto the intake.
INTAKE_LEASE_S = 30.0
# The lease is renewed once a third of it has passed, so one slow message does not lose it.
_RENEW_FRACTION = 3


@dataclass
class TakenMessages:
    """What one reader took: its token and the messages, oldest first."""

    token: str
    messages: list[bytes]
    renewed_at: float = field(default_factory=time.monotonic)


class IntakeQueue:
    """The plain intake on one Redis client (any ``decode_responses``: messages stay bytes)."""

    def __init__(self, redis: Redis, lease_s: float = INTAKE_LEASE_S) -> None:
        self._redis = redis
        self._lease_ms = round(lease_s * 1000)
        self._renew_every_s = lease_s / _RENEW_FRACTION

    def take(self, most: int) -> TakenMessages | None:
        """Up to ``most`` of the oldest messages, moved into a list of this reader's (after
        putting back the messages of lapsed readers); None when the intake is empty."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.time()
        pipe.llen(keys.INTAKE_KEY)
        pipe.zrange(keys.INTAKE_READERS_KEY, 0, 0, withscores=True)
        server_time, waiting, first_lease = pipe.execute()
        now_ms = _ms(server_time)
        if first_lease and first_lease[0][1] < now_ms:
            self.put_back_lapsed(now_ms)
            waiting = self._redis.llen(keys.INTAKE_KEY)
        if not waiting:
            return None
        token = uuid.uuid4().hex
        mine = keys.intake_reader_key(token)
        pipe = self._redis.pipeline(transaction=False)
        # The lease first: from the first move on, a reader that dies has its messages put back.
        pipe.zadd(keys.INTAKE_READERS_KEY, {token: now_ms + self._lease_ms})
        for _ in range(min(int(waiting), most)):
            _move(pipe, keys.INTAKE_KEY, mine, "RIGHT", "LEFT")
        moved = [item for item in pipe.execute()[1:] if item is not None]
        taken = TakenMessages(token, moved)
        if not moved:  # other readers took them first
            self.finish(taken)
            return None
        return taken

    def keep(self, taken: TakenMessages) -> bool:
        """Renew the lease when a third of it has passed; False when it had lapsed and its
        messages went back onto the intake (the reader must then stop)."""
        if time.monotonic() - taken.renewed_at < self._renew_every_s:
            return True
        now_ms = _ms(self._redis.time())
        pipe = self._redis.pipeline(transaction=True)
        # XX: a lease that was put back is never brought back.
        pipe.zadd(keys.INTAKE_READERS_KEY, {taken.token: now_ms + self._lease_ms}, xx=True)
        pipe.zscore(keys.INTAKE_READERS_KEY, taken.token)
        _, score = pipe.execute()
        taken.renewed_at = time.monotonic()
        return score is not None

    def finish(self, taken: TakenMessages) -> None:
        """Every message taken is handled: forget them and the lease."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(keys.intake_reader_key(taken.token))
        pipe.zrem(keys.INTAKE_READERS_KEY, taken.token)
        pipe.execute()

    def put_back_lapsed(self, now_ms: int | None = None) -> int:
        """Put the messages of every reader whose lease ended before ``now_ms`` (default: the
        server's now) back onto the tail of the intake, in their order; returns how many."""
        if now_ms is None:
            now_ms = _ms(self._redis.time())
        lapsed = self._redis.zrangebyscore(keys.INTAKE_READERS_KEY, "-inf", now_ms - 1)
        put_back = 0
        for token in map(_text, cast("list[str | bytes]", lapsed)):
            theirs = keys.intake_reader_key(token)
            pipe = self._redis.pipeline(transaction=False)
            # Their list holds the oldest message at its right end, like the intake: taking from
            # its left and adding at the intake's right keeps the order, oldest rightmost.
            for _ in range(int(self._redis.llen(theirs))):
                _move(pipe, theirs, keys.INTAKE_KEY, "LEFT", "RIGHT")
            # Last, so a reader that dies halfway leaves the rest to the next one.
            pipe.zrem(keys.INTAKE_READERS_KEY, token)
            put_back += sum(1 for item in pipe.execute()[:-1] if item is not None)
        return put_back


def _move(pipe: Pipeline, source: str, target: str, from_end: str, to_end: str) -> None:
    """``LMOVE``, its reply (the message moved) left as bytes whatever the client decodes."""
    options: dict[str, Any] = {NEVER_DECODE: []}
    pipe.execute_command("LMOVE", source, target, from_end, to_end, **options)  # type: ignore[no-untyped-call]


def _ms(server_time: Any) -> int:
    seconds, microseconds = server_time
    return int(seconds) * 1000 + int(microseconds) // 1000


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
