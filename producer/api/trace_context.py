"""The caller's ``traceparent`` for requests FastAPI does not trace.

FastAPI's own OpenTelemetry instrumentation makes each traced request's SERVER span, a child of
the caller's ``traceparent``. It stays out of the way while no tracer provider is set up (tracing
off), and so does the caller's context: this middleware then makes that context the current one,
so a job submitted by the request still keeps its caller's trace (``imagegen.submit_trace``).
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace
from starlette.types import ASGIApp, Receive, Scope, Send

from imagegen import tracing

__all__ = ["CallerTraceMiddleware"]

_TRACEPARENT = b"traceparent"


class CallerTraceMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = None
        if scope["type"] == "http" and not trace.get_current_span().get_span_context().is_valid:
            header = next(
                (value for name, value in scope.get("headers") or [] if name == _TRACEPARENT),
                None,
            )
        caller = tracing.context_of(header.decode("latin-1")) if header else None
        if caller is None:
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(caller)
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)
