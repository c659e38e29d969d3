"""``/v1/jobs``: submit (with ``Prefer: wait``, ``Idempotency-Key``, ``Cancel-After``), list,
get, cancel, and follow a job's status as server-sent events."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

import anyio.to_thread
import redis
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from imagegen.errors import FieldError, JobNotFoundError, JobTimeoutError
from imagegen.ids import is_stored_job_id, is_valid_job_id, scoped_job_id
from imagegen.records import JobRecord, JobStatus
from imagegen.store.jobs import CancelOutcome
from producer.api.auth import Tenant
from producer.api.batches import owned_batch
from producer.api.bodies import duration_header_s, job_object, prefer_wait_s, raw_body
from producer.api.limits import Held
from producer.api.problems import PROBLEM_RESPONSES, ProblemError, submission_problems
from producer.api.state import ApiState, State
from producer.client import Client

__all__ = ["JobList", "JobResource", "owned_job", "router"]

router = APIRouter(tags=["jobs"])

EVENTS_HEARTBEAT_S = 15.0
# A stream checks its API key this often, and ends once it is revoked.
KEY_RECHECK_S = 5.0
STREAM_RETRY_AFTER_S = 5
MAX_LIST_LIMIT = 200


class JobResource(JobRecord):
    """A job as the API shows it: its record and where to find it."""

    url: str


class JobList(BaseModel):
    jobs: list[JobResource]
    next_cursor: str | None
    next: str | None


def resource(record: JobRecord) -> JobResource:
    # The record's own fields (not a dump), so the request keeps its model's class.
    return JobResource(**dict(record), url=f"/v1/jobs/{record.job_id}")


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
    raise ProblemError(404, "Job not found", f"no job {job_id}")


# Each event of the stream (before Open API 3.2, `schema` describes one event).
_SSE_EVENT_SCHEMA = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["status"]},
        "data": {"type": "string", "description": "the job, as GET /v1/jobs/{job_id} shows it"},
    },
    "required": ["event", "data"],
}
_JOB_BODY_SCHEMA = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/JobSpec"}}},
}


@router.post(
    "/v1/jobs",
    status_code=202,
    response_model=JobResource,
    responses={
        200: {
            "model": JobResource,
            "description": "Finished in time, or seen before (same Idempotency-Key or job id)",
        },
        **PROBLEM_RESPONSES,
    },
    openapi_extra={"requestBody": _JOB_BODY_SCHEMA},
    summary="Submit a job",
)
def submit_job(
    *,
    request_body: Annotated[bytes, Depends(raw_body)],
    tenant_id: Tenant,
    state: State,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    prefer: Annotated[str | None, Header(max_length=255)] = None,
    cancel_after: Annotated[
        str | None, Header(max_length=32, description="e.g. 10m, 2h, 90s")
    ] = None,
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
    return resource(record)


@router.get(
    "/v1/jobs",
    response_model=JobList,
    responses=PROBLEM_RESPONSES,
    summary="List jobs, newest first",
)
def list_jobs(
    *,
    tenant_id: Tenant,
    state: State,
    status: JobStatus | None = None,
    batch: Annotated[str | None, Query(max_length=64)] = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
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
        jobs=[resource(r) for r in page.jobs], next_cursor=page.next_cursor, next=next_url
    )


@router.get(
    "/v1/jobs/{job_id}",
    response_model=JobResource,
    responses=PROBLEM_RESPONSES,
    summary="Get a job",
)
def get_job(job_id: str, tenant_id: Tenant, state: State) -> JobResource:
    return resource(owned_job(state, job_id, tenant_id))


@router.post(
    "/v1/jobs/{job_id}/cancel",
    response_model=JobResource,
    responses={
        202: {"model": JobResource, "description": "Running: the cancel is requested"},
        **PROBLEM_RESPONSES,
    },
    summary="Cancel a job",
)
def cancel_job(job_id: str, tenant_id: Tenant, state: State, response: Response) -> JobResource:
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
    return resource(client.get(job_id))


@router.get(
    "/v1/jobs/{job_id}/events",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": _SSE_EVENT_SCHEMA}},
            "description": "Server-sent events: one per status change",
        },
        **PROBLEM_RESPONSES,
    },
    response_class=StreamingResponse,
    summary="Follow a job's status (server-sent events)",
)
def job_events(job_id: str, tenant_id: Tenant, state: State, request: Request) -> StreamingResponse:
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
                    yield f"event: status\ndata: {resource(record).model_dump_json()}\n\n"
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
