"""The HTTP API's Python client (``imagegen_client``), sync and async, against the API in process
(FastAPI on fakeredis, no worker: a test finishes jobs the way a worker would) and against fake
servers for the retries. Downloads, uploads and real jobs: tests/integration/test_http_client.py.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, TypeVar

import fakeredis
import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

import imagegen.records
from imagegen.settings import Settings
from imagegen.store.jobs import ClaimState
from imagegen_client import (
    ApiError,
    AsyncImagegenClient,
    AuthenticationError,
    Batch,
    BatchCreated,
    Chain,
    ChainCreated,
    ChainFailedError,
    ChainStep,
    ConflictError,
    ImagegenClient,
    InvalidRequestError,
    Job,
    JobFailedError,
    JobPage,
    JobStatus,
    Model,
    NotFoundError,
    Problem,
    ProblemField,
    RateLimitedError,
    RetryPolicy,
    ServiceUnavailableError,
    Upload,
    WaitTimeoutError,
    WebhookSecrets,
)
from imagegen_client import records as client_records
from imagegen_client.retries import retry_after_s
from producer.api import create_app
from producer.client import Client
from producer.operator import OperatorClient

CUTOUT = "us.stability.stable-image-remove-background-v1:0"
T = TypeVar("T")


@dataclass
class Api:
    """The API in process, a Redis-level client to play the worker, and an operator."""

    http: TestClient
    app: Any
    client: Client
    operator: OperatorClient

    def key(self, tenant: str = "acme") -> str:
        _, key = self.operator.api_keys.create(tenant)
        return key

    def finish(self, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
        """End a job as a worker would (no image is stored: records only)."""
        final = imagegen.records.JobStatus(status.value)
        record = self.client.get(job_id)
        self.client.dispatch.release(record.model_id)
        claim = self.client.jobs.claim(job_id, "worker-1", 60_000)
        assert claim.state is ClaimState.CLAIMED, claim
        fields: dict[str, Any] = {"error_code": "ModelErrorException", "error_message": "boom"}
        if status is JobStatus.SUCCEEDED:
            key = f"images/{job_id}.png"
            fields = {"s3_bucket": "test-bucket", "s3_key": key, "s3_uri": f"s3://b/{key}"}
        self.client.jobs.finish(job_id, "worker-1", final, fields)

    def finish_later(self, job_id: str, status: JobStatus = JobStatus.SUCCEEDED) -> None:
        """Finish the job from another thread once it exists, while the client waits."""

        def run() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.client.get_many([job_id])[0] is not None:
                    time.sleep(0.3)
                    self.finish(job_id, status)
                    return
                time.sleep(0.05)

        threading.Thread(target=run, daemon=True).start()


@pytest.fixture
def api(settings: Settings) -> Iterator[Api]:
    settings = settings.model_copy(update={"max_queued_per_tenant": 3, "max_batch_size": 20})
    redis = fakeredis.FakeRedis(decode_responses=True)
    app = create_app(settings, redis_client=redis)
    with TestClient(app) as http:
        yield Api(
            http,
            app,
            Client(settings, redis_client=redis),
            OperatorClient(settings, redis_client=redis),
        )


@pytest.fixture
def sync(api: Api) -> Iterator[ImagegenClient]:
    with ImagegenClient(api_key=api.key(), http_client=api.http, max_poll_interval_s=0.1) as c:
        yield c


def run_async(
    api: Api, use: Callable[[AsyncImagegenClient], Awaitable[T]], key: str | None = None
) -> T:
    """Run ``use`` with an async client on the same app (httpx2's ASGI transport)."""

    async def main() -> T:
        transport = httpx.ASGITransport(app=api.app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
            AsyncImagegenClient(
                api_key=key or api.key(), http_client=http, max_poll_interval_s=0.1
            ) as client,
        ):
            return await use(client)

    return asyncio.run(main())


# -- the same client, twice ------------------------------------------------------------------


def public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_")
    }


def test_the_sync_and_async_clients_have_the_same_methods() -> None:
    sync_methods = public_methods(ImagegenClient)
    async_methods = public_methods(AsyncImagegenClient)
    assert sync_methods.keys() == async_methods.keys()
    for name, signature in sync_methods.items():
        other = async_methods[name]
        assert list(signature.parameters.values()) == list(other.parameters.values()), name
        member = getattr(AsyncImagegenClient, name)
        assert inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member), name
    backend_uses = {"submit", "get", "list", "iter_jobs", "cancel", "wait", "run", "stream"}
    backend_uses |= {"download", "submit_batch", "get_batch", "wait_batch", "submit_chain"}
    backend_uses |= {"get_chain", "wait_chain", "download_chain", "upload", "models"}
    assert backend_uses <= sync_methods.keys()


def test_the_records_are_the_documents_schemas(api: Api) -> None:
    """Each record has exactly the fields the served OpenAPI document gives its schema, so a
    field the API adds or renames fails here before it surprises a backend."""
    schemas = api.http.get("/openapi.json").json()["components"]["schemas"]
    pairs = {
        Job: "JobResource",
        JobPage: "JobList",
        BatchCreated: "BatchCreated",
        Batch: "BatchResource",
        ChainCreated: "ChainCreated",
        Chain: "ChainResource",
        ChainStep: "ChainStepResource",
        Upload: "Upload",
        Model: "ModelInfo",
        WebhookSecrets: "SigningSecretsResource",
        Problem: "Problem",
        ProblemField: "ProblemField",
        client_records.AttemptEntry: "AttemptEntry",
        client_records.WebhookDelivery: "WebhookDelivery",
        client_records.DeliveryAttempt: "DeliveryAttempt",
    }
    for record, name in pairs.items():
        assert set(record.model_fields) == set(schemas[name]["properties"]), name
        required = {f for f, info in record.model_fields.items() if info.is_required()}
        assert required <= set(schemas[name].get("required", [])), name
    assert [s.value for s in JobStatus] == [s.value for s in imagegen.records.JobStatus]
    assert schemas["JobStatus"]["enum"] == [s.value for s in imagegen.records.JobStatus]


# -- jobs ------------------------------------------------------------------------------------


def test_submit_get_list_and_cancel(api: Api, sync: ImagegenClient) -> None:
    job = sync.submit("a lighthouse", aspect_ratio="16:9", metadata={"order": 7}, job_id="o-1")
    assert (job.status, job.tenant, job.metadata) == (JobStatus.QUEUED, "acme", {"order": 7})
    assert job.request == {**(job.request or {}), "prompt": "a lighthouse", "aspect_ratio": "16:9"}
    assert job.url == f"/v1/jobs/{job.job_id}"
    assert sync.get("o-1").job_id == job.job_id == "acme.o-1"
    other = sync.submit({"request": {"prompt": "a whole job"}, "priority": "batch"})
    assert other.priority == "batch"
    page = sync.list(limit=1)
    assert [j.job_id for j in page.jobs] == [other.job_id]
    assert page.next_cursor is not None
    assert [j.job_id for j in sync.iter_jobs(page_size=1)] == [other.job_id, job.job_id]
    canceled = sync.cancel(job.job_id)
    assert canceled.status is JobStatus.CANCELED
    assert [j.job_id for j in sync.iter_jobs(status="canceled")] == [job.job_id]
    with pytest.raises(ConflictError, match="canceled") as found:
        sync.cancel(job.job_id)
    assert found.value.status == 409


def test_the_apis_problems_are_typed_errors_naming_each_field(
    api: Api, sync: ImagegenClient
) -> None:
    with pytest.raises(InvalidRequestError) as found:
        sync.submit("", aspect_ratio="4:3")
    assert {e.field for e in found.value.errors} == {"request.prompt", "request.aspect_ratio"}
    assert "request.aspect_ratio" in str(found.value)
    with pytest.raises(NotFoundError):
        sync.get("no-such-job")
    with pytest.raises(TypeError, match="whole job"):
        sync.submit({"request": {"prompt": "x"}}, model_id=CUTOUT)
    with (
        ImagegenClient(api_key="imk_wrong", http_client=api.http) as stranger,
        pytest.raises(AuthenticationError),
    ):
        stranger.get("anything")


def test_wait_and_run_return_the_succeeded_job(api: Api, sync: ImagegenClient) -> None:
    job = sync.submit("a fox")
    api.finish_later(job.job_id)
    done = sync.wait(job.job_id, timeout_s=10)
    assert done.status is JobStatus.SUCCEEDED
    assert done.s3_key == f"images/{job.job_id}.png"
    api.finish_later("acme.ran")
    assert sync.run("a whale", job_id="ran", timeout_s=10).succeeded


def test_wait_raises_with_the_job_when_it_ends_without_an_image(
    api: Api, sync: ImagegenClient
) -> None:
    job = sync.submit("a fox")
    api.finish_later(job.job_id, JobStatus.FAILED)
    with pytest.raises(JobFailedError, match="ModelErrorException") as found:
        sync.wait(job.job_id, timeout_s=10)
    assert found.value.job.status is JobStatus.FAILED
    assert found.value.job.error_message == "boom"


def test_wait_gives_up_after_its_timeout_with_the_job_as_last_seen(sync: ImagegenClient) -> None:
    job = sync.submit("a fox")
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as found:
        sync.wait(job.job_id, timeout_s=0.4)
    assert 0.4 <= time.monotonic() - started < 3
    assert found.value.job is not None
    assert found.value.job.status is JobStatus.QUEUED
    assert isinstance(found.value, TimeoutError)


def test_stream_follows_the_job_to_its_end(api: Api, sync: ImagegenClient) -> None:
    job = sync.submit("a fox")
    sync.cancel(job.job_id)
    assert [j.status for j in sync.stream(job.job_id)] == [JobStatus.CANCELED]


def test_batches_and_chains(api: Api, sync: ImagegenClient) -> None:
    created = sync.submit_batch([{"request": {"prompt": f"picture {i}"}} for i in range(3)])
    assert created.size == 3
    batch = sync.get_batch(created.batch_id)
    assert (batch.counts, batch.is_finished) == ({"queued": 3}, False)
    for job_id in created.job_ids:
        api.finish(job_id)
    assert sync.wait_batch(created.batch_id, timeout_s=5).counts == {"succeeded": 3}
    listed = sync.iter_jobs(batch_id=created.batch_id)
    assert sorted(j.job_id for j in listed) == sorted(created.job_ids)

    chain = sync.submit_chain(
        [
            {"request": {"prompt": "a red apple"}},
            {"model_id": CUTOUT, "request": {"image": {"step": 0}}},
        ]
    )
    assert [s.status for s in sync.get_chain(chain.chain_id).steps] == [JobStatus.QUEUED] * 2
    api.finish(chain.job_ids[0], JobStatus.FAILED)
    with pytest.raises(ChainFailedError, match="failed") as found:
        sync.wait_chain(chain.chain_id, timeout_s=5)
    assert found.value.chain.status == "failed"


def test_models_and_webhook_secrets(sync: ImagegenClient) -> None:
    models = {m.model_id: m for m in sync.models()}
    assert models[CUTOUT].input_images == ["image"]
    secrets = sync.webhook_secrets()
    assert secrets.secrets[0].startswith("whsec_")


def test_the_async_client_does_the_same(api: Api) -> None:
    key = api.key()

    async def use(client: AsyncImagegenClient) -> None:
        job = await client.submit("a fox", job_id="async-1")
        assert (await client.get("async-1")).job_id == "acme.async-1"
        assert [j.job_id async for j in client.iter_jobs(page_size=1)] == [job.job_id]
        assert (await client.list()).jobs[0].job_id == job.job_id
        api.finish_later(job.job_id)
        assert (await client.wait(job.job_id, timeout_s=10)).succeeded
        with pytest.raises(ConflictError):
            await client.cancel(job.job_id)
        assert [j.status async for j in client.stream(job.job_id)] == [JobStatus.SUCCEEDED]
        api.finish_later("acme.async-ran", JobStatus.FAILED)
        with pytest.raises(JobFailedError) as found:
            await client.run("a whale", job_id="async-ran", timeout_s=10)
        assert found.value.job.error_code == "ModelErrorException"
        waiting = await client.submit("a cat")
        with pytest.raises(WaitTimeoutError):
            await client.wait(waiting.job_id, timeout_s=0.3)
        batch = await client.submit_batch([{"request": {"prompt": "b"}}])
        assert (await client.get_batch(batch.batch_id)).size == 1
        assert any(m.model_id == CUTOUT for m in await client.models())
        assert (await client.webhook_secrets()).secrets

    run_async(api, use, key)


# -- retries ----------------------------------------------------------------------------------


def test_a_429_from_the_api_itself_is_retried_after_its_retry_after(
    api: Api, sync: ImagegenClient
) -> None:
    """Three open jobs is the tenant's cap here: the fourth is refused (429, Retry-After: 1)
    until one ends; the client waits and sends it again."""
    first = sync.submit("one")
    sync.submit("two")
    sync.submit("three")
    with (
        ImagegenClient(
            api_key=api.key(), http_client=api.http, retry=RetryPolicy(max_retries=0)
        ) as impatient,
        pytest.raises(RateLimitedError) as refused,
    ):
        impatient.submit("four")
    assert refused.value.retry_after_s == 1
    assert refused.value.title == "Too many jobs waiting"
    threading.Timer(0.3, api.client.cancel, [first.job_id]).start()
    started = time.monotonic()
    assert sync.submit("four").status is JobStatus.QUEUED
    assert time.monotonic() - started >= 1.0


@dataclass
class FakeServer:
    """Answers each request with the next of ``answers``; keeps when each came."""

    answers: list[httpx.Response]
    seen: list[float]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(time.monotonic())
        return self.answers.pop(0)


def job_answer() -> httpx.Response:
    body = {
        "job_id": "j1",
        "status": "queued",
        "model_id": "stability.stable-image-core-v1:0",
        "priority": "interactive",
        "request": {"prompt": "x"},
        "created_at": "2026-11-25T10:00:00Z",
        "url": "/v1/jobs/j1",
    }
    return httpx.Response(202, json=body)


def refusal(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    problem = {"title": "Busy", "status": status, "detail": "wait", "errors": []}
    return httpx.Response(
        status, json=problem, headers={**headers, "content-type": "application/problem+json"}
    )


def fake_sync(server: FakeServer, retry: RetryPolicy | None = None) -> ImagegenClient:
    http = httpx.Client(transport=httpx.MockTransport(server), base_url="http://api.test")
    return ImagegenClient(api_key="k", http_client=http, retry=retry)


def fake_async(server: FakeServer, retry: RetryPolicy | None = None) -> AsyncImagegenClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(server), base_url="http://api.test")
    return AsyncImagegenClient(api_key="k", http_client=http, retry=retry)


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_503_are_retried_after_retry_after_sync_and_async(status: int) -> None:
    server = FakeServer([refusal(status, "1"), job_answer()], [])
    assert fake_sync(server).submit("x").job_id == "j1"
    assert 1.0 <= server.seen[1] - server.seen[0] < 2.0
    server = FakeServer([refusal(status, "1"), job_answer()], [])
    assert asyncio.run(fake_async(server).get("j1")).job_id == "j1"
    assert 1.0 <= server.seen[1] - server.seen[0] < 2.0


def test_retries_are_bounded() -> None:
    # Without Retry-After: the backoff, doubling, and no more than max_retries.
    server = FakeServer([refusal(503)] * 3, [])
    with pytest.raises(ServiceUnavailableError):
        fake_sync(server, RetryPolicy(max_retries=2, backoff_s=0.05)).get("j1")
    gaps = [b - a for a, b in zip(server.seen, server.seen[1:], strict=False)]
    assert len(server.seen) == 3
    assert 0.05 <= gaps[0] < 0.5
    assert 0.1 <= gaps[1] < 0.6
    # A Retry-After beyond max_wait_s is not waited: the error says how long the server asked.
    server = FakeServer([refusal(429, "3600")], [])
    with pytest.raises(RateLimitedError) as found:
        asyncio.run(fake_async(server).get("j1"))
    assert found.value.retry_after_s == 3600
    assert len(server.seen) == 1
    # Other errors are never retried.
    server = FakeServer([refusal(500, "1")], [])
    with pytest.raises(ApiError, match="500 Busy"):
        fake_sync(server).get("j1")
    assert len(server.seen) == 1


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    now = time.time()
    later = format_datetime(datetime.fromtimestamp(now, UTC) + timedelta(seconds=30), usegmt=True)
    assert retry_after_s("7") == 7
    assert retry_after_s(later, now=now) == pytest.approx(30, abs=1)
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None


def test_a_request_past_its_timeout_is_a_timeout_error() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    http = httpx.Client(transport=httpx.MockTransport(slow), base_url="http://api.test")
    with pytest.raises(TimeoutError, match="GET /v1/jobs/j1"):
        ImagegenClient(api_key="k", http_client=http, timeout_s=0.5).get("j1")


def test_the_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IMAGEGEN_API_KEY", raising=False)
    monkeypatch.setenv("IMAGEGEN_API_URL", "http://api.test/")
    with pytest.raises(ValueError, match="IMAGEGEN_API_KEY"):
        ImagegenClient()
    monkeypatch.setenv("IMAGEGEN_API_KEY", "k")
    with ImagegenClient() as client:
        assert (client.config.base_url, client.config.api_key) == ("http://api.test", "k")
