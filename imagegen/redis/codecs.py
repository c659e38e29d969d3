"""Records to and from Redis hashes: the one place in Python that knows a hash field's name.

Every hash value is a string; an absent or empty field means unset. Times are Unix milliseconds
in fields named ``*_ms``; log fields hold one JSON object per line.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from imagegen.contract import ModelRequest
from imagegen.image_facts import RecoveredJob
from imagegen.models import request_type_for
from imagegen.records import (
    AttemptEntry,
    DeliveryAttempt,
    JobRecord,
    JobStatus,
    JobTrace,
    NewJob,
    WebhookDelivery,
    ms_to_datetime,
)
from imagegen.tracing import is_traceparent, trace_id_of

__all__ = [
    "LOG_MESSAGE_MAX_CHARS",
    "MICRO_USD",
    "attempt_line",
    "delivery_attempt_line",
    "delivery_from_hash",
    "delivery_ids",
    "job_trace",
    "new_job_fields",
    "record_from_hash",
    "refused_job_fields",
    "served_record",
]

# Money is kept in Redis as whole micro-dollars, so sums never drift.
MICRO_USD = 1_000_000
# The longest error message kept in an attempt-log line.
LOG_MESSAGE_MAX_CHARS = 300

# Hash fields holding integers, and the record fields holding datetimes stored as Unix ms.
_INT_FIELDS = ("attempts", "replays", "seed", "width", "height", "bytes", "bedrock_latency_ms")
_TIME_FIELDS = ("created_at", "started_at", "finished_at", "next_attempt_at", "expires_at")
_TEXT_FIELDS = (
    "job_id",
    "status",
    "model_id",
    "priority",
    "finish_reason",
    "s3_bucket",
    "s3_key",
    "s3_uri",
    "content_type",
    "sha256",
    "error_code",
    "error_message",
    "webhook_url",
    "tenant",
    "batch_id",
    "chain_id",
    "place",
)


def record_from_hash(fields: dict[str, str]) -> JobRecord:
    """The job record held in a job hash."""
    data: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        if fields.get(name):
            data[name] = fields[name]
    for name in _INT_FIELDS:
        if fields.get(name):
            data[name] = int(fields[name])
    for name in _TIME_FIELDS:
        raw = fields.get(f"{name.removesuffix('_at')}_ms")
        if raw:
            data[name] = ms_to_datetime(int(raw))
    if fields.get("billed_micro"):
        data["cost_usd"] = int(fields["billed_micro"]) / MICRO_USD
    if fields.get("after_job"):
        data["after_job_id"] = fields["after_job"]
    data["request"] = _request_or_none(fields.get("request"), fields.get("model_id"))
    data["metadata"] = json.loads(fields.get("metadata") or "{}")
    data["cancel_requested"] = fields.get("cancel_requested") == "1"
    data["cached"] = fields.get("cached") == "1"
    if fields.get("cache_source"):
        data["cache_source_job_id"] = fields["cache_source"]
    data["webhook_events"] = [e for e in (fields.get("webhook_events") or "").split(",") if e]
    data["attempt_log"] = [
        json.loads(line) for line in (fields.get("attempt_log") or "").splitlines() if line
    ]
    data["trace_id"] = trace_id_of(fields.get("traceparent"))
    return JobRecord.model_validate(data)


def job_trace(fields: dict[str, str]) -> JobTrace:
    """What a job's spans need of its hash (``traceparent``, ``released_ms`` and
    ``submit_position``: "{position} {share}")."""
    traceparent = fields.get("traceparent")
    released = fields.get("released_ms")
    position, _, share = (fields.get("submit_position") or "").partition(" ")
    return JobTrace(
        traceparent=traceparent if is_traceparent(traceparent) else None,
        released_ms=int(float(released)) if released else None,
        position_at_submit=int(position) if position.isdigit() else None,
        share_at_submit=float(share) if share else None,
    )


def idempotency_of(fields: dict[str, str]) -> tuple[str, str] | None:
    """A job hash's Idempotency-Key and the request digest it stands for, if it had one."""
    key, digest = fields.get("idempotency_key"), fields.get("idempotency_sha256")
    return (key, digest) if key and digest else None


def new_job_fields(job: NewJob) -> dict[str, str]:
    """The hash of a job as it is submitted."""
    spec = job.spec
    optional: dict[str, str | int | None] = {
        "webhook_url": spec.webhook_url,
        "webhook_events": ",".join(job.webhook_events) or None,
        "chain_last": "1" if job.chain_last else None,
        "tenant": job.tenant,
        "batch_id": job.batch_id,
        "expires_ms": job.expires_ms,
        "chain_id": job.chain_id,
        "after_job": job.after_job_id,
        "traceparent": job.traceparent,
        # What its Idempotency-Key stands for, kept beside its image in S3 (imagegen.image_facts)
        # so `imagegen recover` can answer the key again after Redis lost it.
        "idempotency_key": job.idempotency_key,
        "idempotency_sha256": job.request_sha256 if job.idempotency_key else None,
        # The request names no input image: a first attempt calls Bedrock straight after its
        # claim, which then marks the call (job_claim.lua).
        "no_inputs": None if spec.request.image_inputs() else "1",
        "submit_position": None
        if job.position_at_submit is None
        else f"{job.position_at_submit} {job.share_at_submit or 0:.4f}",
    }
    return {
        **{name: str(value) for name, value in optional.items() if value is not None},
        "job_id": job.job_id,
        "status": JobStatus.QUEUED.value,
        "model_id": job.model_id,
        "priority": spec.priority,
        "request": spec.request.model_dump_json(),
        "metadata": json.dumps(spec.metadata, separators=(",", ":")),
        "created_ms": str(job.created_ms),
        "attempts": "0",
    }


def served_record(job: NewJob, served: dict[str, str]) -> JobRecord:
    """The record of a job the cache served at submit: its submission and what it got (the
    fields the submit script returns)."""
    return record_from_hash({**new_job_fields(job), **served})


def recovered_job_fields(job: RecoveredJob) -> dict[str, str | int]:
    """The hash of a lost job re-created from its image (the script adds id and status)."""
    facts = job.facts
    fields: dict[str, str | int] = {
        "model_id": facts.model_id,
        "priority": facts.priority,
        "metadata": "{}",
        "created_ms": facts.created_ms,
        "s3_bucket": job.bucket,
        "s3_key": job.key,
        "s3_uri": f"s3://{job.bucket}/{job.key}",
        "content_type": job.content_type,
        "width": job.width,
        "height": job.height,
        "bytes": job.bytes,
        "sha256": job.sha256,
    }
    if job.seed is not None:
        fields["seed"] = job.seed
    if facts.tenant:
        fields["tenant"] = facts.tenant
    if job.webhook_url:
        fields["webhook_url"] = job.webhook_url
        fields["webhook_events"] = ",".join(facts.webhook_events)
    if facts.idempotency is not None:
        fields["idempotency_key"], fields["idempotency_sha256"] = facts.idempotency
    return fields


def delivery_ids(fields: dict[str, str]) -> list[str]:
    """The webhook deliveries a job hash lists."""
    return [item for item in (fields.get("webhook_deliveries") or "").split(",") if item]


def refused_job_fields(
    model_id: str, request: Any, error_code: str, error_message: str
) -> dict[str, str]:
    """The fields of a job refused on arrival (the script adds id, status and times)."""
    return {
        "model_id": model_id,
        "priority": "interactive",
        "request": json.dumps(request),
        "metadata": "{}",
        "error_code": error_code,
        "error_message": error_message,
    }


def attempt_line(attempt: int, error_code: str, message: str, retry_in_s: float | None) -> str:
    """One line of a job's attempt log."""
    entry = AttemptEntry(
        attempt=attempt,
        at=datetime.now(UTC),
        error_code=error_code,
        message=message[:LOG_MESSAGE_MAX_CHARS],
        retry_in_s=None if retry_in_s is None else round(retry_in_s, 3),
    )
    return entry.model_dump_json()


def delivery_attempt_line(
    attempt: int,
    status: int | None,
    latency_ms: int | None,
    error: str | None,
    retry_in_s: float | None,
) -> str:
    """One line of a webhook delivery's log."""
    entry = DeliveryAttempt(
        attempt=attempt,
        at=datetime.now(UTC),
        status=status,
        latency_ms=latency_ms,
        error=error[:LOG_MESSAGE_MAX_CHARS] if error else None,
        retry_in_s=None if retry_in_s is None else round(retry_in_s, 3),
    )
    return entry.model_dump_json()


def delivery_from_hash(fields: dict[str, str]) -> WebhookDelivery:
    """The webhook delivery held in a delivery hash."""
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


def _request_or_none(raw: str | None, model_id: str | None) -> ModelRequest | None:
    if not raw:
        return None
    try:
        return request_type_for(model_id).model_validate_json(raw)
    except ValidationError:
        return None
