"""Delivering webhooks: claim a delivery, sign it, POST it to the vetted address, record the try.

Runs as its own task on its own queue (``webhooks``): a dead endpoint never delays or fails an
image job. Retries follow ``webhook_retry_schedule_s`` with jitter; every wait lives in the outbox
sorted set (``imagegen:webhooks:due``), never in a Celery countdown, and the sweeper
(``worker.sweeper``) sends whatever is due. 2xx = delivered; 410 = endpoint disabled;
429/502/503/504 wait at least ``Retry-After``; anything else (3xx included: redirects are never
followed), a timeout or a refused connection is retried until the schedule runs out, then the
delivery goes to the webhook dead-letter set.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from standardwebhooks.webhooks import Webhook

from imagegen import tracing
from imagegen.contract import BUDGET_WARNING_EVENT, CHAIN_EVENTS
from imagegen.errors import SigningSecretMissingError
from imagegen.records import ChainStep, JobRecord, JobStatus
from imagegen.settings import Settings
from imagegen.ssrf import VettedTarget, WebhookUrlError, parse_webhook_url, vet_configured
from imagegen.store.deliveries import Deliveries, DeliveryClaim
from imagegen.store.job_reads import JobReads
from imagegen.store.signing import SigningSecrets, signing_secrets
from imagegen.store.spend import Ledger, periods
from worker import metrics, spans
from worker.secret_watch import SecretChangeWatch
from worker.webhook_http import PostResult, post_with_deadline

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from redis import Redis

__all__ = [
    "DeliveryResult",
    "WebhookSender",
    "build_payload",
    "delivery_lease_ms",
    "endpoint_slot_for",
]

log = logging.getLogger("imagegen.webhooks")

USER_AGENT = "bedrock-imagegen-webhooks/1"
_SLOW_DOWN = frozenset({429, 502, 503, 504})
_GONE = 410
_CLAIM_MARGIN_S = 30.0
# An endpoint with every slot busy is tried again after a moment (seconds, jittered).
_ENDPOINT_BUSY_DELAY_S = (0.5, 2.0)
_READ_CHUNK_BYTES = 1024
# A delivery whose scope has no signing secret waits this long (seconds, jittered), unsent and
# without using an attempt, then looks again.
_NO_SECRET_DELAY_S = (20.0, 40.0)


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery task did (its ``summary`` is the task result Flower shows)."""

    delivery_id: str
    outcome: str
    status: int | None = None

    def summary(self) -> dict[str, Any]:
        return {"delivery_id": self.delivery_id, "outcome": self.outcome, "status": self.status}


def delivery_lease_ms(settings: Settings) -> int:
    """How long one attempt holds a delivery: its POST's timeout and a margin."""
    return round((settings.webhook_timeout_s + _CLAIM_MARGIN_S) * 1000)


def endpoint_of(scheme: str, host: str, port: int) -> str:
    """An endpoint, whose deliveries in flight are capped together."""
    return f"{scheme}://{host}:{port}"


def webhook_endpoint(url: str | None, settings: Settings) -> str | None:
    """The endpoint of webhook ``url`` (None when it is not one: its delivery is refused)."""
    if not url:
        return None
    try:
        parsed = parse_webhook_url(url, allow_http=settings.webhook_allow_http)
    except WebhookUrlError:
        return None
    return endpoint_of(parsed.scheme, parsed.host, parsed.port)


def endpoint_slot_for(url: str | None, settings: Settings) -> tuple[str, int, str] | None:
    """A new slot (endpoint, cap, slot id) of the endpoint of webhook ``url``, for a job's finish
    to take for its first delivery (``JobStore.finish(slot=...)``); None when deliveries in
    flight are not capped or the URL is not a webhook's."""
    cap = settings.webhook_max_in_flight_per_endpoint
    endpoint = webhook_endpoint(url, settings) if cap else None
    return (endpoint, cap, uuid.uuid4().hex) if endpoint else None


def build_payload(
    record: JobRecord, event: str, image_url: str | None, url_expires_at: datetime | None
) -> dict[str, Any]:
    """The event body: ids, where the image is, what made it, what went wrong; never the image."""
    error = (
        {"code": record.error_code, "message": record.error_message}
        if record.error_code and record.status is not JobStatus.SUCCEEDED
        else None
    )
    data = {
        "job_id": record.job_id,
        "status": record.status.value,
        "model_id": record.model_id,
        "s3_bucket": record.s3_bucket,
        "s3_key": record.s3_key,
        "s3_uri": record.s3_uri,
        "image_url": image_url,
        "image_url_expires_at": url_expires_at.isoformat() if url_expires_at else None,
        "content_type": record.content_type,
        "seed": record.seed,
        "finish_reason": record.finish_reason,
        "width": record.width,
        "height": record.height,
        "error": error,
        "attempts": record.attempts,
        "cost_usd": record.cost_usd,
        "created_at": record.created_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "metadata": record.metadata,
        "chain_id": record.chain_id,
    }
    return {"type": event, "timestamp": datetime.now(UTC).isoformat(), "data": data}


class WebhookSender:
    """Sends deliveries for one worker process (thread-safe)."""

    def __init__(self, redis: Redis, settings: Settings, s3: S3Client) -> None:
        self._settings = settings
        self._s3 = s3
        self._redis = redis
        self._jobs = JobReads(redis)
        self._deliveries = Deliveries(redis)
        self._ledger = Ledger(redis, settings)
        self.secrets = signing_secrets(redis, settings)
        self._secret_watch = SecretChangeWatch()
        self._tls = ssl.create_default_context()

    def deliver(self, delivery_id: str) -> DeliveryResult:
        claim = self._deliveries.claim(delivery_id, delivery_lease_ms(self._settings))
        if claim.state != "claimed":
            return DeliveryResult(delivery_id, claim.state)
        return self.deliver_claimed(claim)

    def deliver_claimed(self, claim: DeliveryClaim) -> DeliveryResult:
        """Send a delivery claimed for this attempt (by ``deliver``, or by its job's final
        transition) and record how it went."""
        settings = self._settings
        lease_ms = delivery_lease_ms(settings)
        delivery_id, attempt, record = claim.delivery_id, claim.attempt, claim.record
        # The slot its claim took (a job's finish), given back by whatever ends this attempt.
        endpoint = webhook_endpoint(claim.url, settings) if claim.slot else None
        held = (endpoint, claim.slot) if endpoint else None
        if record is None:
            return self._finish(
                delivery_id,
                attempt,
                "exhausted",
                None,
                error="the job record has expired",
                slot=held,
            )
        try:
            target = vet_configured(claim.url, settings)
        except WebhookUrlError as e:
            return self._finish(delivery_id, attempt, "refused", None, error=str(e), slot=held)
        try:
            secrets = self.secrets_for(record.tenant).active(claim.secrets)
        except SigningSecretMissingError as e:
            if held:
                self._deliveries.free_endpoint_slot(*held)
            return self._wait_for_secret(delivery_id, e)
        self._secret_watch.saw(record.tenant, secrets)
        slot = held
        cap = settings.webhook_max_in_flight_per_endpoint
        if slot is None and cap:
            endpoint = endpoint_of(target.scheme, target.host, target.port)
            slot = (endpoint, uuid.uuid4().hex)
            if not self._deliveries.take_endpoint_slot(endpoint, cap, lease_ms, slot[1]):
                delay_s = random.uniform(*_ENDPOINT_BUSY_DELAY_S)
                self._deliveries.defer(delivery_id, delay_s)
                log.info(
                    "webhook deferred: endpoint busy",
                    extra={"delivery_id": delivery_id, "delay_s": round(delay_s, 3)},
                )
                return DeliveryResult(delivery_id, "deferred")
        try:
            body = json.dumps(self._payload(record, claim.event), separators=(",", ":"))
            headers = self._headers(claim.webhook_id, body, secrets)
            with spans.webhook_post(
                target,
                attempt=attempt,
                event=claim.event,
                delivery_id=delivery_id,
                parent=tracing.context_of(claim.traceparent),
            ) as span:
                # The receiver's trace continues ours: the POST's span is its parent.
                tracing.inject(headers)
                response = self._post(target, body, headers)
                spans.webhook_answered(span, response.status, response.error)
        except BaseException:
            if slot:
                self._deliveries.free_endpoint_slot(*slot)
            raise
        return self._judge(delivery_id, attempt, response, slot)

    # -- building the request ----------------------------------------------------------------

    def _payload(self, record: JobRecord, event: str) -> dict[str, Any]:
        if event == BUDGET_WARNING_EVENT:
            return self._budget_warning(record)
        image_url, expires_at = None, None
        bucket, key = record.s3_bucket, record.s3_key
        streams = record.tenant is not None and self._settings.api_image_delivery == "stream"
        if record.status is JobStatus.SUCCEEDED and bucket and key and streams:
            # Where callers cannot reach S3: the API's own path, fetched with the API key.
            image_url = f"/v1/jobs/{record.job_id}/image"
        elif record.status is JobStatus.SUCCEEDED and bucket and key:
            expiry_s = self._settings.webhook_presign_expiry_s
            image_url = self._s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expiry_s
            )
            expires_at = datetime.fromtimestamp(time.time() + expiry_s, tz=UTC)
        payload = build_payload(record, event, image_url, expires_at)
        if event in CHAIN_EVENTS and record.chain_id:
            payload["data"]["steps"] = self._chain_steps(record.chain_id)
        return payload

    def _chain_steps(self, chain_id: str) -> list[dict[str, Any]]:
        """Each step of a chain: its job, status, image and why it ended (a chain's event)."""
        found = self._jobs.batch(chain_id)
        steps = self._jobs.get_many(found.job_ids) if found else []
        return [
            ChainStep.model_validate(step).model_dump(mode="json")
            for step in steps
            if step is not None
        ]

    def _budget_warning(self, record: JobRecord) -> dict[str, Any]:
        """The tenant's budgets and spend now, and the job whose release crossed a soft one."""
        tenant = record.tenant or "-"
        budget = self._ledger.budget(tenant)
        day, month = periods()
        data: dict[str, Any] = {"tenant": tenant, "job_id": record.job_id}
        for name, period, soft, hard in (
            ("daily", day, budget.daily_soft, budget.daily_hard),
            ("monthly", month, budget.monthly_soft, budget.monthly_hard),
        ):
            found = self._ledger.period(tenant, period)
            data[name] = {
                "period": period.split(":", 1)[1],
                "soft_budget_usd": soft,
                "hard_budget_usd": hard,
                "spent_usd": found.spent_usd,
                "reserved_usd": found.reserved_usd,
                "soft_budget_crossed": found.soft_budget_crossed,
            }
        return {
            "type": BUDGET_WARNING_EVENT,
            "timestamp": datetime.now(UTC).isoformat(),
            "data": data,
        }

    def secrets_for(self, tenant: str | None) -> SigningSecrets:
        """The secrets that sign a job's webhooks: its tenant's, or the global ones."""
        if tenant is None:
            return self.secrets
        return signing_secrets(self._redis, self._settings, tenant)

    def _wait_for_secret(
        self, delivery_id: str, missing: SigningSecretMissingError
    ) -> DeliveryResult:
        """No secret to sign with: the delivery waits (never dropped, never signed with a
        secret made here), loudly."""
        delay_s = random.uniform(*_NO_SECRET_DELAY_S)
        self._deliveries.defer(delivery_id, delay_s)
        metrics.WEBHOOK_SECRET_MISSING.labels("tenant" if missing.tenant else "global").inc()
        log.error(
            "webhook waits: no signing secret",
            extra={
                "delivery_id": delivery_id,
                "tenant": missing.tenant or "-",
                "delay_s": round(delay_s, 3),
                "error": str(missing),
            },
        )
        return DeliveryResult(delivery_id, "waiting_for_secret")

    @staticmethod
    def _headers(webhook_id: str, body: str, secrets: list[str]) -> dict[str, str]:
        sent_at = datetime.now(UTC)
        signatures = " ".join(Webhook(secret).sign(webhook_id, sent_at, body) for secret in secrets)
        return {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signatures,
        }

    # -- sending -----------------------------------------------------------------------------

    def _post(self, target: VettedTarget, body: str, headers: dict[str, str]) -> PostResult:
        settings = self._settings
        return post_with_deadline(
            target,
            body.encode(),
            headers,
            timeout_s=settings.webhook_timeout_s,
            max_response_bytes=settings.webhook_max_response_bytes,
            tls=self._tls,
        )

    # -- judging the answer ------------------------------------------------------------------

    def _judge(
        self,
        delivery_id: str,
        attempt: int,
        response: PostResult,
        slot: tuple[str, str] | None = None,
    ) -> DeliveryResult:
        status = response.status
        if status is not None and 200 <= status < 300:
            return self._finish(delivery_id, attempt, "delivered", response, slot=slot)
        if status == _GONE:
            return self._finish(
                delivery_id,
                attempt,
                "disabled",
                response,
                error="410 Gone: endpoint disabled",
                slot=slot,
            )
        schedule = self._settings.webhook_retry_schedule_s
        error = response.error or f"HTTP {status}: {response.excerpt[:200]}"
        if attempt >= len(schedule):
            return self._finish(delivery_id, attempt, "exhausted", response, error=error, slot=slot)
        jitter = self._settings.webhook_jitter_fraction
        delay_s = schedule[attempt] * random.uniform(1 - jitter, 1 + jitter)
        if status in _SLOW_DOWN and response.retry_after_s is not None:
            delay_s = max(delay_s, response.retry_after_s)
        return self._finish(
            delivery_id, attempt, "retry", response, error=error, delay_s=delay_s, slot=slot
        )

    def _finish(
        self,
        delivery_id: str,
        attempt: int,
        outcome: str,
        response: PostResult | None,
        *,
        error: str | None = None,
        delay_s: float | None = None,
        slot: tuple[str, str] | None = None,
    ) -> DeliveryResult:
        status = response.status if response else None
        self._deliveries.record(
            delivery_id,
            outcome,
            attempt=attempt,
            status=status,
            latency_ms=response.latency_ms if response else None,
            error=error,
            delay_s=delay_s,
            slot=slot,
        )
        metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
        log.info(
            f"webhook {outcome}",
            extra={
                "delivery_id": delivery_id,
                "attempt": attempt,
                "status": status,
                "error": error,
            },
        )
        return DeliveryResult(delivery_id, outcome, status)
