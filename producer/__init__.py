"""bedrock-imagegen's job contract and every way to submit a job: ``Client`` (a trusted
backend's, over Redis), ``OperatorClient`` (operators' actions), the API, the CLI, webhooks.

This package never imports ``worker``: it writes job records and sends tasks by name.
"""

from __future__ import annotations

from imagegen.contract import GenerationRequest, JobSpec, Priority
from imagegen.errors import (
    FieldError,
    IdempotencyConflictError,
    ImagegenError,
    InvalidRequestError,
    JobConflictError,
    JobNotFoundError,
    JobTimeoutError,
    QueueFullError,
)
from imagegen.records import JobRecord, JobStatus
from imagegen.settings import Settings, get_settings
from imagegen.store.job_reads import JobPage
from imagegen.store.jobs import CancelOutcome
from producer.client import BatchStatus, Client, Submitted
from producer.operator import OperatorClient
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
    "OperatorClient",
    "Priority",
    "QueueFullError",
    "Settings",
    "Submitted",
    "WebhookVerificationError",
    "get_settings",
    "verify",
]
