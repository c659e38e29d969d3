"""The records the service keeps: jobs (with their attempt log) and webhook deliveries.

A job's status is ``queued`` while it waits (in any of its places), ``running`` while a worker
holds its lease, then one terminal status. A job given back after a retryable failure, or put
back because its worker died, is ``queued`` again (its ``attempts`` and attempt log keep what
happened); a terminal status is final, except that an operator may replay a ``failed`` job from
the dead-letter set (``JobStore.replay``). Where a job is and how it moves is
``imagegen.lifecycle``; how a record maps onto a Redis hash is ``imagegen.redis.codecs``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagegen.contract import CHAIN_EVENTS, AnyModelRequest, JobSpec, Priority

__all__ = [
    "TERMINAL_STATUSES",
    "AttemptEntry",
    "ChainStep",
    "DeliveryAttempt",
    "DeliveryState",
    "JobRecord",
    "JobStatus",
    "JobTrace",
    "NewJob",
    "WebhookDelivery",
    "ms_to_datetime",
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
    BUDGET_EXCEEDED = "budget_exceeded"  # its tenant's hard budget had no room; never called

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
        JobStatus.BUDGET_EXCEEDED,
    }
)


DeliveryState = Literal["pending", "sending", "delivered", "exhausted", "disabled", "refused"]


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
    state: DeliveryState
    attempts: int = 0
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    log: list[DeliveryAttempt] = Field(default_factory=list)


# The attempt log's entry of a replay (``job_replay.lua`` writes it, as attempt 0): a new run
# begins after it.
REPLAYED = "Replayed"


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
    request: AnyModelRequest | None
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
    # A chain step: the chain it belongs to, and the job whose output it waits for.
    chain_id: str | None = None
    after_job_id: str | None = None
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
    # What Bedrock billed for the job's image (the model's price), once one was bought.
    cost_usd: float | None = None
    # Served from the cache: the image another job (``cache_source_job_id``) bought, no call.
    cached: bool = False
    cache_source_job_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    webhook_url: str | None = None
    webhook_events: list[str] = Field(default_factory=list)
    webhooks: list[WebhookDelivery] = Field(default_factory=list)
    # While the job waits in the dispatcher (worked out when read, never stored): its place
    # among every tenant's waiting jobs of its model (1 = next), when it should start at the
    # current rate, and its tenant's share of that rate.
    queue_position: int | None = None
    estimated_start_at: datetime | None = None
    tenant_share: float | None = None
    # Where the job is in its lifecycle (``imagegen.lifecycle.Place``); ``paused`` while it
    # waits in a tenant queue paused for ``paused_reason`` (budget, concurrency, rate).
    place: str | None = None
    paused_reason: str | None = None
    # The OpenTelemetry trace the job belongs to (its submitting request's), when it has one.
    trace_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    def this_run_log(self) -> list[AttemptEntry]:
        """The attempt log since the last replay (all of it when never replayed)."""
        starts = [i for i, entry in enumerate(self.attempt_log) if entry.error_code == REPLAYED]
        return self.attempt_log[starts[-1] + 1 :] if starts else self.attempt_log


class ChainStep(BaseModel):
    """One step of a chain, as the chain's status and its webhook report it."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    job_id: str
    model_id: str
    status: JobStatus
    s3_uri: str | None = None
    cost_usd: float | None = None
    error_code: str | None = None
    error_message: str | None = None


def ms_to_datetime(value_ms: int) -> datetime:
    return datetime.fromtimestamp(value_ms / 1000, tz=UTC)


@dataclass(frozen=True)
class NewJob:
    """A validated job about to be stored: its id, model and owner are settled."""

    job_id: str
    model_id: str
    spec: JobSpec
    created_ms: int
    tenant: str | None = None
    batch_id: str | None = None
    idempotency_key: str | None = None
    # What the input images are (their S3 ETags, or the sha256 of the job outputs they are),
    # when the submitter could tell; a job with inputs it could not tell is never cached.
    inputs_digest: str | None = None
    # A job that takes another job's output waits for that job (a chain step).
    after_job_id: str | None = None
    chain_id: str | None = None
    # The last step of a chain also reports the chain's end (``chain.succeeded|failed``).
    chain_last: bool = False
    # Its submission's span (W3C traceparent), and where it stood in the dispatcher then: kept
    # for the spans of its wait, attempts and webhooks (``imagegen.tracing``).
    traceparent: str | None = None
    position_at_submit: int | None = None
    share_at_submit: float | None = None

    @property
    def request_sha256(self) -> str:
        """What an idempotency key stands for: the whole submitted job."""
        canonical = self.spec.model_dump_json(exclude={"job_id"})
        return hashlib.sha256(f"{self.model_id}\n{canonical}".encode()).hexdigest()

    @property
    def cache_key(self) -> str | None:
        """What a fixed-seed request stands for in the cache: the model and the whole normalised
        request (None for a random seed, whose image is new every time)."""
        request = self.spec.request
        if not request.fixed_seed:
            return None
        if request.image_inputs() and not self.inputs_digest:
            return None
        canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True)
        inputs = f"\n{self.inputs_digest}" if self.inputs_digest else ""
        return hashlib.sha256(f"{self.model_id}\n{canonical}{inputs}".encode()).hexdigest()

    @property
    def webhook_events(self) -> list[str]:
        """The events its webhook gets (none without a webhook); a chain's last step also
        reports the chain's end."""
        if not self.spec.webhook_url:
            return []
        return [*self.spec.events, *(CHAIN_EVENTS if self.chain_last else ())]

    @property
    def expires_ms(self) -> int | None:
        expires_at = self.spec.expires_at
        return round(expires_at.timestamp() * 1000) if expires_at else None

    def queued_record(self) -> JobRecord:
        """The record as the submit script writes it."""
        spec = self.spec
        return JobRecord(
            job_id=self.job_id,
            status=JobStatus.QUEUED,
            model_id=self.model_id,
            priority=spec.priority,
            request=spec.request,
            metadata=spec.metadata,
            created_at=ms_to_datetime(self.created_ms),
            webhook_url=spec.webhook_url,
            webhook_events=self.webhook_events,
            expires_at=spec.expires_at,
            tenant=self.tenant,
            batch_id=self.batch_id,
            chain_id=self.chain_id,
            after_job_id=self.after_job_id,
            trace_id=self.traceparent.split("-")[1] if self.traceparent else None,
        )


@dataclass(frozen=True)
class JobTrace:
    """What a job's spans need of its record: the submission's span (W3C traceparent), when
    the dispatcher released it (Unix ms), and its place and its tenant's share at submit."""

    traceparent: str | None = None
    released_ms: int | None = None
    position_at_submit: int | None = None
    share_at_submit: float | None = None
