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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import urllib3
from standardwebhooks.webhooks import Webhook

from producer import keys
from producer.jobs import JobRecord, JobStatus
from producer.outbox import SigningSecrets
from producer.settings import Settings
from producer.ssrf import VettedTarget, WebhookUrlError, vet_webhook_url
from worker import metrics
from worker.results import ResultStore
from worker.retry import retry_after_s

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from redis import Redis

__all__ = ["DeliveryResult", "WebhookSender", "build_payload"]

log = logging.getLogger("imagegen.webhooks")

USER_AGENT = "bedrock-imagegen-webhooks/1"
_SLOW_DOWN = frozenset({429, 502, 503, 504})
_GONE = 410
_CLAIM_MARGIN_S = 30.0
_READ_CHUNK_BYTES = 1024

# KEYS: delivery hash. ARGV: delivery id, lease ms. Returns {state, attempts}: claimed | missing |
# final | busy | disabled.
_CLAIM_LUA = f"""
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {{'missing', 0}} end
if state ~= 'pending' and state ~= 'sending' then return {{'final', 0}} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_until = tonumber(redis.call('HGET', KEYS[1], 'lease_until_ms') or '0')
if state == 'sending' and lease_until > now then return {{'busy', 0}} end
local url = redis.call('HGET', KEYS[1], 'url')
if redis.call('SISMEMBER', '{keys.WEBHOOKS_DISABLED_KEY}', url) == 1 then
  redis.call('HSET', KEYS[1], 'state', 'disabled')
  redis.call('ZREM', '{keys.WEBHOOKS_DUE_KEY}', ARGV[1])
  return {{'disabled', 0}}
end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'sending', 'lease_until_ms', now + tonumber(ARGV[2]))
redis.call('ZADD', '{keys.WEBHOOKS_DUE_KEY}', now + tonumber(ARGV[2]), ARGV[1])
return {{'claimed', attempts}}
"""

# KEYS: delivery hash. ARGV: delivery id, outcome, log line, retry delay ms.
# outcome: delivered | retry | exhausted | refused | disabled.
_RECORD_LUA = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local log = redis.call('HGET', KEYS[1], 'log') or ''
redis.call('HSET', KEYS[1], 'log', log .. ARGV[3] .. '\\n', 'lease_until_ms', 0)
local outcome = ARGV[2]
redis.call('HINCRBY', '{keys.STATS_KEY}', 'webhooks|' .. outcome, 1)
if outcome == 'retry' then
  local due = now + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'state', 'pending', 'next_ms', due)
  redis.call('ZADD', '{keys.WEBHOOKS_DUE_KEY}', due, ARGV[1])
  return 1
end
redis.call('ZREM', '{keys.WEBHOOKS_DUE_KEY}', ARGV[1])
redis.call('HSET', KEYS[1], 'state', outcome)
if outcome == 'delivered' then
  redis.call('HSET', KEYS[1], 'delivered_ms', now)
elseif outcome == 'disabled' then
  redis.call('SADD', '{keys.WEBHOOKS_DISABLED_KEY}',
             redis.call('HGET', KEYS[1], 'url'))
else
  redis.call('ZADD', '{keys.WEBHOOKS_DLQ_KEY}', now, ARGV[1])
end
return 1
"""


@dataclass(frozen=True)
class DeliveryResult:
    """What one delivery task did (its ``summary`` is the task result Flower shows)."""

    delivery_id: str
    outcome: str
    status: int | None = None

    def summary(self) -> dict[str, Any]:
        return {"delivery_id": self.delivery_id, "outcome": self.outcome, "status": self.status}


@dataclass(frozen=True)
class _Response:
    status: int | None
    latency_ms: int
    excerpt: str
    retry_after_s: float | None
    error: str | None


def build_payload(
    record: JobRecord, event: str, image_url: str | None, url_expires_at: datetime | None
) -> dict[str, Any]:
    """The event body: ids, where the image is, what made it, what went wrong; never the image."""
    error = (
        {"code": record.error_code, "message": record.error_message}
        if record.error_code and record.status is JobStatus.FAILED
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
        "created_at": record.created_at.isoformat(),
        "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        "metadata": record.metadata,
    }
    return {"type": event, "timestamp": datetime.now(UTC).isoformat(), "data": data}


class WebhookSender:
    """Sends deliveries for one worker process (thread-safe)."""

    def __init__(self, redis: Redis, settings: Settings, s3: S3Client) -> None:
        self._redis = redis
        self._settings = settings
        self._s3 = s3
        self._store = ResultStore(redis, settings.job_retention_s)
        self.secrets = SigningSecrets(redis, settings.webhook_secret_overlap_s)
        self._claim = redis.register_script(_CLAIM_LUA)
        self._record = redis.register_script(_RECORD_LUA)
        self._tls = ssl.create_default_context()

    def deliver(self, delivery_id: str) -> DeliveryResult:
        settings = self._settings
        key = keys.webhook_key(delivery_id)
        lease_ms = round((settings.webhook_timeout_s + _CLAIM_MARGIN_S) * 1000)
        state, attempt = self._claim(keys=[key], args=[delivery_id, lease_ms])
        if state != "claimed":
            return DeliveryResult(delivery_id, str(state))
        fields: dict[str, str] = self._redis.hgetall(key)  # type: ignore[assignment]
        record = self._store.get(fields["job_id"])
        if record is None:
            return self._finish(
                delivery_id, int(attempt), "exhausted", None, error="the job record has expired"
            )
        try:
            target = vet_webhook_url(
                fields["url"],
                allow_http=settings.webhook_allow_http,
                allowed_hosts=settings.webhook_allowed_hosts,
            )
        except WebhookUrlError as e:
            return self._finish(delivery_id, int(attempt), "refused", None, error=str(e))
        body = json.dumps(self._payload(record, fields["event"]), separators=(",", ":"))
        response = self._post(target, body, self._headers(fields["webhook_id"], body))
        return self._judge(delivery_id, int(attempt), response)

    # -- building the request ----------------------------------------------------------------

    def _payload(self, record: JobRecord, event: str) -> dict[str, Any]:
        image_url, expires_at = None, None
        if record.status is JobStatus.SUCCEEDED and record.s3_bucket and record.s3_key:
            expiry_s = self._settings.webhook_presign_expiry_s
            image_url = self._s3.generate_presigned_url(
                "get_object",
                Params={"Bucket": record.s3_bucket, "Key": record.s3_key},
                ExpiresIn=expiry_s,
            )
            expires_at = datetime.fromtimestamp(time.time() + expiry_s, tz=UTC)
        return build_payload(record, event, image_url, expires_at)

    def _headers(self, webhook_id: str, body: str) -> dict[str, str]:
        sent_at = datetime.now(UTC)
        signatures = " ".join(
            Webhook(secret).sign(webhook_id, sent_at, body) for secret in self.secrets.active()
        )
        return {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signatures,
        }

    # -- sending -----------------------------------------------------------------------------

    def _post(self, target: VettedTarget, body: str, headers: dict[str, str]) -> _Response:
        settings = self._settings
        default_port = 443 if target.scheme == "https" else 80
        host_header = target.host if target.port == default_port else f"{target.host}:{target.port}"
        timeout = urllib3.Timeout(total=settings.webhook_timeout_s)
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                target.address,
                target.port,
                timeout=timeout,
                retries=False,
                maxsize=1,
                server_hostname=target.host,
                assert_hostname=target.host,
                ssl_context=self._tls,
            )
        else:
            pool = urllib3.HTTPConnectionPool(
                target.address, target.port, timeout=timeout, retries=False, maxsize=1
            )
        started = time.perf_counter()
        deadline = started + settings.webhook_timeout_s
        try:
            response = pool.urlopen(
                "POST",
                target.path,
                body=body.encode(),
                headers={**headers, "host": host_header},
                redirect=False,
                retries=False,
                preload_content=False,
                assert_same_host=False,
            )
            try:
                excerpt = _read_capped(response, settings.webhook_max_response_bytes, deadline)
            finally:
                response.release_conn()
        except (urllib3.exceptions.HTTPError, OSError) as e:
            return _Response(None, _elapsed_ms(started), "", None, _describe(e))
        finally:
            pool.close()
        return _Response(
            response.status,
            _elapsed_ms(started),
            excerpt,
            retry_after_s(response.headers.get("retry-after")),
            None,
        )

    # -- judging the answer ------------------------------------------------------------------

    def _judge(self, delivery_id: str, attempt: int, response: _Response) -> DeliveryResult:
        status = response.status
        if status is not None and 200 <= status < 300:
            return self._finish(delivery_id, attempt, "delivered", response)
        if status == _GONE:
            return self._finish(
                delivery_id, attempt, "disabled", response, error="410 Gone: endpoint disabled"
            )
        schedule = self._settings.webhook_retry_schedule_s
        error = response.error or f"HTTP {status}: {response.excerpt[:200]}"
        if attempt >= len(schedule):
            return self._finish(delivery_id, attempt, "exhausted", response, error=error)
        jitter = self._settings.webhook_jitter_fraction
        delay_s = schedule[attempt] * random.uniform(1 - jitter, 1 + jitter)
        if status in _SLOW_DOWN and response.retry_after_s is not None:
            delay_s = max(delay_s, response.retry_after_s)
        return self._finish(delivery_id, attempt, "retry", response, error=error, delay_s=delay_s)

    def _finish(
        self,
        delivery_id: str,
        attempt: int,
        outcome: str,
        response: _Response | None,
        *,
        error: str | None = None,
        delay_s: float | None = None,
    ) -> DeliveryResult:
        entry = {
            "attempt": attempt,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "status": response.status if response else None,
            "latency_ms": response.latency_ms if response else None,
            "error": error[:300] if error else None,
            "retry_in_s": round(delay_s, 3) if delay_s is not None else None,
        }
        self._record(
            keys=[keys.webhook_key(delivery_id)],
            args=[
                delivery_id,
                outcome,
                json.dumps(entry, separators=(",", ":")),
                round((delay_s or 0) * 1000),
            ],
        )
        metrics.WEBHOOK_DELIVERIES.labels(outcome).inc()
        log.info(
            f"webhook {outcome}",
            extra={
                "delivery_id": delivery_id,
                "attempt": attempt,
                "status": entry["status"],
                "error": error,
            },
        )
        return DeliveryResult(delivery_id, outcome, response.status if response else None)


def _read_capped(response: Any, max_bytes: int, deadline: float) -> str:
    chunks: list[bytes] = []
    size = 0
    while size < max_bytes and time.perf_counter() < deadline:
        chunk = response.read(min(_READ_CHUNK_BYTES, max_bytes - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _describe(error: Exception) -> str:
    if isinstance(error, urllib3.exceptions.TimeoutError):
        return f"timeout: {error}"
    return f"{type(error).__name__}: {error}"


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
