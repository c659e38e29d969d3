"""Webhooks as a receiver sees them: event types, the delivery record, and ``verify``.

Deliveries follow Standard Webhooks v1: headers ``webhook-id`` (the same on every retry of one
event), ``webhook-timestamp`` (Unix seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256
of "{id}.{timestamp}.{body}">``, several separated by spaces while a secret is being rotated).
The body is ``{"type", "timestamp", "data": {...}}`` and never contains the image.

A receiver::

    from producer.webhooks import verify, WebhookVerificationError

    try:
        event = verify(request.headers, request.body, secret="whsec_...")
    except WebhookVerificationError as e:
        return 400, str(e)
    if already_seen(request.headers["webhook-id"]):  # retries repeat the id
        return 200
"""

from __future__ import annotations

import binascii
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from standardwebhooks.webhooks import Webhook

from producer.errors import ImagegenError

__all__ = [
    "DEFAULT_EVENTS",
    "EVENT_TYPES",
    "DeliveryAttempt",
    "EventType",
    "WebhookDelivery",
    "WebhookVerificationError",
    "verify",
]

EventType = Literal[
    "job.started", "job.succeeded", "job.failed", "job.filtered", "job.canceled", "job.expired"
]
EVENT_TYPES: tuple[str, ...] = (
    "job.started",
    "job.succeeded",
    "job.failed",
    "job.filtered",
    "job.canceled",
    "job.expired",
)
DEFAULT_EVENTS: tuple[str, ...] = (
    "job.succeeded",
    "job.failed",
    "job.filtered",
    "job.canceled",
    "job.expired",
)
DEFAULT_TOLERANCE_S = 300


class WebhookVerificationError(ImagegenError):
    """A webhook did not verify: missing header, stale timestamp or no matching signature."""


class DeliveryAttempt(BaseModel):
    """One try at delivering a webhook."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    at: datetime
    status: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    retry_in_s: float | None = None


class WebhookDelivery(BaseModel):
    """One event of one job, on its way to one endpoint."""

    model_config = ConfigDict(frozen=True)

    delivery_id: str
    webhook_id: str
    job_id: str
    event: str
    url: str
    state: Literal["pending", "sending", "delivered", "exhausted", "disabled", "refused"]
    attempts: int = 0
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    log: list[DeliveryAttempt] = Field(default_factory=list)


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | Iterable[str],
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery's signature and age; return the parsed event.

    ``secret`` may be several secrets (during a rotation). Raises ``WebhookVerificationError``
    saying which check failed.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        if not lowered.get(name):
            msg = f"missing {name} header"
            raise WebhookVerificationError(msg)
    try:
        sent_at = int(lowered["webhook-timestamp"])
    except ValueError:
        msg = "webhook-timestamp is not a Unix time in seconds"
        raise WebhookVerificationError(msg) from None
    age_s = (time.time() if now is None else now) - sent_at
    if abs(age_s) > tolerance_s:
        msg = (
            f"webhook-timestamp is {abs(age_s):.0f} s in the "
            f"{'past' if age_s > 0 else 'future'} (tolerance {tolerance_s} s)"
        )
        raise WebhookVerificationError(msg)
    text = body.decode() if isinstance(body, bytes) else body
    secrets = [secret] if isinstance(secret, str) else list(secret)
    signed_at = datetime.fromtimestamp(sent_at, tz=UTC)
    offered = lowered["webhook-signature"].split(" ")
    for candidate in secrets:
        try:
            expected = Webhook(candidate).sign(lowered["webhook-id"], signed_at, text)
        except (binascii.Error, ValueError) as e:
            msg = f"the secret is not a whsec_ base64 secret: {e}"
            raise WebhookVerificationError(msg) from e
        if any(hmac.compare_digest(expected, signature) for signature in offered):
            return _parse(text)
    msg = "no signature matches"
    raise WebhookVerificationError(msg)


def _parse(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as e:
        msg = f"body is not JSON: {e}"
        raise WebhookVerificationError(msg) from e
    if not isinstance(value, dict):
        msg = "body is not a JSON object"
        raise WebhookVerificationError(msg)
    return value
