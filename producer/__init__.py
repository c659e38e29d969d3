"""bedrock-imagegen's job contract and every way to submit a job.

This package never imports ``worker``: it writes job records and sends tasks by name.
"""

from __future__ import annotations

from producer.client import BatchStatus, Client, Submitted
from producer.contract import GenerationRequest, JobSpec, Priority
from producer.errors import (
    FieldError,
    IdempotencyConflictError,
    ImagegenError,
    InvalidRequestError,
    JobConflictError,
    JobNotFoundError,
    JobTimeoutError,
    QueueFullError,
)
from producer.jobs import JobRecord, JobStatus
from producer.settings import Settings, get_settings
from producer.store import CancelOutcome, JobPage
from producer.webhooks import WebhookVerificationError, verify

__all__ = [
    "BatchStatus",
    "CancelOutcome",
    "Client",
    "FieldError",
    "GenerationRequest",
    "IdempotencyConflictError",
    "ImagegenError",
    "InvalidRequestError",
    "JobConflictError",
    "JobNotFoundError",
    "JobPage",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "JobTimeoutError",
    "Priority",
    "QueueFullError",
    "Settings",
    "Submitted",
    "WebhookVerificationError",
    "get_settings",
    "verify",
]
