"""A job keeps its submitter's trace: an HTTP request's ``traceparent`` header, a Python
caller's current context, or an intake message's ``traceparent`` field; the record and
``GET /v1/jobs/{id}`` show its trace id. With tracing off (no SDK), the caller's own
``traceparent`` is what is kept."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from imagegen import tracing
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import JobStore
from imagegen_client import AsyncImagegenClient, ImagegenClient
from producer.api import create_app
from producer.client import Client
from worker.intake import Intake

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
JOB = {"request": {"prompt": "a lighthouse"}}


@pytest.fixture
def redis() -> Any:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def http(settings: Settings, redis: Any) -> Iterator[TestClient]:
    with TestClient(create_app(settings, redis_client=redis)) as client:
        _, key = Client(settings, redis_client=redis).api_keys.create("acme")
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def kept(redis: Any, job_id: str) -> str | None:
    value = redis.hget(keys.job_key(job_id), "traceparent")
    return None if value is None else str(value)


def test_a_submitted_job_keeps_the_requests_trace_and_shows_its_id(
    http: TestClient, redis: Any
) -> None:
    submitted = http.post("/v1/jobs", json=JOB, headers={"traceparent": CALLER})
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["trace_id"] == TRACE_ID
    assert http.get(job["url"]).json()["trace_id"] == TRACE_ID
    assert tracing.trace_id_of(kept(redis, job["job_id"])) == TRACE_ID
    # The field stays small: one traceparent, nothing of the caller's tracestate.
    assert len(kept(redis, job["job_id"]) or "") == 55


def test_without_a_trace_nothing_is_kept(http: TestClient, redis: Any) -> None:
    job = http.post("/v1/jobs", json=JOB).json()
    assert job["trace_id"] is None
    assert http.get(job["url"]).json()["trace_id"] is None
    assert kept(redis, job["job_id"]) is None


@pytest.mark.parametrize(
    "header",
    [
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID}-00f067aa0ba902b7",
        "not a traceparent",
    ],
)
def test_a_malformed_traceparent_header_is_ignored(
    http: TestClient, redis: Any, header: str
) -> None:
    submitted = http.post("/v1/jobs", json=JOB, headers={"traceparent": header})
    assert submitted.status_code == 202
    assert submitted.json()["trace_id"] is None
    assert kept(redis, submitted.json()["job_id"]) is None


def test_every_job_of_a_batch_keeps_the_requests_trace(http: TestClient, redis: Any) -> None:
    body = [JOB, {"request": {"prompt": "a harbour"}, "priority": "interactive"}]
    created = http.post("/v1/batches", json=body, headers={"traceparent": CALLER})
    assert created.status_code == 202, created.text
    for job_id in created.json()["job_ids"]:
        assert http.get(f"/v1/jobs/{job_id}").json()["trace_id"] == TRACE_ID
        assert tracing.trace_id_of(kept(redis, job_id)) == TRACE_ID


def test_a_python_caller_s_current_context_is_the_jobs_trace(
    settings: Settings, redis: Any
) -> None:
    client = Client(settings, redis_client=redis)
    with tracing.continued(CALLER):
        inside = client.submit("a lighthouse", tenant="acme")
    outside = client.submit("a harbour", tenant="acme")
    assert inside.trace_id == TRACE_ID
    assert client.get(inside.job_id).trace_id == TRACE_ID
    assert outside.trace_id is None
    assert client.get(outside.job_id).trace_id is None


def test_the_http_client_passes_its_caller_s_trace_on(http: TestClient) -> None:
    key = http.headers["Authorization"].removeprefix("Bearer ")
    with ImagegenClient(api_key=key, http_client=http) as client:
        with tracing.continued(CALLER):
            inside = client.submit("a lighthouse")
        outside = client.submit("a harbour")
    assert inside.trace_id == TRACE_ID
    assert outside.trace_id is None


def test_the_async_http_client_passes_its_caller_s_trace_on(settings: Settings, redis: Any) -> None:
    app = create_app(settings, redis_client=redis)
    _, key = Client(settings, redis_client=redis).api_keys.create("acme")

    async def submit() -> tuple[str | None, str | None]:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://api") as http,
            AsyncImagegenClient(api_key=key, http_client=http) as client,
        ):
            with tracing.continued(CALLER):
                inside = await client.submit("a lighthouse")
            outside = await client.submit("a harbour")
        return inside.trace_id, outside.trace_id

    assert asyncio.run(submit()) == (TRACE_ID, None)


def test_an_intake_message_s_traceparent_field_is_the_jobs_trace(
    settings: Settings, redis: Any
) -> None:
    messages = [
        {"job_id": "traced", "tenant": "acme", "traceparent": CALLER, **JOB},
        {"job_id": "untraced", "tenant": "acme", **JOB},
        {"job_id": "garbled", "tenant": "acme", "traceparent": 17, **JOB},
    ]
    for message in messages:
        redis.lpush(keys.INTAKE_KEY, json.dumps(message))
    intake = Intake(JobStore(redis, 3600), Dispatch(redis, settings), settings)
    assert intake.read_list() == 3
    reads = JobReads(redis)
    assert reads.get("acme.traced").trace_id == TRACE_ID
    # The field is the trace's, never a field of the job: the job is valid with or without it.
    assert reads.get("acme.traced").status.value == "queued"
    assert reads.get("acme.untraced").trace_id is None
    assert reads.get("acme.garbled").trace_id is None
    assert reads.get("acme.garbled").status.value == "queued"
