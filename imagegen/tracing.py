"""One OpenTelemetry trace per job: the submitting request's, continued by every process.

A job keeps the W3C ``traceparent`` of its submission (the ``send`` span, a child of the
caller's context: an HTTP header, the current context of a Python caller, or a raw intake
message's ``traceparent`` field) in its record. The worker's spans (the wait in the dispatcher,
each attempt, the Bedrock call, the S3 upload) and each webhook POST are children of it, and the
POST carries its own ``traceparent`` so the receiver's trace continues ours. The API's request
spans are FastAPI's own (``producer.api.app``).

Off by default: no SDK is set up unless the standard ``OTEL_TRACES_EXPORTER`` (``otlp`` or
``console``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set
(``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none`` keep it off). Off, every span here
is the API's no-op span; a caller's ``traceparent`` is still kept and passed on. The SDK and
the OTLP exporter come with the ``otel`` extra; ``imagegen.tracing_sdk`` sets them up.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import ProxyTracer, ProxyTracerProvider, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "TRACER",
    "configure",
    "context_of",
    "continued",
    "enabled_by_env",
    "exemplar",
    "extract",
    "inject",
    "is_traceparent",
    "may_trace",
    "record_ended_span",
    "trace_id_of",
    "traceparent_of",
]

TRACER = trace.get_tracer("imagegen")
MESSAGING_SYSTEM = "redis"
_PROPAGATOR = TraceContextTextMapPropagator()
# Version 00 as W3C Trace Context writes it; a later version's first four fields read the same.
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")
_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_lock = threading.Lock()
_configured = False


def enabled_by_env(env: Mapping[str, str] | None = None) -> bool:
    """Whether the ``OTEL_*`` variables ask for traces to be exported."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or any(env.get(name, "").strip() for name in _ENDPOINT_VARIABLES)


def configure(service_name: str, env: Mapping[str, str] | None = None) -> bool:
    """Set up the SDK for this process when the ``OTEL_*`` variables ask for it (once per
    process; later calls do nothing); returns whether traces are exported. A bad variable
    raises ``ValueError`` naming it."""
    global _configured  # noqa: PLW0603 (one tracer provider per process)
    env = os.environ if env is None else env
    if not enabled_by_env(env):
        return False
    with _lock:
        if _configured:
            return True
        from imagegen.tracing_sdk import tracer_provider  # noqa: PLC0415 (the otel extra)

        trace.set_tracer_provider(tracer_provider(service_name, env))
        _configured = True
    return True


def may_trace() -> bool:
    """Whether a span started now could be recorded or name a trace: False only while no SDK
    is set up and the current context names no trace (tracing off, no caller's trace), when a
    hot path may skip its span altogether."""
    return (
        not isinstance(TRACER, ProxyTracer)
        or not isinstance(trace.get_tracer_provider(), ProxyTracerProvider)
        or trace.get_current_span().get_span_context().is_valid
    )


def is_traceparent(value: object) -> bool:
    """A W3C ``traceparent`` that names a trace and a span (neither all zeros)."""
    if not isinstance(value, str):
        return False
    found = _TRACEPARENT.match(value)
    return (
        found is not None
        and not value.startswith("ff")
        and set(found[1]) != {"0"}
        and set(found[2]) != {"0"}
    )


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) in a ``traceparent``; None for none or a malformed one."""
    if not is_traceparent(traceparent):
        return None
    return str(traceparent).split("-")[1]


def traceparent_of(span: Span) -> str | None:
    """The ``traceparent`` naming ``span`` (None when it names no trace: no SDK, no parent)."""
    found = span.get_span_context()
    if not found.is_valid:
        return None
    return f"00-{found.trace_id:032x}-{found.span_id:016x}-{int(found.trace_flags):02x}"


def exemplar() -> dict[str, str] | None:
    """The current span as a Prometheus exemplar's labels (``trace_id``, ``span_id``), when it
    is sampled: what links a histogram's bucket to a trace."""
    found = trace.get_current_span().get_span_context()
    if not found.is_valid or not found.trace_flags.sampled:
        return None
    return {"trace_id": f"{found.trace_id:032x}", "span_id": f"{found.span_id:016x}"}


def context_of(traceparent: str | None) -> Context | None:
    """A context whose parent is the span a ``traceparent`` names; None for none or a
    malformed one (W3C: an invalid header is ignored)."""
    if not is_traceparent(traceparent):
        return None
    return _PROPAGATOR.extract({"traceparent": str(traceparent)})


def extract(headers: Mapping[str, str]) -> Context:
    """The caller's context from its ``traceparent`` (and ``tracestate``) headers."""
    return _PROPAGATOR.extract(headers)


def inject(headers: dict[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to ``headers``."""
    _PROPAGATOR.inject(headers)


@contextmanager
def continued(traceparent: str | None) -> Iterator[None]:
    """Run the block in the trace ``traceparent`` names (unchanged when it names none)."""
    found = context_of(traceparent)
    if found is None:
        yield
        return
    token = otel_context.attach(found)
    try:
        yield
    finally:
        otel_context.detach(token)


def record_ended_span(
    name: str,
    *,
    kind: SpanKind,
    parent: Context | None,
    start_ms: int,
    end_ms: int,
    attributes: Mapping[str, Any],
) -> None:
    """Record a span that already ended (the wait in the dispatcher, read from the record)."""
    span = TRACER.start_span(
        name,
        context=parent,
        kind=kind,
        attributes=dict(attributes),
        start_time=start_ms * 1_000_000,
    )
    span.end(end_time=max(start_ms, end_ms) * 1_000_000)
