"""The OpenTelemetry SDK as the ``OTEL_*`` variables set it up (the ``otel`` extra): a tracer
provider with the service's name, the sampler of ``OTEL_TRACES_SAMPLER`` (parent-based,
always on, by default) and a batch span processor (``OTEL_BSP_*``) sending to the exporter
``OTEL_TRACES_EXPORTER`` names: ``otlp`` (the default; OTLP over HTTP with protobuf, to
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or ``console``.
"""

from __future__ import annotations

from collections.abc import Mapping

try:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )
except ImportError as e:  # pragma: no cover - the extra is part of every test install
    msg = (
        "OTEL_* variables ask for traces, but the OpenTelemetry SDK is not installed: "
        "install bedrock-imagegen[otel]"
    )
    raise ImportError(msg) from e

__all__ = ["tracer_provider"]

_PROTOCOLS = ("http/protobuf", "")


def tracer_provider(service_name: str, env: Mapping[str, str]) -> TracerProvider:
    """A provider exporting in batches to the exporter the variables name; ``service_name``
    unless ``OTEL_SERVICE_NAME`` (or ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES``) names
    the service."""
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {SERVICE_NAME: service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(_exporter(env)))
    return provider


def _exporter(env: Mapping[str, str]) -> SpanExporter:
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        msg = f"OTEL_TRACES_EXPORTER: {name!r} is not an exporter here (otlp, console or none)"
        raise ValueError(msg)
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    ).strip()
    if protocol not in _PROTOCOLS:
        msg = f"OTEL_EXPORTER_OTLP_PROTOCOL: {protocol!r} is not supported here (http/protobuf)"
        raise ValueError(msg)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()
