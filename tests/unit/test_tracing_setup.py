"""Tracing is off unless the OTEL_* variables ask for it; on, the SDK exports as they say.

Each case runs in a fresh interpreter: a process has one tracer provider, set once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from imagegen import tracing

# Builds the API and imports the worker's tasks (each configures tracing as its process
# starts), then says what the process has: whether the SDK was even imported, the provider.
_PROBE = """
import json, sys
from opentelemetry import trace
from imagegen import tracing
from producer.api import create_app
import worker.tasks
create_app(redis_client=__import__("fakeredis").FakeRedis(decode_responses=True))
exported = tracing.configure(sys.argv[1])
provider = trace.get_tracer_provider()
resource = getattr(provider, "resource", None)
processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
print(json.dumps({
    "exported": exported,
    "sdk_imported": "opentelemetry.sdk.trace" in sys.modules,
    "provider": type(provider).__name__,
    "service": resource.attributes.get("service.name") if resource else None,
    "exporters": [type(p.span_exporter).__name__ for p in processors
                  if hasattr(p, "span_exporter")],
}))
"""


def _probe(env: dict[str, str], service: str = "imagegen-test") -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, service],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_without_otel_variables_the_tracing_sdk_is_not_even_imported() -> None:
    found = _probe({})
    assert found == {
        "exported": False,
        "sdk_imported": False,
        "provider": "ProxyTracerProvider",
        "service": None,
        "exporters": [],
    }


@pytest.mark.parametrize(
    "env",
    [
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_TRACES_EXPORTER": "none"},
    ],
)
def test_disabled_or_none_keeps_it_off(env: dict[str, str]) -> None:
    assert _probe(env)["provider"] == "ProxyTracerProvider"


def test_an_otlp_endpoint_exports_over_otlp_http_named_after_the_process() -> None:
    found = _probe({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "imagegen-api")
    assert found["exported"] is True
    assert found["provider"] == "TracerProvider"
    assert found["service"] == "imagegen-api"
    assert found["exporters"] == ["OTLPSpanExporter"]


def test_otel_service_name_and_the_console_exporter_are_honoured() -> None:
    found = _probe({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "images-eu"})
    assert found["service"] == "images-eu"
    assert found["exporters"] == ["ConsoleSpanExporter"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_an_exporter_we_cannot_run_is_refused_naming_the_variable(
    env: dict[str, str], named: str
) -> None:
    from imagegen.tracing_sdk import tracer_provider

    with pytest.raises(ValueError, match=named):
        tracer_provider("imagegen-test", env)


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_TRACES_EXPORTER": "None", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, False),
    ],
)
def test_enabled_by_env(env: dict[str, str], on: bool) -> None:
    assert tracing.enabled_by_env(env) is on


@pytest.mark.parametrize(
    ("value", "trace_id"),
    [
        (
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "0af7651916cd43dd8448eb211c80319c",
        ),
        ("00-00000000000000000000000000000000-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", None),
        ("ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None),
        ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", None),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", None),
        (None, None),
    ],
)
def test_trace_ids_come_only_from_well_formed_traceparents(
    value: str | None, trace_id: str | None
) -> None:
    assert tracing.trace_id_of(value) == trace_id
