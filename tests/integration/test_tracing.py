"""One trace per job on the real stack: the API (uvicorn) and the worker export OTLP over HTTP
to a small collector in this test, which decodes each export request; the job's spans from the
caller's request to its webhook POSTs (one refused, one delivered) form one connected trace,
and the receiver's request carries it on."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from devstack.stack import Stack
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack
from tests.support import Receiver

pytestmark = pytest.mark.integration

TRACING_STACK_DB = 3
TRACE_ID = "5ce0e9a56015fec5aadfa328ae398115"
CALLER_SPAN = "ab42124a3c573678"
CALLER = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
SPAN_KIND_SERVER = 2  # OTLP's SPAN_KIND_SERVER


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


class Collector:
    """An OTLP/HTTP trace endpoint on 127.0.0.1 (``POST /v1/traces``, protobuf) that keeps
    every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.content_types: set[str] = set()
        self._lock = threading.Lock()
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                collector.take(self.path, self.headers.get("Content-Type", ""), body)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def take(self, path: str, content_type: str, body: bytes) -> None:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        ExportedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self.content_types.add(content_type)
            self.spans += found

    def trace(self, trace_id: str) -> list[ExportedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def ancestors(span: ExportedSpan, spans: list[ExportedSpan]) -> list[str]:
    by_id = {s.span_id: s for s in spans}
    found, parent = [], span.parent_id
    while parent:
        found.append(parent)
        parent = by_id[parent].parent_id if parent in by_id else ""
    return found


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


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

    deadline = time.monotonic() + 60
    while len(collector.trace(TRACE_ID)) < 8 or len(receiver.received("/traced")) < 2:
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
    [wait] = by_name["wait interactive"]
    [attempt] = by_name["process interactive"]
    [call] = by_name["BedrockRuntime.InvokeModel"]
    [upload] = by_name["S3.PutObject"]
    posts = by_name["POST"]
    assert len(posts) == 2

    # Two processes, one trace, linked parent to child from the caller's span to the POSTs.
    assert {server.service, send.service} == {"imagegen-api"}
    assert {s.service for s in (wait, attempt, call, upload, *posts)} == {"imagegen-worker"}
    assert server.parent_id == CALLER_SPAN
    assert server.kind == SPAN_KIND_SERVER
    assert server.attributes["http.route"] == "/v1/jobs"
    assert server.attributes["http.response.status_code"] == 202
    # FastAPI's endpoint span stands between the request's span and the submission's.
    assert ancestors(send, spans) == [ancestors(send, spans)[0], server.span_id, CALLER_SPAN]
    assert wait.parent_id == attempt.parent_id == send.span_id
    assert call.parent_id == upload.parent_id == attempt.span_id
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
