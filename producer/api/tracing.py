"""A SERVER span for each request to ``/v1/*``, continuing the caller's ``traceparent``.

Named and attributed by the OpenTelemetry HTTP conventions: ``{method} {route}`` (``POST
/v1/jobs``), ``http.request.method``, ``http.route``, ``url.path``, ``url.scheme``,
``http.response.status_code``, and ``error.type`` for a 5xx answer. Without the SDK the span is
the API's no-op span carrying the caller's context, so a submitted job still keeps its caller's
``traceparent`` (``imagegen.tracing``).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegen import tracing

__all__ = ["TracingMiddleware"]

_TRACED_PREFIX = "/v1/"
_PROPAGATED = (b"traceparent", b"tracestate")
_SERVER_ERROR = 500


class TracingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(_TRACED_PREFIX):
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers") or []
            if name in _PROPAGATED
        }
        method = scope["method"]
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
        }
        with tracing.TRACER.start_as_current_span(
            method,
            context=tracing.extract(carrier),
            kind=SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            status = _SERVER_ERROR

            async def traced_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.app(scope, receive, traced_send)
            except BaseException as e:
                span.set_attribute("error.type", type(e).__qualname__)
                raise
            finally:
                if span.is_recording():
                    _finish(span, scope, method, status)


def _finish(span: Any, scope: Scope, method: str, status: int) -> None:
    route = getattr(scope.get("route"), "path", None)
    if route:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= _SERVER_ERROR:
        span.set_attribute("error.type", str(status))
        span.set_status(Status(StatusCode.ERROR))
