"""One trace per job on the real stack: the API (uvicorn) and the worker export OTLP over HTTP
to a small collector in this test, which decodes each export request; the job's spans from the
caller's request to its webhook POSTs (one refused, one delivered), across a retried Bedrock
call, form one connected trace, and the receiver's request carries it on."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import httpx2 as httpx
import pytest

from devstack.stack import Stack
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack
from tests.otlp import Collector, ExportedSpan, ancestors
from tests.support import Receiver

pytestmark = pytest.mark.integration

TRACING_STACK_DB = 3
TRACE_ID = "5ce0e9a56015fec5aadfa328ae398115"
CALLER_SPAN = "ab42124a3c573678"
CALLER = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
SPAN_KIND_SERVER = 2  # OTLP's SPAN_KIND_SERVER


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory: pytest.TempPathFactory, collector: Collector) -> Iterator[Stack]:
    running = start_stack(
        tmp_path_factory.mktemp("tracing"),
        TRACING_STACK_DB,
        worker_concurrency=2,
        # The first call is answered 503 and the second with an image (the dice of seed 1 roll
        # 0.13, then 0.85): the job's first attempt is retried.
        emulator_args=("--unavailable-rate", "0.5", "--fault-seed", "1"),
        extra_env={
            **FAST_RETRIES,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "IMAGEGEN_WEBHOOK_ALLOW_HTTP": "true",
            "IMAGEGEN_WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
            "IMAGEGEN_WEBHOOK_RETRY_SCHEDULE_S": "[0, 0.2, 0.2]",
            "IMAGEGEN_WEBHOOK_JITTER_FRACTION": "0",
            "IMAGEGEN_WEBHOOK_SWEEP_INTERVAL_S": "0.2",
        },
    )
    running.start_api()
    yield running
    running.stop()


def test_one_connected_trace_from_the_api_request_to_the_webhook_post(
    traced_stack: Stack, collector: Collector, receiver: Receiver
) -> None:
    receiver.script("/traced", [(503, {}, 0.0), (200, {}, 0.0)])
    with Client(traced_stack.settings()) as client:
        _, key = client.api_keys.create("traced")
    body = {"request": {"prompt": "a lighthouse"}, "webhook_url": receiver.url("/traced")}
    response = httpx.post(
        traced_stack.urls["api"] + "/v1/jobs",
        json=body,
        headers={"Authorization": f"Bearer {key}", "traceparent": CALLER},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["trace_id"] == TRACE_ID

    # Every span read below, from both processes (each exports in its own batches).
    expected = Counter(
        {
            "POST /v1/jobs": 1,
            "send interactive": 1,
            "wait interactive": 2,
            "process interactive": 2,
            "BedrockRuntime.InvokeModel": 2,
            "S3.PutObject": 1,
            "POST": 2,
        }
    )

    def complete() -> bool:
        found = collector.trace(TRACE_ID)
        names = Counter(span.name for span in found)
        return len(found) >= 14 and all(names[n] >= k for n, k in expected.items())

    deadline = time.monotonic() + 60
    while not complete() or len(receiver.received("/traced")) < 2:
        assert time.monotonic() < deadline, [s.name for s in collector.trace(TRACE_ID)]
        time.sleep(0.2)
    time.sleep(0.5)  # whatever else is on its way
    spans = collector.trace(TRACE_ID)
    by_name: dict[str, list[ExportedSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert collector.content_types == {"application/x-protobuf"}

    [server] = by_name["POST /v1/jobs"]
    [send] = by_name["send interactive"]
    waits = by_name["wait interactive"]
    attempts = by_name["process interactive"]
    calls = by_name["BedrockRuntime.InvokeModel"]
    assert len(waits) == len(attempts) == len(calls) == 2
    attempts.sort(key=lambda span: span.attributes["imagegen.attempt"])
    attempt = attempts[1]
    [call] = [c for c in calls if c.parent_id == attempt.span_id]
    [upload] = by_name["S3.PutObject"]
    posts = by_name["POST"]
    assert len(posts) == 2

    # Two processes, one trace, linked parent to child from the caller's span to the POSTs.
    assert {server.service, send.service} == {"imagegen-api"}
    assert {s.service for s in (*waits, *attempts, *calls, upload, *posts)} == {"imagegen-worker"}
    assert server.parent_id == CALLER_SPAN
    assert server.kind == SPAN_KIND_SERVER
    assert server.attributes["http.route"] == "/v1/jobs"
    assert server.attributes["http.response.status_code"] == 202
    # FastAPI's endpoint span stands between the request's span and the submission's.
    assert ancestors(send, spans) == [ancestors(send, spans)[0], server.span_id, CALLER_SPAN]
    assert {span.parent_id for span in (*waits, *attempts)} == {send.span_id}
    assert upload.parent_id == attempt.span_id
    assert {c.parent_id for c in calls} == {a.span_id for a in attempts}
    assert attempts[0].attributes["imagegen.job.outcome"] == "retry_scheduled"
    assert attempts[0].attributes["error.type"] == "ServiceUnavailableException"
    assert sorted(w.attributes["imagegen.wait.since"] for w in waits) == ["retry", "submit"]
    assert [post.parent_id for post in posts] == [send.span_id, send.span_id]
    ids = {span.span_id for span in spans}
    assert all(span.parent_id in ids | {CALLER_SPAN} for span in spans)

    assert send.attributes["messaging.message.id"] == job["job_id"]
    assert attempt.attributes["imagegen.job.outcome"] == "succeeded"
    assert call.attributes["imagegen.bedrock.outcome"] == "image"
    statuses = sorted(post.attributes["http.response.status_code"] for post in posts)
    assert statuses == [200, 503]
    # Each POST told the receiver its own span: the receiver's trace continues ours.
    sent = {r["headers"]["traceparent"] for r in receiver.received("/traced")}
    assert sent == {f"00-{TRACE_ID}-{post.span_id}-01" for post in posts}
