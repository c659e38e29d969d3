"""The spans a worker records for a job, all in the job's trace (its submission's span is their
parent, ``imagegen.tracing``):

- ``wait {queue}`` (INTERNAL): the wait in the dispatcher, from submit (or the retry's return)
  to release, recorded at the claim from the record's times, with the job's place and its
  tenant's share at submit;
- ``process {queue}`` (CONSUMER, messaging conventions): one attempt;
- ``BedrockRuntime.InvokeModel`` (CLIENT, AWS SDK conventions): the call, with the model, the
  pool and its Region, Bedrock's request id, the latency and the outcome;
- ``S3.PutObject`` (CLIENT): the image's upload;
- ``POST`` (CLIENT, HTTP conventions): one webhook delivery, whose request carries the span's
  ``traceparent``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from imagegen import tracing
from imagegen.errors import BedrockCallError
from imagegen.records import REPLAYED, JobRecord, JobTrace
from imagegen.ssrf import VettedTarget

__all__ = [
    "after_redrive",
    "bedrock_answered",
    "bedrock_call",
    "bedrock_failed",
    "failed",
    "processing",
    "record_wait",
    "s3_put",
    "webhook_answered",
    "webhook_post",
]

_MESSAGING = {"messaging.system": tracing.MESSAGING_SYSTEM}
_CLIENT_ERROR = 400


def _job_attributes(record: JobRecord, attempt: int) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        **_MESSAGING,
        "messaging.destination.name": record.priority,
        "messaging.message.id": record.job_id,
        "imagegen.model_id": record.model_id,
        "imagegen.attempt": attempt,
    }
    if record.tenant:
        attributes["imagegen.tenant"] = record.tenant
    return attributes


def after_redrive(record: JobRecord, attempt: int) -> bool:
    """Whether the attempt before this one ended without a word: its worker died (or lost
    Redis) and the redrive put the job back. A retry's return is in the attempt log."""
    if attempt <= 1:
        return False
    return not record.attempt_log or record.attempt_log[-1].attempt != attempt - 1


def record_wait(
    record: JobRecord, attempt: int, trace: JobTrace, parent: Context | None, now_ms: int
) -> None:
    """The wait that ended with this attempt's release: from submit (the first attempt), from
    the job's return to the dispatcher (a retry: the last entry of its attempt log) or from its
    replay (the first attempt of a new run: the log's ``Replayed`` entry). After a redrive,
    when the job went back is not recorded: there is no wait span then (the attempt's span says
    ``imagegen.after_redrive``)."""
    if after_redrive(record, attempt):
        return
    last = record.attempt_log[-1] if record.attempt_log else None
    since_what = "submit"
    if attempt > 1 and last is not None:
        since_what = "retry"
    elif last is not None and last.error_code == REPLAYED:
        since_what = "replay"
    since: datetime = last.at if last is not None and since_what != "submit" else record.created_at
    attributes = _job_attributes(record, attempt)
    attributes["imagegen.wait.since"] = since_what
    if since_what == "submit" and trace.position_at_submit is not None:
        attributes["imagegen.queue.position"] = trace.position_at_submit
    if since_what == "submit" and trace.share_at_submit is not None:
        attributes["imagegen.tenant.share"] = trace.share_at_submit
    tracing.record_ended_span(
        f"wait {record.priority}",
        kind=SpanKind.INTERNAL,
        parent=parent,
        start_ms=round(since.timestamp() * 1000),
        end_ms=trace.released_ms or now_ms,
        attributes=attributes,
    )


@contextmanager
def processing(record: JobRecord, attempt: int, parent: Context | None) -> Iterator[Span]:
    """One attempt (``process {queue}``); ``imagegen.job.outcome`` says how it ended."""
    attributes = _job_attributes(record, attempt)
    attributes["messaging.operation.type"] = "process"
    attributes["messaging.operation.name"] = "process"
    if after_redrive(record, attempt):
        attributes["imagegen.after_redrive"] = True
    with tracing.TRACER.start_as_current_span(
        f"process {record.priority}",
        context=parent,
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span


def failed(span: Span, error_code: str) -> None:
    """The attempt failed (retryably or not) with ``error_code``."""
    span.set_attribute("error.type", error_code)
    span.set_status(Status(StatusCode.ERROR))


@contextmanager
def bedrock_call(model_id: str, region: str | None, pool: str | None = None) -> Iterator[Span]:
    attributes: dict[str, Any] = {
        "rpc.system": "aws-api",
        "rpc.service": "BedrockRuntime",
        "rpc.method": "InvokeModel",
        "gen_ai.system": "aws.bedrock",
        "gen_ai.request.model": model_id,
    }
    if region:
        attributes["cloud.region"] = region
    if pool:
        attributes["imagegen.bedrock.pool"] = pool
    with tracing.TRACER.start_as_current_span(
        "BedrockRuntime.InvokeModel",
        kind=SpanKind.CLIENT,
        attributes=attributes,
        record_exception=False,
    ) as span:
        yield span


def bedrock_answered(span: Span, request_id: str | None, latency_ms: int, outcome: str) -> None:
    """Bedrock answered: ``outcome`` is ``image``, ``filtered`` or the error code of an answer
    without a usable image."""
    if request_id:
        span.set_attribute("aws.request_id", request_id)
    span.set_attribute("imagegen.bedrock.latency_ms", latency_ms)
    span.set_attribute("imagegen.bedrock.outcome", outcome)
    if outcome not in ("image", "filtered"):
        span.set_attribute("error.type", outcome)
        span.set_status(Status(StatusCode.ERROR))


def bedrock_failed(span: Span, error: BedrockCallError) -> None:
    if error.request_id:
        span.set_attribute("aws.request_id", error.request_id)
    if error.http_status is not None:
        span.set_attribute("http.response.status_code", error.http_status)
    span.set_attribute("imagegen.bedrock.outcome", error.code)
    span.set_attribute("error.type", error.code)
    span.set_status(Status(StatusCode.ERROR, error.message[:200]))


@contextmanager
def s3_put(bucket: str, key: str, size: int) -> Iterator[Span]:
    with tracing.TRACER.start_as_current_span(
        "S3.PutObject",
        kind=SpanKind.CLIENT,
        attributes={
            "rpc.system": "aws-api",
            "rpc.service": "S3",
            "rpc.method": "PutObject",
            "aws.s3.bucket": bucket,
            "aws.s3.key": key,
            "imagegen.image.bytes": size,
        },
    ) as span:
        yield span


@contextmanager
def webhook_post(
    target: VettedTarget,
    *,
    attempt: int,
    event: str,
    delivery_id: str,
    parent: Context | None,
) -> Iterator[Span]:
    """One delivery's POST (``url.full`` without its query, which may hold a token)."""
    default_port = 443 if target.scheme == "https" else 80
    port = "" if target.port == default_port else f":{target.port}"
    attributes: dict[str, Any] = {
        "http.request.method": "POST",
        "url.full": f"{target.scheme}://{target.host}{port}{target.path.split('?', 1)[0]}",
        "server.address": target.host,
        "server.port": target.port,
        "imagegen.webhook.event": event,
        "imagegen.webhook.delivery_id": delivery_id,
    }
    if attempt > 1:
        attributes["http.request.resend_count"] = attempt - 1
    with tracing.TRACER.start_as_current_span(
        "POST", context=parent, kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def webhook_answered(span: Span, status: int | None, error: str | None) -> None:
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if status is None or status >= _CLIENT_ERROR:
        span.set_attribute("error.type", str(status) if status is not None else "no_answer")
        span.set_status(Status(StatusCode.ERROR, (error or "")[:200] or None))
