"""The API's answers as typed records: what ``/openapi.json`` calls ``JobResource``,
``JobList``, ``BatchResource``, ``ChainResource``, ``Upload``, ``ModelInfo``, ``Problem``...

They are written here, on pydantic alone, so that a backend importing this client loads nothing
of the service itself (no Redis, boto3, Celery or FastAPI). A test keeps every record's fields
equal to the served document's schema of the same name. Fields the API adds later are ignored by
older clients; a job's ``request`` is the JSON the API validated (each model has its own fields:
``GET /v1/models``).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AttemptEntry",
    "Batch",
    "BatchCreated",
    "Chain",
    "ChainCreated",
    "ChainStep",
    "DeliveryAttempt",
    "Job",
    "JobPage",
    "JobStatus",
    "Model",
    "Problem",
    "ProblemField",
    "Upload",
    "WebhookDelivery",
    "WebhookSecrets",
]


class JobStatus(StrEnum):
    """Where a job is in its life; the last six are final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    FILTERED = "filtered"
    CANCELED = "canceled"
    EXPIRED = "expired"
    BUDGET_EXCEEDED = "budget_exceeded"

    @property
    def is_terminal(self) -> bool:
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class AttemptEntry(_Record):
    """One Bedrock attempt that did not end the job."""

    attempt: int
    at: datetime
    error_code: str
    message: str = ""
    retry_in_s: float | None = None


class DeliveryAttempt(_Record):
    """One try at delivering a webhook."""

    attempt: int
    at: datetime
    status: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    retry_in_s: float | None = None


class WebhookDelivery(_Record):
    """One event of the job, on its way to its webhook."""

    delivery_id: str
    webhook_id: str
    job_id: str
    event: str
    url: str
    state: str
    attempts: int = 0
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    log: list[DeliveryAttempt] = Field(default_factory=list)


class Job(_Record):
    """A job as ``GET /v1/jobs/{job_id}`` answers it."""

    job_id: str
    status: JobStatus
    model_id: str
    priority: Literal["interactive", "batch"]
    request: dict[str, Any] | None
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
    cost_usd: float | None = None
    cached: bool = False
    cache_source_job_id: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    webhook_url: str | None = None
    webhook_events: list[str] = Field(default_factory=list)
    webhooks: list[WebhookDelivery] = Field(default_factory=list)
    queue_position: int | None = None
    estimated_start_at: datetime | None = None
    tenant_share: float | None = None
    place: str | None = None
    paused_reason: str | None = None
    # The OpenTelemetry trace of the job (its submitting request's), when it has one.
    trace_id: str | None = None
    # Where the API serves it, and its image once it succeeded.
    url: str
    image_url: str | None = None
    image_url_expires_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def succeeded(self) -> bool:
        return self.status is JobStatus.SUCCEEDED


class JobPage(_Record):
    """One page of jobs, newest first; ``next_cursor`` is None on the last page."""

    jobs: list[Job]
    next_cursor: str | None
    next: str | None


class BatchCreated(_Record):
    batch_id: str
    url: str
    size: int
    job_ids: list[str]


class Batch(_Record):
    """How far a batch got: its jobs by status."""

    batch_id: str
    tenant: str | None
    created_at: datetime
    size: int
    counts: dict[str, int]
    job_ids: list[str]
    url: str

    @property
    def is_finished(self) -> bool:
        """Every job of the batch is final."""
        open_statuses = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
        return not any(self.counts.get(status) for status in open_statuses)


class ChainCreated(_Record):
    chain_id: str
    url: str
    job_ids: list[str]


class ChainStep(_Record):
    job_id: str
    model_id: str
    status: JobStatus
    s3_uri: str | None = None
    cost_usd: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    url: str
    image_url: str | None = None
    image_url_expires_at: datetime | None = None


class Chain(_Record):
    """A chain, its steps, and its final image once it succeeded."""

    chain_id: str
    tenant: str | None
    created_at: datetime
    status: Literal["queued", "running", "succeeded", "failed"]
    reason: str | None = None
    output_s3_uri: str | None = None
    cost_usd: float
    steps: list[ChainStep]
    url: str
    output_image_url: str | None = None
    output_image_url_expires_at: datetime | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in ("succeeded", "failed")


class Upload(_Record):
    """An input image in the service's bucket: name ``image`` in a job's request."""

    image: str
    s3_bucket: str
    s3_key: str
    format: str
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    upload_url: str | None = None
    upload_content_type: str | None = None
    expires_in_s: int | None = None
    image_url: str | None = None
    image_url_expires_at: datetime | None = None


class Model(_Record):
    """A model a job may name, what its request takes and what an image costs."""

    model_id: str
    name: str | None = None
    kind: str
    access: str | None = None
    price_usd: float
    price_confirmed: bool | None = None
    fields: list[str] = Field(default_factory=list)
    required: list[str] = Field(default_factory=list)
    input_images: list[str] = Field(default_factory=list)
    output_formats: list[str] = Field(default_factory=list)
    output_size: str | None = None


class WebhookSecrets(_Record):
    """The secrets signing the tenant's webhooks now, newest first: verify with all of them."""

    secrets: list[str]
    overlap_s: int


class ProblemField(_Record):
    field: str
    message: str


class Problem(_Record):
    """An error as the API answers it (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemField] = Field(default_factory=list)
