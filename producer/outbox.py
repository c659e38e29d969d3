"""The webhook outbox as an operator sees it: deliveries, their signing secrets, redeliver and
recover. Deliveries are created by the job-transition scripts (``producer.lua``)."""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis as redis_lib

from producer import keys
from producer.jobs import ms_to_datetime
from producer.webhooks import DeliveryAttempt, WebhookDelivery

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Deliveries", "SigningSecrets", "delivery_from_hash"]

_SECRET_BYTES = 24

# KEYS: delivery hash. ARGV: delivery id. Back to pending and due now; out of the dead-letter
# set; its endpoint enabled again. Returns 1, or 0 when the delivery no longer exists.
_REDELIVER_LUA = f"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local url = redis.call('HGET', KEYS[1], 'url')
redis.call('HSET', KEYS[1], 'state', 'pending', 'next_ms', now, 'lease_until_ms', 0)
redis.call('ZADD', '{keys.WEBHOOKS_DUE_KEY}', now, ARGV[1])
redis.call('ZREM', '{keys.WEBHOOKS_DLQ_KEY}', ARGV[1])
redis.call('SREM', '{keys.WEBHOOKS_DISABLED_KEY}', url)
return 1
"""


def delivery_from_hash(fields: dict[str, str]) -> WebhookDelivery:
    log = [
        DeliveryAttempt.model_validate_json(line)
        for line in (fields.get("log") or "").splitlines()
        if line
    ]
    next_ms = fields.get("next_ms")
    delivered_ms = fields.get("delivered_ms")
    state = fields.get("state", "pending")
    return WebhookDelivery(
        delivery_id=fields["delivery_id"],
        webhook_id=fields["webhook_id"],
        job_id=fields["job_id"],
        event=fields["event"],
        url=fields["url"],
        state=state,  # type: ignore[arg-type]
        attempts=int(fields.get("attempts") or 0),
        next_attempt_at=ms_to_datetime(int(float(next_ms)))
        if next_ms and state == "pending"
        else None,
        delivered_at=ms_to_datetime(int(float(delivered_ms))) if delivered_ms else None,
        log=log,
    )


class Deliveries:
    """Reading deliveries, and sending them again."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._redeliver = redis.register_script(_REDELIVER_LUA)

    def ids_for_job(self, job_id: str) -> list[str]:
        listed = self._redis.hget(keys.job_key(job_id), "webhook_deliveries") or ""
        return [item for item in str(listed).split(",") if item]

    def for_job(self, job_id: str) -> list[WebhookDelivery]:
        return list(self.get_many(self.ids_for_job(job_id)).values())

    def get_many(self, delivery_ids: Iterable[str]) -> dict[str, WebhookDelivery]:
        """The deliveries that still exist, by id."""
        ids = list(delivery_ids)
        pipe = self._redis.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hgetall(keys.webhook_key(delivery_id))
        return {
            delivery_id: delivery_from_hash(fields)
            for delivery_id, fields in zip(ids, pipe.execute(), strict=True)
            if fields
        }

    def redeliver(self, delivery_ids: Iterable[str]) -> list[str]:
        """Send these deliveries again (whatever their state); returns those that exist."""
        return [
            delivery_id
            for delivery_id in delivery_ids
            if self._redeliver(keys=[keys.webhook_key(delivery_id)], args=[delivery_id])
        ]

    def redeliver_job(self, job_id: str) -> list[str]:
        return self.redeliver(self.ids_for_job(job_id))

    def recover(self, since_ms: int) -> list[str]:
        """Send again every delivery whose retries ran out since ``since_ms``."""
        ids = self._redis.zrangebyscore(keys.WEBHOOKS_DLQ_KEY, since_ms, "+inf")
        return self.redeliver(str(delivery_id) for delivery_id in ids)


class SigningSecrets:
    """The signing secrets (``whsec_`` + base64), newest first, kept in Redis.

    After a rotation the previous secret keeps signing, beside the new one, for
    ``overlap_s`` seconds, so receivers can switch without losing a delivery.
    """

    def __init__(self, redis: Redis, overlap_s: int) -> None:
        self._redis = redis
        self._overlap_s = overlap_s

    def _load(self) -> list[dict[str, Any]]:
        raw = self._redis.get(keys.WEBHOOK_SECRETS_KEY)
        return json.loads(raw) if raw else []

    def active(self) -> list[str]:
        """The secrets to sign with now, newest first (one is created on first use)."""
        entries = self._load()
        if not entries:
            self._redis.set(keys.WEBHOOK_SECRETS_KEY, json.dumps([_new_entry()]), nx=True)
            entries = self._load()
        now_ms = time.time() * 1000
        return [e["secret"] for e in entries if e["retires_ms"] is None or e["retires_ms"] > now_ms]

    def current(self) -> str:
        return self.active()[0]

    def rotate(self) -> str:
        """Make a new secret the primary one; the old ones retire after the overlap."""
        self.active()  # make sure there is something to rotate
        with self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(keys.WEBHOOK_SECRETS_KEY)  # type: ignore[no-untyped-call]
                    raw = pipe.get(keys.WEBHOOK_SECRETS_KEY)
                    entries = json.loads(raw) if raw else []
                    retire_at = time.time() * 1000 + self._overlap_s * 1000
                    for entry in entries:
                        if entry["retires_ms"] is None:
                            entry["retires_ms"] = retire_at
                    now_ms = time.time() * 1000
                    kept = [e for e in entries if e["retires_ms"] > now_ms]
                    fresh = _new_entry()
                    pipe.multi()
                    pipe.set(keys.WEBHOOK_SECRETS_KEY, json.dumps([fresh, *kept]))
                    pipe.execute()
                    return str(fresh["secret"])
                except redis_lib.WatchError:
                    continue


def _new_entry() -> dict[str, Any]:
    secret = "whsec_" + base64.b64encode(os.urandom(_SECRET_BYTES)).decode()
    return {"secret": secret, "created_ms": int(time.time() * 1000), "retires_ms": None}
