"""One job's spans, exported in memory: the API request, the submission, each wait and attempt,
the Bedrock calls, the upload and each webhook POST, named and attributed by the OpenTelemetry
conventions and linked into the caller's trace. The API runs in process, Bedrock is the emulator
over HTTP (a first one that fails, then a good one), S3 is moto, and the webhook goes to a real
receiver on 127.0.0.1 (a 503, then a 200)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import fakeredis
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from imagegen import tracing
from imagegen.bedrock import make_bedrock_client
from imagegen.records import JobStatus
from imagegen.redis import keys
from imagegen.settings import Settings
from producer.api import create_app
from producer.client import Client
from tests.support import Receiver
from worker import metrics
from worker.pipeline import RETRY_SCHEDULED, Services, run_job
from worker.webhooks import WebhookSender

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
CALLER = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


@pytest.fixture
def provider() -> TracerProvider:
    return TracerProvider()


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch, provider: TracerProvider) -> InMemorySpanExporter:
    """Every span, ours and the API's, goes to memory through a provider of this test's own."""
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "TRACER", provider.get_tracer("imagegen"))
    return exporter


@dataclass
class Stack:
    http: TestClient
    services: Services
    sender: WebhookSender
    receiver: Receiver
    redis: Any
    good_bedrock: Any


@pytest.fixture
def stack(
    settings: Settings, start_emulator: Any, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The API in process and what a worker has; without ``exported``, no SDK anywhere."""
    provider = request.getfixturevalue("provider") if "exported" in request.fixturenames else None
    settings = settings.model_copy(
        update={
            "bedrock_endpoint_url": start_emulator(fault_rates={"unavailable": 1.0}),
            "webhook_allow_http": True,
            "webhook_allowed_hosts": ("127.0.0.1",),
            "webhook_retry_schedule_s": (0.0, 0.0, 0.0),
            "webhook_jitter_fraction": 0.0,
        }
    )
    good = settings.model_copy(update={"bedrock_endpoint_url": start_emulator()})
    redis = fakeredis.FakeRedis(decode_responses=True)
    receiver = Receiver()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="test-bucket")
        services = Services.on(
            redis,
            settings,
            bedrock=make_bedrock_client(settings, max_pool_connections=2),
            s3=s3,
        )
        app = create_app(settings, redis_client=redis, tracer_provider=provider)
        with TestClient(app) as http:
            _, key = Client(settings, redis_client=redis).api_keys.create("acme")
            http.headers["Authorization"] = f"Bearer {key}"
            yield Stack(
                http,
                services,
                WebhookSender(redis, settings, s3),
                receiver,
                redis,
                make_bedrock_client(good, max_pool_connections=2),
            )
    receiver.stop()


def released(stack: Stack, job_id: str) -> None:
    key = keys.job_key(job_id)
    deadline = time.monotonic() + 5
    while stack.redis.hget(key, "place") in ("waiting", "delayed"):
        assert time.monotonic() < deadline, f"{job_id} was never released"
        stack.services.dispatch.release(stack.redis.hget(key, "model_id"))
        time.sleep(0.01)


def exemplars(histogram: Any, **labels: str) -> list[dict[str, str]]:
    """The exemplars of the histogram's buckets for these labels."""
    return [
        dict(sample.exemplar.labels)
        for metric in histogram.collect()
        for sample in metric.samples
        if sample.exemplar is not None and labels.items() <= sample.labels.items()
    ]


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def ancestors(span: ReadableSpan, spans: list[ReadableSpan]) -> list[int]:
    """The span ids from ``span``'s parent up to the trace's root (or the caller's span)."""
    by_id = {s.context.span_id: s for s in spans}
    found = []
    parent = parent_of(span)
    while parent is not None:
        found.append(parent)
        above = by_id.get(parent)
        parent = parent_of(above) if above else None
    return found


def test_one_jobs_spans_form_one_trace_from_the_request_to_its_webhooks(
    stack: Stack, exported: InMemorySpanExporter
) -> None:
    stack.receiver.script("/hook", [(503, {}, 0.0), (200, {}, 0.0)])
    body = {"request": {"prompt": "a lighthouse"}, "webhook_url": stack.receiver.url("/hook")}
    submitted = stack.http.post("/v1/jobs", json=body, headers={"traceparent": CALLER})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]
    assert submitted.json()["trace_id"] == TRACE_ID

    released(stack, job_id)
    assert run_job(job_id, stack.services, "worker-1").status == RETRY_SCHEDULED
    released(stack, job_id)
    services = dataclasses.replace(stack.services, bedrock=stack.good_bedrock)
    assert run_job(job_id, services, "worker-1").status == "succeeded"
    delivery_id = f"{job_id}:job.succeeded"
    assert stack.sender.deliver(delivery_id).outcome == "retry"
    assert stack.sender.deliver(delivery_id).outcome == "delivered"

    spans = list(exported.get_finished_spans())
    # Every span is in the caller's trace.
    assert {f"{span.context.trace_id:032x}" for span in spans} == {TRACE_ID}

    [server] = named(spans, "POST /v1/jobs")
    assert server.kind is SpanKind.SERVER
    assert parent_of(server) == int(CALLER_SPAN, 16)
    assert server.attributes is not None
    assert server.attributes["http.request.method"] == "POST"
    assert server.attributes["http.route"] == "/v1/jobs"
    assert server.attributes["http.response.status_code"] == 202

    [send] = named(spans, "send interactive")
    assert send.kind is SpanKind.PRODUCER
    # Under the request's span (FastAPI's endpoint span between them).
    assert ancestors(send, spans)[-2:] == [server.context.span_id, int(CALLER_SPAN, 16)]
    assert send.attributes is not None
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.destination.name"] == "interactive"
    assert send.attributes["messaging.message.id"] == job_id
    assert send.attributes["imagegen.tenant"] == "acme"
    # The job keeps the submission's span: what its worker and webhook spans hang under.
    kept = stack.redis.hget(keys.job_key(job_id), "traceparent")
    assert kept == f"00-{TRACE_ID}-{send.context.span_id:016x}-01"

    waits = named(spans, "wait interactive")
    assert [w.attributes["imagegen.wait.since"] for w in waits if w.attributes] == [
        "submit",
        "retry",
    ]
    first_wait = waits[0]
    assert first_wait.attributes is not None
    assert first_wait.attributes["imagegen.queue.position"] == 1
    assert first_wait.attributes["imagegen.tenant.share"] == 1.0
    assert first_wait.attributes["imagegen.tenant"] == "acme"
    # The first wait starts at the submission, not when the worker recorded it.
    assert first_wait.start_time is not None
    assert send.start_time is not None
    assert abs(first_wait.start_time - send.start_time) < 5_000_000  # within 5 ms

    attempts = named(spans, "process interactive")
    assert len(attempts) == 2
    for number, attempt in enumerate(attempts, start=1):
        assert attempt.kind is SpanKind.CONSUMER
        assert parent_of(attempt) == send.context.span_id
        assert attempt.attributes is not None
        assert attempt.attributes["messaging.operation.type"] == "process"
        assert attempt.attributes["messaging.message.id"] == job_id
        assert attempt.attributes["imagegen.attempt"] == number
    assert attempts[0].attributes is not None
    assert attempts[0].attributes["imagegen.job.outcome"] == RETRY_SCHEDULED
    assert attempts[0].attributes["error.type"] == "ServiceUnavailableException"
    assert attempts[0].status.status_code is StatusCode.ERROR
    assert attempts[1].attributes is not None
    assert attempts[1].attributes["imagegen.job.outcome"] == "succeeded"

    calls = named(spans, "BedrockRuntime.InvokeModel")
    assert [parent_of(call) for call in calls] == [a.context.span_id for a in attempts]
    outcomes = [c.attributes["imagegen.bedrock.outcome"] for c in calls if c.attributes]
    assert outcomes == ["ServiceUnavailableException", "image"]
    for call in calls:
        assert call.kind is SpanKind.CLIENT
        assert call.attributes is not None
        assert call.attributes["rpc.method"] == "InvokeModel"
        assert call.attributes["gen_ai.request.model"] == submitted.json()["model_id"]
        assert call.attributes["cloud.region"] == stack.services.settings.aws_region
        assert call.attributes["imagegen.bedrock.pool"] == "default"
        assert len(str(call.attributes["aws.request_id"])) == 36  # the emulator's uuid
    assert calls[0].attributes is not None
    assert calls[0].attributes["http.response.status_code"] == 503
    assert calls[1].attributes is not None
    assert (
        calls[1].attributes["imagegen.bedrock.latency_ms"]
        == stack.http.get(f"/v1/jobs/{job_id}").json()["bedrock_latency_ms"]
    )

    # The worker's histograms link to the attempts: the wait to the first, the latency to the
    # call that answered with an image.
    assert {"trace_id": TRACE_ID, "span_id": f"{attempts[0].context.span_id:016x}"} in exemplars(
        metrics.QUEUE_WAIT, tenant="acme"
    )
    assert {"trace_id": TRACE_ID, "span_id": f"{attempts[1].context.span_id:016x}"} in exemplars(
        metrics.BEDROCK_LATENCY, model=submitted.json()["model_id"]
    )
    # Served to a scraper that asks for OpenMetrics (Prometheus with exemplar storage on).
    assert f'trace_id="{TRACE_ID}"' in openmetrics(REGISTRY).decode()

    [upload] = named(spans, "S3.PutObject")
    assert upload.kind is SpanKind.CLIENT
    assert parent_of(upload) == attempts[1].context.span_id
    assert upload.attributes is not None
    assert upload.attributes["aws.s3.bucket"] == "test-bucket"
    assert str(upload.attributes["aws.s3.key"]).endswith(f"{job_id}.png")

    posts = named(spans, "POST")
    assert len(posts) == 2
    requests = stack.receiver.received("/hook")
    for post, request in zip(posts, requests, strict=True):
        assert post.kind is SpanKind.CLIENT
        assert parent_of(post) == send.context.span_id
        # The receiver's trace continues ours: its parent is the POST's span.
        assert request["headers"]["traceparent"] == (
            f"00-{TRACE_ID}-{post.context.span_id:016x}-01"
        )
        assert post.attributes is not None
        assert post.attributes["url.full"] == stack.receiver.url("/hook")
        assert post.attributes["imagegen.webhook.event"] == "job.succeeded"
    assert [p.attributes["http.response.status_code"] for p in posts if p.attributes] == [
        503,
        200,
    ]
    assert posts[0].status.status_code is StatusCode.ERROR
    assert posts[1].attributes is not None
    assert posts[1].attributes["http.request.resend_count"] == 1


def test_with_no_sdk_and_no_caller_there_is_no_trace_and_no_header(
    stack: Stack,
) -> None:
    body = {"request": {"prompt": "a lighthouse"}, "webhook_url": stack.receiver.url("/plain")}
    job_id = stack.http.post("/v1/jobs", json=body).json()["job_id"]
    released(stack, job_id)
    services = dataclasses.replace(stack.services, bedrock=stack.good_bedrock)
    assert run_job(job_id, services, "worker-1").status == "succeeded"
    assert stack.sender.deliver(f"{job_id}:job.succeeded").outcome == "delivered"
    [request] = stack.receiver.received("/plain")
    assert "traceparent" not in request["headers"]
    assert stack.http.get(f"/v1/jobs/{job_id}").json()["trace_id"] is None


def test_with_no_sdk_the_callers_traceparent_reaches_the_webhook(stack: Stack) -> None:
    body = {"request": {"prompt": "a lighthouse"}, "webhook_url": stack.receiver.url("/passed")}
    job_id = stack.http.post("/v1/jobs", json=body, headers={"traceparent": CALLER}).json()[
        "job_id"
    ]
    released(stack, job_id)
    services = dataclasses.replace(stack.services, bedrock=stack.good_bedrock)
    assert run_job(job_id, services, "worker-1").status == "succeeded"
    assert stack.sender.deliver(f"{job_id}:job.succeeded").outcome == "delivered"
    [request] = stack.receiver.received("/passed")
    assert request["headers"]["traceparent"] == CALLER


def test_an_attempt_after_a_redrive_says_so_and_has_no_wait_of_its_own(
    stack: Stack, exported: InMemorySpanExporter
) -> None:
    """A worker died holding the job (its attempt's span never ended); the redrive put it back:
    the next attempt is in the trace, marked, and no wait is made up for it."""
    body = {"request": {"prompt": "a lighthouse"}}
    job_id = stack.http.post("/v1/jobs", json=body, headers={"traceparent": CALLER}).json()[
        "job_id"
    ]
    released(stack, job_id)
    store = stack.services.store
    assert store.claim(job_id, "worker-that-dies", 60_000).attempt == 1
    stack.redis.hset(keys.job_key(job_id), "lease_until_ms", 0)
    stack.redis.zadd(keys.RUNNING_KEY, {job_id: 0})
    assert store.redrive_due() == [job_id]
    released(stack, job_id)
    services = dataclasses.replace(stack.services, bedrock=stack.good_bedrock)
    assert run_job(job_id, services, "worker-2").status == "succeeded"

    spans = list(exported.get_finished_spans())
    [send] = named(spans, "send interactive")
    [attempt] = named(spans, "process interactive")
    assert parent_of(attempt) == send.context.span_id
    assert attempt.attributes is not None
    assert attempt.attributes["imagegen.attempt"] == 2
    assert attempt.attributes["imagegen.after_redrive"] is True
    assert named(spans, "wait interactive") == []


def test_a_replayed_jobs_wait_starts_at_its_replay(
    stack: Stack, exported: InMemorySpanExporter
) -> None:
    job_id = stack.http.post("/v1/jobs", json={"request": {"prompt": "a lighthouse"}}).json()[
        "job_id"
    ]
    released(stack, job_id)
    store = stack.services.store
    store.claim(job_id, "w1", 60_000)
    store.finish(job_id, "w1", JobStatus.FAILED, {"error_code": "AccessDeniedException"})
    time.sleep(0.05)
    replayed_at = time.time_ns()
    assert store.replay([job_id]) == [job_id]
    released(stack, job_id)
    services = dataclasses.replace(stack.services, bedrock=stack.good_bedrock)
    assert run_job(job_id, services, "worker-2").status == "succeeded"

    [wait] = named(list(exported.get_finished_spans()), "wait interactive")
    assert wait.attributes is not None
    assert wait.attributes["imagegen.wait.since"] == "replay"
    assert wait.start_time is not None
    assert wait.start_time >= replayed_at - 5_000_000  # from the replay, not the submission
