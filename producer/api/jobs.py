"""``/v1/jobs``: submit (with ``Prefer: wait``, ``Idempotency-Key``, ``Cancel-After``), list,
get, cancel, follow a job's status as server-sent events, and download its image."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated

import anyio.to_thread
import redis
from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from imagegen.epoch import read_found
from imagegen.errors import FieldError, JobNotFoundError, JobTimeoutError
from imagegen.ids import is_stored_job_id, is_valid_job_id, scoped_job_id
from imagegen.records import JobRecord, JobStatus
from imagegen.store.jobs import CancelOutcome
from producer.api.auth import Tenant
from producer.api.batches import owned_batch
from producer.api.bodies import duration_header_s, job_object, prefer_wait_s, raw_body
from producer.api.examples import JOB_LIST_EXAMPLE, JOB_RESOURCE_EXAMPLE, JOB_SPEC_EXAMPLES
from producer.api.images import (
    IF_NONE_MATCH_DESCRIPTION,
    IMAGE_RESPONSES,
    image_response,
)
from producer.api.limits import Held
from producer.api.problems import ProblemError, problem_responses, submission_problems
from producer.api.state import ApiState, State
from producer.client import Client

__all__ = ["JobId", "JobList", "JobResource", "owned_job", "resource", "router"]

router = APIRouter(tags=["jobs"])

EVENTS_HEARTBEAT_S = 15.0
# A stream checks its API key this often, and ends once it is revoked.
KEY_RECHECK_S = 5.0
STREAM_RETRY_AFTER_S = 5
MAX_LIST_LIMIT = 200


class JobResource(JobRecord):
    """A job as the API shows it: its record, where to find it, and where its image is."""

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_RESOURCE_EXAMPLE]})

    url: str = Field(description="The job's own URL, relative to the API")
    image_url: str | None = Field(
        default=None,
        description="Where to GET the image once the job succeeded (null before, and for a job "
        "that ended without one): a presigned URL that needs no credentials and expires at "
        "`image_url_expires_at`; every read of the job signs a fresh one, and `GET "
        "/v1/jobs/{job_id}/image` redirects to one. Where the service streams images it is "
        "that path instead, fetched with the API key.",
    )
    image_url_expires_at: datetime | None = Field(
        default=None,
        description="When `image_url` stops working (null: it does not expire)",
    )


class JobList(BaseModel):
    """One page of jobs, newest first."""

    model_config = ConfigDict(json_schema_extra={"examples": [JOB_LIST_EXAMPLE]})

    jobs: list[JobResource]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page (null: last)")
    next: str | None = Field(description="The next page's URL, relative to the API (null: last)")


JobId = Annotated[
    str,
    Path(
        description="The job's id, or the id you gave it (`order-1234`)",
        examples=["01M89R7TH0P67BFKC8G88BWB62"],
    ),
]


def resource(state: ApiState, record: JobRecord) -> JobResource:
    """The record as the API answers it, with a fresh link to its image."""
    link = state.images.for_job(record)
    # The record's own fields (not a dump), so the request keeps its model's class.
    return JobResource(
        **dict(record),
        url=f"/v1/jobs/{record.job_id}",
        image_url=link.url if link else None,
        image_url_expires_at=link.expires_at if link else None,
    )


def owned_job(state: ApiState, job_id: str, tenant_id: str) -> JobRecord:
    """The tenant's job, by its full id or by the id the tenant chose; 404 otherwise (someone
    else's job is as absent as a missing one)."""
    candidates = [job_id] if is_stored_job_id(job_id) else []
    if is_valid_job_id(job_id):
        candidates.insert(0, scoped_job_id(tenant_id, job_id))
    for candidate in candidates:
        try:
            record = state.client.get(candidate)
        except JobNotFoundError:
            continue
        if record.tenant == tenant_id:
            return record
    raise ProblemError(404, "Job not found", f"no job {job_id}{_after_a_loss(state)}")


def _after_a_loss(state: ApiState) -> str:
    """What a 404 adds while a loss Redis recorded is within the job retention: the job may
    have been accepted and lost, not never submitted."""
    try:
        found = read_found(state.redis)
    except redis.RedisError:
        return ""
    lost_at_ms = found.lost_at_ms
    if not lost_at_ms or time.time() * 1000 - lost_at_ms > state.settings.job_retention_s * 1000:
        return ""
    at = datetime.fromtimestamp(lost_at_ms / 1000, UTC).isoformat(timespec="seconds")
    return (
        f"; Redis lost data at {at} ({found.lost_kind}): a job accepted before then may be "
        "gone, submit it again"
    )


# Each event of the stream (before OpenAPI 3.2, `schema` describes one event).
_SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {
            "type": "string",
            "enum": ["status", "error"],
            "description": "`status`: the job changed; `error`: the stream ends (the API key "
            "was revoked)",
        },
        "data": {
            "type": "string",
            "description": "`status`: the job as `GET /v1/jobs/{job_id}` shows it (JSON); "
            "`error`: why the stream ends",
        },
    },
    "required": ["event", "data"],
}
_JOB_BODY_SCHEMA = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"$ref": "#/components/schemas/JobSpec"},
            "examples": JOB_SPEC_EXAMPLES,
        }
    },
}
_LOCATION = {
    "Location": {
        "description": "The job's URL, relative to the API",
        "schema": {"type": "string"},
    }
}
_NO_JOB = "No such job (another tenant's job is as absent as a missing one)"


@router.post(
    "/v1/jobs",
    operation_id="submitJob",
    status_code=202,
    response_model=JobResource,
    response_description="Queued: the job, with `Location` its URL",
    responses={
        200: {
            "model": JobResource,
            "description": "Finished within `Prefer: wait`, or seen before (the same "
            "Idempotency-Key or job id): the job",
            "headers": _LOCATION,
        },
        202: {"headers": _LOCATION},
        **problem_responses(
            400,
            401,
            413,
            422,
            described={
                409: "The job id, or the Idempotency-Key, was used for another job",
                429: "Too many of your jobs are not finished yet (or too many bad keys); wait "
                "for Retry-After",
            },
            examples={422: "invalid-job", 429: "queue-full"},
        ),
    },
    openapi_extra={"requestBody": _JOB_BODY_SCHEMA},
    summary="Submit a job",
    description="Validates the job and queues it. `Prefer: wait=N` waits up to N seconds for "
    "it to finish (200 when it did); `Idempotency-Key` makes a retried submission return the "
    "first job; `Cancel-After: 10m` expires it unless it started by then.",
)
async def submit_job(
    *,
    request_body: Annotated[bytes, Depends(raw_body)],
    tenant_id: Tenant,
    state: State,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            description="Any string: the same key and body within 24 h return the first job",
            examples=["order-1234"],
        ),
    ] = None,
    prefer: Annotated[
        str | None,
        Header(
            max_length=255,
            description="`wait=N`: answer once the job is final, or after N seconds (at most "
            "IMAGEGEN_API_MAX_WAIT_S)",
            examples=["wait=20"],
        ),
    ] = None,
    cancel_after: Annotated[
        str | None,
        Header(
            max_length=32,
            description="A deadline: expire the job unless it started within this long (e.g. "
            "10m, 2h, 90s); conflicts with `expires_at`",
            examples=["10m"],
        ),
    ] = None,
) -> JobResource:
    # Async, with the blocking part in one trip to the thread pool: a sync endpoint's answer
    # would be validated in a second one.
    return await anyio.to_thread.run_sync(
        partial(
            _submit,
            request_body=request_body,
            tenant_id=tenant_id,
            state=state,
            response=response,
            idempotency_key=idempotency_key,
            prefer=prefer,
            cancel_after=cancel_after,
        )
    )


def _submit(
    *,
    request_body: bytes,
    tenant_id: str,
    state: ApiState,
    response: Response,
    idempotency_key: str | None,
    prefer: str | None,
    cancel_after: str | None,
) -> JobResource:
    client = state.client
    data = job_object(request_body)
    if cancel_after is not None:
        if "expires_at" in data:
            raise ProblemError(
                400,
                "Conflicting deadlines",
                "give expires_at or Cancel-After, not both",
                [FieldError("Cancel-After", "conflicts with expires_at")],
            )
        seconds = duration_header_s(cancel_after, "Cancel-After")
        data["expires_at"] = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
    wait_s = prefer_wait_s(prefer, state.settings.api_max_wait_s)
    with submission_problems("Invalid job", "the job was refused; see errors"):
        [submitted] = client.create_jobs([data], tenant=tenant_id, idempotency_key=idempotency_key)
    record = submitted.record
    response.headers["Location"] = f"/v1/jobs/{record.job_id}"
    if not submitted.created:
        response.status_code = 200
    if wait_s:
        # Past the bound on waiting requests the job is answered at once: it is queued already.
        with state.held.hold(Held.WAIT, tenant_id) as waiting:
            if waiting:
                response.headers["Preference-Applied"] = f"wait={wait_s:g}"
                record = _wait_quietly(client, record, wait_s)
        if record.is_terminal:
            response.status_code = 200
    return resource(state, record)


@router.get(
    "/v1/jobs",
    operation_id="listJobs",
    response_model=JobList,
    responses=problem_responses(
        401,
        422,
        429,
        described={404: "No such batch (or not yours)"},
        examples={404: "batch-not-found"},
    ),
    summary="List jobs, newest first",
    description="Your jobs, newest first, a page at a time: follow `next` until it is null.",
)
def list_jobs(
    *,
    tenant_id: Tenant,
    state: State,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status")] = None,
    batch: Annotated[
        str | None, Query(max_length=64, description="Only the jobs of this batch")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=128, description="`next_cursor` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT, description="Jobs per page")] = 50,
) -> JobList:
    client = state.client
    if batch is not None:
        owned_batch(state, batch, tenant_id)
    page = client.list_jobs(
        tenant=tenant_id, status=status, batch_id=batch, cursor=cursor, limit=limit
    )
    next_url = None
    if page.next_cursor:
        query = {"cursor": page.next_cursor, "limit": str(limit)}
        if status:
            query["status"] = status.value
        if batch:
            query["batch"] = batch
        next_url = "/v1/jobs?" + "&".join(f"{k}={v}" for k, v in query.items())
    return JobList(
        jobs=[resource(state, r) for r in page.jobs], next_cursor=page.next_cursor, next=next_url
    )


@router.get(
    "/v1/jobs/{job_id}",
    operation_id="getJob",
    response_model=JobResource,
    responses=problem_responses(401, 429, described={404: _NO_JOB}),
    summary="Get a job",
    description="The job as it is now; once it succeeded, `image_url` is a fresh link to its "
    "image.",
)
def get_job(job_id: JobId, tenant_id: Tenant, state: State) -> JobResource:
    return resource(state, owned_job(state, job_id, tenant_id))


@router.get(
    "/v1/jobs/{job_id}/image",
    operation_id="getJobImage",
    status_code=302,
    response_class=Response,
    responses={
        **IMAGE_RESPONSES,
        **problem_responses(
            401,
            422,
            429,
            described={
                404: f"{_NO_JOB}; or its image is no longer stored",
                409: "The job has no image: not finished yet (`Image not ready`), or it ended "
                "without one (`No image`); read the job for its status",
                503: "The image store did not answer, or cannot sign URLs; wait for Retry-After",
            },
            examples={409: "image-not-ready"},
        ),
    },
    summary="Download a job's image",
    description="Redirects (302) to a short-lived presigned URL of the job's image, which "
    "needs no credentials; or sends the image itself where the service streams images. Only "
    "the job's tenant gets it.",
)
def get_job_image(
    job_id: JobId,
    tenant_id: Tenant,
    state: State,
    if_none_match: Annotated[
        str | None, Header(max_length=256, description=IF_NONE_MATCH_DESCRIPTION)
    ] = None,
) -> Response:
    return image_response(state, owned_job(state, job_id, tenant_id), if_none_match)


@router.post(
    "/v1/jobs/{job_id}/cancel",
    operation_id="cancelJob",
    response_model=JobResource,
    response_description="Canceled: it was waiting, and is final now",
    responses={
        202: {
            "model": JobResource,
            "description": "Running: the cancel is requested; the job stops before its Bedrock "
            "call or its upload",
        },
        **problem_responses(
            401,
            429,
            described={404: _NO_JOB, 409: "The job is already final"},
            examples={409: "already-final"},
        ),
    },
    summary="Cancel a job",
)
def cancel_job(job_id: JobId, tenant_id: Tenant, state: State, response: Response) -> JobResource:
    client = state.client
    job_id = owned_job(state, job_id, tenant_id).job_id
    outcome = client.cancel(job_id)
    if outcome is CancelOutcome.TERMINAL:
        record = client.get(job_id)
        raise ProblemError(
            409,
            "Job already final",
            f"job {job_id} is {record.status.value}; it cannot be canceled",
        )
    if outcome is CancelOutcome.REQUESTED:
        response.status_code = 202
    return resource(state, client.get(job_id))


@router.get(
    "/v1/jobs/{job_id}/events",
    operation_id="streamJobEvents",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": _SSE_EVENT_SCHEMA}},
            "description": "Server-sent events: `status` with the job at once and on every "
            "change, until it is final; a comment line every 15 s while nothing changes",
        },
        **problem_responses(
            401,
            described={
                404: _NO_JOB,
                429: "Too many event streams open (yours, or this API process's); wait for "
                "Retry-After",
            },
            examples={429: "too-many-streams"},
        ),
    },
    response_class=StreamingResponse,
    summary="Follow a job's status (server-sent events)",
)
def job_events(
    job_id: JobId, tenant_id: Tenant, state: State, request: Request
) -> StreamingResponse:
    job_id = owned_job(state, job_id, tenant_id).job_id
    if not state.held.take(Held.STREAM, tenant_id):
        raise ProblemError(
            429,
            "Too many event streams",
            "this tenant, or this API process, has as many event streams open as it may",
            headers={"Retry-After": str(STREAM_RETRY_AFTER_S)},
        )
    token = request.headers.get("authorization", "").partition(" ")[2].strip()
    return StreamingResponse(
        _event_stream(state, job_id, tenant_id, token),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


def _wait_quietly(client: Client, record: JobRecord, wait_s: float) -> JobRecord:
    """The job after up to ``wait_s`` (Prefer: wait); as it was when it is not final by then."""
    try:
        return client.wait(record.job_id, wait_s)
    except (JobTimeoutError, JobNotFoundError, redis.RedisError):
        return record


async def _event_stream(
    state: ApiState, job_id: str, tenant_id: str, token: str
) -> AsyncIterator[str]:
    """``event: status`` with the record on every change, until the job is final or the key is
    revoked. Wakes on the job's own channel; every blocking step runs on a thread, and the
    stream's slot is given back however it ends (a client that goes away included)."""
    client = state.client
    try:
        events = await anyio.to_thread.run_sync(client.reads.subscribe, job_id)
        try:
            last: str | None = None
            quiet_since = key_checked = time.monotonic()
            while True:
                record = await anyio.to_thread.run_sync(client.get, job_id)
                if record.status.value != last:
                    last = record.status.value
                    quiet_since = time.monotonic()
                    yield f"event: status\ndata: {resource(state, record).model_dump_json()}\n\n"
                    if record.is_terminal:
                        return
                elif time.monotonic() - quiet_since > EVENTS_HEARTBEAT_S:
                    quiet_since = time.monotonic()
                    yield ": still waiting\n\n"
                if time.monotonic() - key_checked > KEY_RECHECK_S:
                    key_checked = time.monotonic()
                    if await anyio.to_thread.run_sync(state.api_keys.authenticate, token) is None:
                        yield "event: error\ndata: the API key was revoked\n\n"
                        return
                await anyio.to_thread.run_sync(events.next, 1.0)
        finally:
            await anyio.to_thread.run_sync(events.close)
    finally:
        state.held.give_back(Held.STREAM, tenant_id)
