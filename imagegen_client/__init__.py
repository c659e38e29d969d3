"""A client for bedrock-imagegen's HTTP API: what a backend needs with nothing but an API key.

::

    from imagegen_client import ImagegenClient, JobFailedError

    with ImagegenClient("http://127.0.0.1:8000", api_key="...") as client:
        try:
            job = client.run("a lighthouse at dawn", aspect_ratio="16:9")
        except JobFailedError as e:
            print(e.job.status, e.job.error_code)
        else:
            client.download(job, "lighthouse.png")

``AsyncImagegenClient`` has the same methods for asyncio. This package imports httpx2 and
pydantic only: no Redis, S3, Celery or FastAPI, and no credentials but the key. Where
OpenTelemetry's API is installed, each request carries the caller's current trace
(``traceparent``), which a submitted job keeps.
"""

from __future__ import annotations

from imagegen_client.aio import AsyncImagegenClient
from imagegen_client.calls import API_KEY_ENV, API_URL_ENV
from imagegen_client.errors import (
    ApiConnectionError,
    ApiError,
    AuthenticationError,
    BadRequestError,
    ChainFailedError,
    ConflictError,
    ImagegenClientError,
    InvalidRequestError,
    JobFailedError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitedError,
    RequestTimeoutError,
    ServiceUnavailableError,
    StreamEndedError,
    WaitTimeoutError,
)
from imagegen_client.records import (
    Batch,
    BatchCreated,
    Chain,
    ChainCreated,
    ChainStep,
    Job,
    JobPage,
    JobStatus,
    Model,
    Problem,
    ProblemField,
    Upload,
    WebhookSecrets,
)
from imagegen_client.retries import RetryPolicy
from imagegen_client.sync import ImagegenClient

__all__ = [
    "API_KEY_ENV",
    "API_URL_ENV",
    "ApiConnectionError",
    "ApiError",
    "AsyncImagegenClient",
    "AuthenticationError",
    "BadRequestError",
    "Batch",
    "BatchCreated",
    "Chain",
    "ChainCreated",
    "ChainFailedError",
    "ChainStep",
    "ConflictError",
    "ImagegenClient",
    "ImagegenClientError",
    "InvalidRequestError",
    "Job",
    "JobFailedError",
    "JobPage",
    "JobStatus",
    "Model",
    "NotFoundError",
    "PayloadTooLargeError",
    "Problem",
    "ProblemField",
    "RateLimitedError",
    "RequestTimeoutError",
    "RetryPolicy",
    "ServiceUnavailableError",
    "StreamEndedError",
    "Upload",
    "WaitTimeoutError",
    "WebhookSecrets",
]
