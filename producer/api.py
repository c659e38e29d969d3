"""The HTTP API: submit, follow, list and cancel jobs and batches from any backend.

``imagegen api --host 0.0.0.0 --port 8000`` serves it with uvicorn; ``/docs`` shows it. Every
call but ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <API key>``; a tenant sees
only its own jobs. Every 4xx answer is ``application/problem+json`` naming the field and the rule.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import anyio.to_thread
import redis
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ValidationError

from producer import keys
from producer.api_support import (
    PROBLEM_RESPONSES,
    BodyLimitMiddleware,
    Problem,
    ProblemError,
    authenticate_client,
    install_problem_handlers,
    parse_duration_s,
    parse_prefer_wait_s,
    submission_problems,
)
from producer.apikeys import ApiKeys
from producer.client import BatchStatus, Client
from producer.contract import JobSpec, validation_errors
from producer.errors import FieldError, JobNotFoundError, JobTimeoutError
from producer.jobs import JobRecord, JobStatus
from producer.logs import configure_logging
from producer.messages import JOB_QUEUES
from producer.metrics import FleetCollector
from producer.settings import Settings, get_settings
from producer.store import CancelOutcome

__all__ = ["JobList", "JobResource", "create_app"]

EVENTS_HEARTBEAT_S = 15.0
# Threads for blocking endpoints (Prefer: wait, event streams) beyond anyio's default 40.
API_THREADS = 200
MAX_LIST_LIMIT = 200


class JobResource(JobRecord):
    """A job as the API shows it: its record and where to find it."""

    url: str


class JobList(BaseModel):
    jobs: list[JobResource]
    next_cursor: str | None
    next: str | None


class BatchCreated(BaseModel):
    batch_id: str
    url: str
    size: int
    job_ids: list[str]


class BatchResource(BatchStatus):
    url: str


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


def current_tenant(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
) -> str:
    state = request.app.state
    return authenticate_client(request, authorization, state.api_keys, state.redis, state.settings)


Tenant = Annotated[str, Depends(current_tenant)]


def _resource(record: JobRecord) -> JobResource:
    return JobResource(**record.model_dump(), url=f"/v1/jobs/{record.job_id}")


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
_BATCH_BODY_SCHEMA = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/JobSpec"}}
        },
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}


def create_app(  # noqa: PLR0915
    settings: Settings | None = None, *, redis_client: Any = None
) -> FastAPI:
    """The API; ``redis_client`` (decode_responses=True) replaces the one from the settings."""
    settings = settings or get_settings()
    redis_client = redis_client or redis.Redis.from_url(settings.redis_url, decode_responses=True)
    client = Client(settings, redis_client=redis_client)
    api_keys = ApiKeys(redis_client)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = API_THREADS
        yield
        redis_client.close()

    app = FastAPI(
        title="bedrock-imagegen",
        version="1",
        description=__doc__,
        openapi_tags=[{"name": "jobs"}, {"name": "batches"}, {"name": "health"}],
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    install_problem_handlers(app)

    app.state.api_keys = api_keys
    app.state.redis = redis_client
    app.state.settings = settings

    def owned(job_id: str, tenant_id: str) -> JobRecord:
        try:
            record = client.get(job_id)
        except JobNotFoundError:
            record = None
        if record is None or record.tenant != tenant_id:
            raise ProblemError(404, "Job not found", f"no job {job_id}")
        return record

    # -- jobs --------------------------------------------------------------------------------

    @app.post(
        "/v1/jobs",
        status_code=202,
        response_model=JobResource,
        tags=["jobs"],
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
        request_body: Annotated[bytes, Depends(_raw_body)],
        tenant_id: Tenant,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
        prefer: Annotated[str | None, Header()] = None,
        cancel_after: Annotated[str | None, Header(description="e.g. 10m, 2h, 90s")] = None,
    ) -> JobResource:
        data = _json_object(request_body)
        if cancel_after is not None:
            if "expires_at" in data:
                raise ProblemError(
                    400,
                    "Conflicting deadlines",
                    "give expires_at or Cancel-After, not both",
                    [FieldError("Cancel-After", "conflicts with expires_at")],
                )
            seconds = parse_duration_s(cancel_after, "Cancel-After")
            data["expires_at"] = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
        wait_s = parse_prefer_wait_s(prefer, settings.api_max_wait_s)
        with submission_problems("Invalid job", "the job was refused; see errors"):
            [submitted] = client.create_jobs(
                [data], tenant=tenant_id, idempotency_key=idempotency_key
            )
        record = submitted.record
        if record.tenant != tenant_id:  # someone else's job id
            raise ProblemError(409, "Conflict", f"job id {record.job_id} is taken")
        response.headers["Location"] = f"/v1/jobs/{record.job_id}"
        if not submitted.created:
            response.status_code = 200
        if wait_s:
            response.headers["Preference-Applied"] = f"wait={wait_s:g}"
            record = _wait_quietly(client, record, wait_s)
            if record.is_terminal:
                response.status_code = 200
        return _resource(record)

    @app.get(
        "/v1/jobs",
        response_model=JobList,
        tags=["jobs"],
        responses=PROBLEM_RESPONSES,
        summary="List jobs, newest first",
    )
    def list_jobs(
        *,
        tenant_id: Tenant,
        status: JobStatus | None = None,
        batch: Annotated[str | None, Query(max_length=64)] = None,
        cursor: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
    ) -> JobList:
        if batch is not None:
            owned_batch(batch, tenant_id)
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
            jobs=[_resource(r) for r in page.jobs], next_cursor=page.next_cursor, next=next_url
        )

    @app.get(
        "/v1/jobs/{job_id}",
        response_model=JobResource,
        tags=["jobs"],
        responses=PROBLEM_RESPONSES,
        summary="Get a job",
    )
    def get_job(job_id: str, tenant_id: Tenant) -> JobResource:
        return _resource(owned(job_id, tenant_id))

    @app.post(
        "/v1/jobs/{job_id}/cancel",
        response_model=JobResource,
        tags=["jobs"],
        responses={
            202: {"model": JobResource, "description": "Running: the cancel is requested"},
            **PROBLEM_RESPONSES,
        },
        summary="Cancel a job",
    )
    def cancel_job(job_id: str, tenant_id: Tenant, response: Response) -> JobResource:
        owned(job_id, tenant_id)
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
        return _resource(client.get(job_id))

    @app.get(
        "/v1/jobs/{job_id}/events",
        tags=["jobs"],
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
    def job_events(job_id: str, tenant_id: Tenant) -> StreamingResponse:
        owned(job_id, tenant_id)
        return StreamingResponse(
            _event_stream(client, redis_client, job_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    # -- batches -----------------------------------------------------------------------------

    def owned_batch(batch_id: str, tenant_id: str) -> BatchStatus:
        try:
            batch = client.batch(batch_id)
        except JobNotFoundError:
            batch = None
        if batch is None or batch.tenant != tenant_id:
            raise ProblemError(404, "Batch not found", f"no batch {batch_id}")
        return batch

    @app.post(
        "/v1/batches",
        status_code=202,
        response_model=BatchCreated,
        tags=["batches"],
        responses=PROBLEM_RESPONSES,
        openapi_extra={"requestBody": _BATCH_BODY_SCHEMA},
        summary="Submit a batch (JSON array or JSON lines)",
    )
    def submit_batch(
        *,
        request: Request,
        request_body: Annotated[bytes, Depends(_raw_body)],
        tenant_id: Tenant,
        response: Response,
    ) -> BatchCreated:
        items = _batch_items(request_body, request.headers.get("content-type", ""))
        with submission_problems("Invalid batch", "no job was queued; see errors"):
            batch_id, records = client.submit_batch(items, tenant=tenant_id)
        response.headers["Location"] = f"/v1/batches/{batch_id}"
        return BatchCreated(
            batch_id=batch_id,
            url=f"/v1/batches/{batch_id}",
            size=len(records),
            job_ids=[r.job_id for r in records],
        )

    @app.get(
        "/v1/batches/{batch_id}",
        response_model=BatchResource,
        tags=["batches"],
        responses=PROBLEM_RESPONSES,
        summary="A batch's progress",
    )
    def get_batch(batch_id: str, tenant_id: Tenant) -> BatchResource:
        batch = owned_batch(batch_id, tenant_id)
        return BatchResource(**batch.model_dump(), url=f"/v1/batches/{batch_id}")

    registry = CollectorRegistry()
    registry.register(FleetCollector(redis_client, settings))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # -- health ------------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["health"], summary="The process is up")
    def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "Not ready"}},
        summary="Redis answers and workers have declared the queues",
    )
    def readyz() -> JSONResponse:
        checks: dict[str, str] = {}
        try:
            redis_client.ping()
            checks["redis"] = "ok"
            for queue in JOB_QUEUES:
                declared = redis_client.exists(f"_kombu.binding.{queue}")
                checks[f"queue {queue}"] = "ok" if declared else "not declared by any worker"
        except redis.RedisError as e:
            checks["redis"] = f"unreachable: {e}"
        ready = all(value == "ok" for value in checks.values())
        health = Health(status="ok" if ready else "not ready", checks=checks)
        return JSONResponse(health.model_dump(), status_code=200 if ready else 503)

    # The job body is read by our own code (so bad input gets our problem+json); its schema
    # is still published.
    original_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original_openapi()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            spec_schema = JobSpec.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(spec_schema.pop("$defs", {}))
            components["JobSpec"] = spec_schema
            components["Problem"] = Problem.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"null")
    except ValueError as e:
        raise ProblemError(400, "Body is not JSON", str(e), [FieldError("body", str(e))]) from e
    if not isinstance(data, dict):
        raise ProblemError(
            400,
            "Body is not a JSON object",
            "send one job as a JSON object",
            [FieldError("body", "must be a JSON object")],
        )
    return data


def _batch_items(body: bytes, content_type: str) -> list[dict[str, Any]]:
    if "ndjson" in content_type or "jsonl" in content_type:
        items = []
        for number, line in enumerate(body.decode(errors="replace").splitlines(), start=1):
            if line.strip():
                try:
                    items.append(json.loads(line))
                except ValueError as e:
                    raise ProblemError(
                        400, "Line is not JSON", str(e), [FieldError(f"line {number}", str(e))]
                    ) from e
    else:
        try:
            items = json.loads(body or b"null")
        except ValueError as e:
            raise ProblemError(400, "Body is not JSON", str(e), [FieldError("body", str(e))]) from e
        if not isinstance(items, list):
            raise ProblemError(
                400,
                "Body is not a JSON array",
                "send a JSON array of jobs",
                [FieldError("body", "must be a JSON array (or JSON lines)")],
            )
    bad = [
        FieldError(f"{index}", "must be a JSON object")
        for index, item in enumerate(items)
        if not isinstance(item, dict)
    ]
    if bad:
        raise ProblemError(422, "Invalid batch", "every job must be a JSON object", bad)
    return items


def _wait_quietly(client: Client, record: JobRecord, wait_s: float) -> JobRecord:
    """The job after up to ``wait_s`` (Prefer: wait); as it was when it is not final by then."""
    try:
        return client.wait(record.job_id, wait_s)
    except (JobTimeoutError, JobNotFoundError):
        return record


def _event_stream(client: Client, redis_client: Any, job_id: str) -> Iterator[str]:
    """``event: status`` with the record on every change, until the job is final."""
    with redis_client.pubsub(ignore_subscribe_messages=True) as events:
        events.subscribe(keys.EVENTS_CHANNEL)
        last: str | None = None
        quiet_since = time.monotonic()
        while True:
            record = client.get(job_id)
            if record.status.value != last:
                last = record.status.value
                quiet_since = time.monotonic()
                yield f"event: status\ndata: {_resource(record).model_dump_json()}\n\n"
                if record.is_terminal:
                    return
            elif time.monotonic() - quiet_since > EVENTS_HEARTBEAT_S:
                quiet_since = time.monotonic()
                yield ": still waiting\n\n"
            events.get_message(timeout=1.0)


def app_from_env() -> FastAPI:
    """The app for ``uvicorn producer.api:app_from_env --factory``."""
    try:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)
        return create_app(settings)
    except ValidationError as e:
        details = "; ".join(str(error) for error in validation_errors(e))
        msg = f"bad settings: {details}"
        raise SystemExit(msg) from e
