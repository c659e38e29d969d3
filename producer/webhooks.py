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
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook

from imagegen.errors import WebhookVerificationError
from imagegen.text import parse_json_object

__all__ = ["DEFAULT_TOLERANCE_S", "WebhookVerificationError", "verify"]

DEFAULT_TOLERANCE_S = 300


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
    try:
        text = body.decode() if isinstance(body, bytes) else body
    except UnicodeDecodeError as e:
        msg = f"body is not UTF-8: {e}"
        raise WebhookVerificationError(msg) from e
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
        return parse_json_object(text, "body")
    except ValueError as e:
        raise WebhookVerificationError(str(e)) from e
