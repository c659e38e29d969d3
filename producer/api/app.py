"""The HTTP API: submit, follow, list and cancel jobs and batches from any backend.

``imagegen api --host 0.0.0.0 --port 8000`` serves it with uvicorn; ``/docs`` shows it. Every
call but ``/healthz`` and ``/readyz`` needs ``Authorization: Bearer <API key>``; a tenant sees
only its own jobs. Every 4xx answer is ``application/problem+json`` naming the field and the rule.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from opentelemetry.trace import TracerProvider
from pydantic import ValidationError

from imagegen import tracing
from imagegen.contract import validation_errors
from imagegen.logs import configure_logging
from imagegen.redis.connection import connect
from imagegen.settings import Settings, get_settings
from imagegen.store.tenants import ApiKeys, AuthFailures
from producer.api import batches, chains, health, jobs, models, secrets, tenants, uploads
from producer.api.auth import AUTH_WINDOW_S
from producer.api.bodies import BodyLimitMiddleware
from producer.api.docs import install_docs
from producer.api.hardening import install_hardening
from producer.api.images import ImageLinks
from producer.api.limits import Held, HeldLimits
from producer.api.metrics import metrics_router
from producer.api.openapi import API_DESCRIPTION, OPENAPI_TAGS, install_openapi
from producer.api.problems import install_problem_handlers
from producer.api.state import ApiState
from producer.api.trace_context import CallerTraceMiddleware
from producer.client import Client
from producer.console import install_console

__all__ = ["app_from_env", "create_app"]

# Threads for blocking endpoints (Prefer: wait, event streams) beyond anyio's default 40.
API_THREADS = 200


def create_app(
    settings: Settings | None = None,
    *,
    redis_client: Any = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The API; ``redis_client`` (decode_responses=True) replaces the one from the settings.

    FastAPI's own OpenTelemetry spans trace each request to ``/v1/*`` (a SERVER span by the
    HTTP conventions, ``POST /v1/jobs``, continuing the caller's ``traceparent``, and spans of
    its dependencies and endpoint) to ``tracer_provider``, by default the global one; until
    ``imagegen.tracing.configure`` sets up the SDK, FastAPI traces nothing and the caller's
    ``traceparent`` is made current by ``CallerTraceMiddleware``."""
    settings = settings or get_settings()
    redis_client = redis_client or connect(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = API_THREADS
        yield
        redis_client.close()

    app = FastAPI(
        title="bedrock-imagegen",
        version="1",
        summary="Image jobs for AWS Bedrock's Stability AI models, over HTTP",
        description=API_DESCRIPTION,
        license_info={"name": "Apache-2.0", "identifier": "Apache-2.0"},
        openapi_tags=OPENAPI_TAGS,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry={"tracer_provider": tracer_provider, "exclude": _not_traced},
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    install_problem_handlers(app)
    client = Client(settings, redis_client=redis_client)
    app.state.api = ApiState(
        settings=settings,
        redis=redis_client,
        client=client,
        api_keys=ApiKeys(redis_client),
        auth_failures=AuthFailures(redis_client, AUTH_WINDOW_S),
        held=HeldLimits(
            per_tenant={
                Held.STREAM: settings.api_max_streams_per_tenant,
                Held.WAIT: settings.api_max_waiting_per_tenant,
            },
            total={
                Held.STREAM: settings.api_max_streams_total,
                Held.WAIT: settings.api_max_waiting_total,
            },
        ),
        images=ImageLinks(settings, client.s3),
    )
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(chains.router)
    app.include_router(uploads.router)
    app.include_router(models.router)
    app.include_router(secrets.router)
    app.include_router(tenants.router)
    app.include_router(tenants.admin_router)
    app.include_router(metrics_router(redis_client, settings))
    app.include_router(health.router)
    install_docs(app)
    install_console(app)
    install_hardening(app)
    install_openapi(app)
    app.add_middleware(CallerTraceMiddleware)
    return app


def _not_traced(scope: MutableMapping[str, Any]) -> bool:
    """Only the API's requests are traced: not health checks, scrapes, the console or /docs."""
    return not str(scope.get("path", "")).startswith("/v1/")


def freeze_what_startup_built(app: FastAPI) -> None:
    """Build the OpenAPI document now, then keep the garbage collector off everything built so
    far (the app, its routes and schemas, the model registry: over 100,000 objects). A full
    collection walks every tracked object and stops the whole process meanwhile, every thread
    with it: 50 to 200 ms, once every few thousand requests, which made the API's p99. Frozen,
    they are never walked again. For a serving process only: nothing frozen is ever freed."""
    app.openapi()
    gc.collect()
    gc.freeze()


def app_from_env() -> FastAPI:
    """The app for ``uvicorn producer.api:app_from_env --factory``."""
    try:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)
        tracing.configure("imagegen-api")
        app = create_app(settings)
    except ValidationError as e:
        details = "; ".join(str(error) for error in validation_errors(e))
        msg = f"bad settings: {details}"
        raise SystemExit(msg) from e
    freeze_what_startup_built(app)
    return app
