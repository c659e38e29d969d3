"""The job record: what the results store keeps for each job, and how it maps onto a Redis hash.

Status only moves forward: ``queued`` -> ``running`` -> one terminal status. A retry keeps the
job ``running`` (with ``next_attempt_at`` set); a terminal status is final, except that an
operator may replay a ``failed`` job from the dead-letter set (``producer.dlq``).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producer.contract import GenerationRequest, Priority
from producer.webhooks import WebhookDelivery

__all__ = [
    "TERMINAL_STATUSES",
    "AttemptEntry",
    "JobRecord",
    "JobStatus",
    "ms_to_datetime",
    "record_from_hash",
]


class JobStatus(StrEnum):
    """Where a job is in its life."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FILTERED = "filtered"
    CANCELED = "canceled"
    EXPIRED = "expired"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.FILTERED,
        JobStatus.CANCELED,
        JobStatus.EXPIRED,
    }
)


class AttemptEntry(BaseModel):
    """One Bedrock attempt that did not end the job: what went wrong and what was decided."""

    model_config = ConfigDict(frozen=True)

    attempt: int
    at: datetime
    error_code: str
    message: str = ""
    retry_in_s: float | None = None


class JobRecord(BaseModel):
    """The job as the results store holds it; this is what callers read and webhooks report."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    status: JobStatus
    model_id: str
    priority: Priority
    # None only for a job refused on arrival (a raw message whose request broke the rules).
    request: GenerationRequest | None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempts: int = 0
    replays: int = 0
    attempt_log: list[AttemptEntry] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    expires_at: datetime | None = None
    tenant: str | None = None
    batch_id: str | None = None
    cancel_requested: bool = False
    seed: int | None = None
    finish_reason: str | None = None
    s3_bucket: str | None = None
    s3_key: str | None = None
    s3_uri: str | None = None
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    bedrock_latency_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    webhook_url: str | None = None
    webhook_events: list[str] = Field(default_factory=list)
    webhooks: list[WebhookDelivery] = Field(default_factory=list)

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


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
)


def ms_to_datetime(value_ms: int) -> datetime:
    return datetime.fromtimestamp(value_ms / 1000, tz=UTC)


def record_from_hash(fields: dict[str, str]) -> JobRecord:
    """Build a record from the Redis hash (all values strings; absent or empty means unset)."""
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
    data["request"] = _request_or_none(fields.get("request"))
    data["metadata"] = json.loads(fields.get("metadata") or "{}")
    data["cancel_requested"] = fields.get("cancel_requested") == "1"
    data["webhook_events"] = [e for e in (fields.get("webhook_events") or "").split(",") if e]
    data["attempt_log"] = [
        json.loads(line) for line in (fields.get("attempt_log") or "").splitlines() if line
    ]
    return JobRecord.model_validate(data)


def _request_or_none(raw: str | None) -> GenerationRequest | None:
    if not raw:
        return None
    try:
        return GenerationRequest.model_validate_json(raw)
    except ValidationError:
        return None
