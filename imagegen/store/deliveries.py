"""The webhook delivery store: reading deliveries, claiming and recording each attempt, sending
them again (the signing secrets are ``imagegen.store.signing``).

Deliveries are created by the job transitions (``add_delivery`` in
``scripts/lib/deliveries.lua``), in the same script as the status they report, so a webhook is
never lost between the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from imagegen.messages import DELIVERY_ID_PLACEHOLDER, WEBHOOK_QUEUE, delivery_message_template
from imagegen.records import JobRecord, WebhookDelivery
from imagegen.redis import codecs, keys
from imagegen.redis.scripts import Scripts

if TYPE_CHECKING:
    from redis import Redis

__all__ = ["Deliveries", "DeliveryClaim", "FailingEndpoint", "claimed_delivery"]


@dataclass(frozen=True)
class DeliveryClaim:
    """The outcome of taking a delivery: ``claimed`` with the attempt number and the fields to
    send, or why not (missing, final, busy, disabled)."""

    state: str
    attempt: int
    delivery_id: str = ""
    job_id: str = ""
    event: str = ""
    url: str = ""
    webhook_id: str = ""
    # Read with the claim: the job's record (None once it expired) and its tenant's signing
    # secrets as stored (JSON; '' when none are stored).
    record: JobRecord | None = None
    secrets: str = ""
    # The job's submission span (W3C traceparent), which the POST's span continues.
    traceparent: str | None = None
    # The slot of its endpoint's deliveries in flight its claim took for this attempt ('' none:
    # the sender takes one).
    slot: str = ""


def claimed_delivery(
    delivery_id: str,
    attempt: int,
    sent: Sequence[str],
    secrets: str,
    fields: dict[str, str],
    *,
    slot: str = "",
) -> DeliveryClaim:
    """A claimed delivery from what its claim read: ``sent`` is its job id, event, url and
    webhook-id, ``fields`` its job's record (empty once it expired), ``slot`` the endpoint slot
    its claim took."""
    job_id, event, url, webhook_id = sent
    return DeliveryClaim(
        "claimed",
        attempt,
        delivery_id=delivery_id,
        job_id=job_id,
        event=event,
        url=url,
        webhook_id=webhook_id,
        record=codecs.record_from_hash(fields) if fields else None,
        secrets=secrets,
        traceparent=codecs.job_trace(fields).traceparent if fields else None,
        slot=slot,
    )


@dataclass(frozen=True)
class FailingEndpoint:
    """A webhook endpoint that is not taking deliveries: disabled (it answered 410), or with
    deliveries whose retries ran out."""

    url: str
    disabled: bool
    exhausted: int
    last_ms: int


class Deliveries:
    """Webhook deliveries on one Redis client (``decode_responses=True``)."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._scripts = Scripts.of(redis)

    def enqueue(self, delivery_ids: Sequence[str]) -> None:
        """Queue a delivery message for each (one round trip): what the scripts do for a
        delivery nobody sends at once."""
        template = delivery_message_template()
        messages = [template.replace(DELIVERY_ID_PLACEHOLDER, d) for d in delivery_ids]
        if messages:
            self._scripts.execute(
                lambda pipe: pipe.lpush(WEBHOOK_QUEUE, *messages), transaction=False, durable=True
            )

    def ids_for_job(self, job_id: str) -> list[str]:
        fields = cast("dict[str, str]", self._redis.hgetall(keys.job_key(job_id)))
        return codecs.delivery_ids(fields)

    def failing_endpoints(self, limit: int = 200) -> list[FailingEndpoint]:
        """Disabled endpoints, and endpoints of the newest ``limit`` dead-lettered deliveries,
        most recent first."""
        disabled = cast(
            "list[tuple[str, float]]",
            self._redis.zrevrange(keys.WEBHOOKS_DISABLED_KEY, 0, limit - 1, withscores=True),
        )
        dead = cast(
            "list[tuple[str, float]]",
            self._redis.zrevrange(keys.WEBHOOKS_DLQ_KEY, 0, limit - 1, withscores=True),
        )
        found: dict[str, FailingEndpoint] = {
            url: FailingEndpoint(url, True, 0, int(at)) for url, at in disabled
        }
        deliveries = self.get_many(delivery_id for delivery_id, _ in dead)
        for delivery_id, at in dead:
            delivery = deliveries.get(delivery_id)
            if delivery is None:
                continue
            seen = found.get(delivery.url)
            found[delivery.url] = FailingEndpoint(
                delivery.url,
                seen.disabled if seen else False,
                (seen.exhausted if seen else 0) + 1,
                max(int(at), seen.last_ms if seen else 0),
            )
        return sorted(found.values(), key=lambda e: e.last_ms, reverse=True)

    def claim(self, delivery_id: str, lease_ms: int) -> DeliveryClaim:
        """Take the delivery for one attempt (a lease: never sent twice at once)."""
        key = keys.webhook_key(delivery_id)
        state, attempt, *sent = self._scripts.run("delivery_claim", [key], [delivery_id, lease_ms])
        if state != "claimed":
            return DeliveryClaim(str(state), int(attempt))
        job_id, event, url, webhook_id, secrets, *pairs = sent
        fields = dict(zip(pairs[::2], pairs[1::2], strict=True))
        return claimed_delivery(
            delivery_id, int(attempt), (job_id, event, url, webhook_id), secrets, fields
        )

    def take_endpoint_slot(self, endpoint: str, cap: int, lease_ms: int, slot: str) -> bool:
        """Hold one of ``cap`` in-flight slots of an endpoint until ``free_endpoint_slot`` or
        the lease ends."""
        taken = self._scripts.run(
            "slot_take", [keys.endpoint_inflight_key(endpoint)], [cap, lease_ms, slot]
        )
        return bool(taken)

    def free_endpoint_slot(self, endpoint: str, slot: str) -> None:
        self._redis.zrem(keys.endpoint_inflight_key(endpoint), slot)

    def defer(self, delivery_id: str, delay_s: float) -> bool:
        """Give a claimed delivery back, due after ``delay_s``, without counting the attempt."""
        deferred = self._scripts.run(
            "delivery_defer", [keys.webhook_key(delivery_id)], [delivery_id, round(delay_s * 1000)]
        )
        return bool(deferred)

    def record(
        self,
        delivery_id: str,
        outcome: str,
        *,
        attempt: int,
        status: int | None,
        latency_ms: int | None,
        error: str | None,
        delay_s: float | None,
        slot: tuple[str, str] | None = None,
    ) -> None:
        """Log one attempt; ``outcome`` (delivered, retry, exhausted, refused, disabled) says
        what follows: a retry is due after ``delay_s``. ``slot`` (endpoint, slot id) is the
        endpoint slot the attempt held, given back in the same step."""
        line = codecs.delivery_attempt_line(attempt, status, latency_ms, error, delay_s)
        inflight = keys.endpoint_inflight_key(slot[0]) if slot else keys.UNUSED_KEY
        self._scripts.run(
            "delivery_record",
            [keys.webhook_key(delivery_id), inflight],
            [delivery_id, outcome, line, round((delay_s or 0) * 1000), slot[1] if slot else ""],
        )

    def for_job(self, job_id: str) -> list[WebhookDelivery]:
        return list(self.get_many(self.ids_for_job(job_id)).values())

    def get_many(self, delivery_ids: Iterable[str]) -> dict[str, WebhookDelivery]:
        """The deliveries that still exist, by id."""
        ids = list(delivery_ids)
        pipe = self._redis.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hgetall(keys.webhook_key(delivery_id))
        return {
            delivery_id: codecs.delivery_from_hash(fields)
            for delivery_id, fields in zip(ids, pipe.execute(), strict=True)
            if fields
        }

    def redeliver(self, delivery_ids: Iterable[str]) -> list[str]:
        """Send these deliveries again (whatever their state); returns those that exist."""
        return [
            delivery_id
            for delivery_id in delivery_ids
            if self._scripts.run(
                "delivery_redeliver", [keys.webhook_key(delivery_id)], [delivery_id]
            )
        ]

    def redeliver_job(self, job_id: str) -> list[str]:
        return self.redeliver(self.ids_for_job(job_id))

    def recover(self, since_ms: int) -> list[str]:
        """Send again every delivery whose retries ran out since ``since_ms``."""
        ids = self._redis.zrangebyscore(keys.WEBHOOKS_DLQ_KEY, since_ms, "+inf")
        return self.redeliver(str(delivery_id) for delivery_id in ids)
