"""bedrock-imagegen's job contract and every way to submit a job.

This package never imports ``worker``: it writes job records and sends tasks by name.
"""

from __future__ import annotations

from producer.client import Client
from producer.contract import GenerationRequest, JobSpec, Priority
from producer.errors import (
    FieldError,
    ImagegenError,
    InvalidRequestError,
    JobConflictError,
    JobNotFoundError,
    JobTimeoutError,
)
from producer.jobs import JobRecord, JobStatus
from producer.settings import Settings, get_settings

__all__ = [
    "Client",
    "FieldError",
    "GenerationRequest",
    "ImagegenError",
    "InvalidRequestError",
    "JobConflictError",
    "JobNotFoundError",
    "JobRecord",
    "JobSpec",
    "JobStatus",
    "JobTimeoutError",
    "Priority",
    "Settings",
    "get_settings",
]
