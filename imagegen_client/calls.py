"""What each operation sends and how its answer is read, shared by the sync and the async
client (which only differ in how they wait for the network)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx2 as httpx

from imagegen_client.errors import (
    ApiError,
    ChainFailedError,
    JobFailedError,
    StreamEndedError,
    api_error,
)
from imagegen_client.records import Chain, Job, JobStatus, Problem
from imagegen_client.retries import RetryPolicy, retry_after_s

_inject_trace: Callable[[dict[str, str]], None] | None
try:  # The caller's trace is passed on where OpenTelemetry's API is installed.
    from opentelemetry.propagate import inject as _inject_trace
except ImportError:  # pragma: no cover - the service installs it
    _inject_trace = None

__all__ = [
    "API_KEY_ENV",
    "API_URL_ENV",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_WAIT_S",
    "Call",
    "ClientConfig",
    "Priority",
    "error_of",
    "event_job",
    "finished_chain",
    "finished_job",
    "image_content_type",
    "job_body",
    "polling_delays",
    "trace_headers",
]

API_URL_ENV = "IMAGEGEN_API_URL"
API_KEY_ENV = "IMAGEGEN_API_KEY"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_WAIT_S = 300.0
CONNECT_TIMEOUT_S = 5.0
# The event stream sends a comment every 15 s while nothing changes.
STREAM_READ_TIMEOUT_S = 45.0
FIRST_POLL_S = 0.25
# The API answers `Prefer: wait` for at most IMAGEGEN_API_MAX_WAIT_S (30 s by default).
MAX_PREFER_WAIT_S = 30.0
PROBLEM_DETAIL_CHARS = 500
Priority = Literal["interactive", "batch"]
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass(frozen=True)
class ClientConfig:
    """Where the API is, the key, and how patient to be."""

    base_url: str
    api_key: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_poll_interval_s: float = 2.0

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        timeout_s: float,
        retry: RetryPolicy | None,
        max_poll_interval_s: float,
    ) -> ClientConfig:
        """The arguments, else ``IMAGEGEN_API_URL`` and ``IMAGEGEN_API_KEY``."""
        url = base_url or os.environ.get(API_URL_ENV)
        key = api_key or os.environ.get(API_KEY_ENV)
        if not url:
            msg = f"no API URL: pass base_url or set {API_URL_ENV}"
            raise ValueError(msg)
        if not key:
            msg = f"no API key: pass api_key or set {API_KEY_ENV}"
            raise ValueError(msg)
        return cls(url.rstrip("/"), key, timeout_s, retry or RetryPolicy(), max_poll_interval_s)

    def timeout(self, extra_s: float = 0.0, *, read_s: float | None = None) -> httpx.Timeout:
        total = self.timeout_s + extra_s
        return httpx.Timeout(
            total if read_s is None else read_s, connect=min(CONNECT_TIMEOUT_S, total)
        )


@dataclass(frozen=True)
class Call:
    """One request to the API, before it is sent."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Seconds the server may take on purpose (Prefer: wait), added to the timeout.
    server_wait_s: float = 0.0


def segment(value: str) -> str:
    return quote(value, safe="")


def job_id_of(job: str | Job) -> str:
    return job.job_id if isinstance(job, Job) else job


def job_body(
    request: str | Mapping[str, Any],
    *,
    model_id: str | None = None,
    job_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    priority: Priority | None = None,
    webhook_url: str | None = None,
    webhook_events: Iterable[str] | None = None,
    expires_at: datetime | None = None,
    request_fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of ``POST /v1/jobs``: a prompt (with the request's other fields as keywords), a
    request, or a whole job (a mapping with a ``request`` key, taken as it is)."""
    envelope: dict[str, Any] = {
        "model_id": model_id,
        "job_id": job_id,
        "metadata": dict(metadata) if metadata is not None else None,
        "priority": priority,
        "webhook_url": webhook_url,
        "webhook_events": list(webhook_events) if webhook_events is not None else None,
        "expires_at": expires_at.isoformat() if expires_at is not None else None,
    }
    given = {name: value for name, value in envelope.items() if value is not None}
    if isinstance(request, Mapping) and "request" in request:
        if given or request_fields:
            msg = "a whole job (with a request key) takes no further keywords"
            raise TypeError(msg)
        return dict(request)
    fields = {"prompt": request} if isinstance(request, str) else dict(request)
    return {"request": {**fields, **(request_fields or {})}, **given}


def submit_call(body: Mapping[str, Any], idempotency_key: str | None, wait_s: float | None) -> Call:
    headers = {}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    server_wait_s = 0.0
    if wait_s:
        server_wait_s = min(wait_s, MAX_PREFER_WAIT_S)
        headers["Prefer"] = f"wait={server_wait_s:g}"
    return Call("POST", "/v1/jobs", json=dict(body), headers=headers, server_wait_s=server_wait_s)


def list_call(
    status: JobStatus | str | None, batch_id: str | None, cursor: str | None, limit: int
) -> Call:
    params = {"limit": str(limit)}
    if status is not None:
        params["status"] = JobStatus(status).value
    if batch_id is not None:
        params["batch"] = batch_id
    if cursor is not None:
        params["cursor"] = cursor
    return Call("GET", "/v1/jobs", params=params)


def image_content_type(data: bytes) -> str:
    """The media type of a PNG, JPEG or WebP image, from its first bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    msg = "not a PNG, JPEG or WebP image: pass content_type"
    raise ValueError(msg)


def redirect_target(response: httpx.Response) -> str | None:
    """Where a redirect of ``/image`` points (a presigned URL), or None for the image itself."""
    if response.status_code in _REDIRECTS:
        return response.headers["location"]
    return None


def error_of(response: httpx.Response) -> ApiError:
    """The API's problem as an error of its status class; a body that is no problem (a proxy's
    page, S3's XML) becomes one with its first characters as the detail."""
    try:
        data = json.loads(response.content)
        problem = Problem.model_validate(data)
    except ValueError:
        problem = Problem(
            title=response.reason_phrase or "Error",
            status=response.status_code,
            detail=response.text[:PROBLEM_DETAIL_CHARS],
        )
    if problem.status != response.status_code:
        problem = problem.model_copy(update={"status": response.status_code})
    return api_error(problem, response.headers, retry_after_s(response.headers.get("retry-after")))


def finished_job(job: Job) -> Job:
    """A final job that succeeded; raises ``JobFailedError`` with any other."""
    if job.status is not JobStatus.SUCCEEDED:
        raise JobFailedError(job)
    return job


def finished_chain(chain: Chain) -> Chain:
    if chain.status != "succeeded":
        raise ChainFailedError(chain)
    return chain


def polling_delays(max_interval_s: float) -> Iterator[float]:
    """How long to sleep between reads while waiting: short at first, then every
    ``max_interval_s``."""
    delay = min(FIRST_POLL_S, max_interval_s)
    while True:
        yield delay
        delay = min(delay * 2, max_interval_s)


def event_job(event: httpx.ServerSentEvent) -> Job | None:
    """The job a ``status`` event carries; raises ``StreamEndedError`` on ``error``."""
    if event.event == "status":
        return Job.model_validate_json(event.data)
    if event.event == "error":
        raise StreamEndedError(f"the event stream ended: {event.data}")
    return None


def trace_headers() -> dict[str, str]:
    """The caller's current trace as W3C Trace Context headers (``traceparent``, and
    ``tracestate`` or ``baggage`` when it has them): empty without OpenTelemetry's API, or when
    the current context names no trace. The job submitted keeps it (its ``trace_id``)."""
    headers: dict[str, str] = {}
    if _inject_trace is not None:
        _inject_trace(headers)
    return headers
