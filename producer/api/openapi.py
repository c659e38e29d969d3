"""The OpenAPI 3.1 document at ``/openapi.json``: FastAPI's, completed so that it validates and a
client generator makes a good client of it.

FastAPI writes the operations (ids, tags, security from the bearer schemes, parameters); this
adds what our own code reads and FastAPI cannot see (the job body is parsed by us, so bad input
gets our problem+json: its schema, ``JobSpec``, is published here with every request model), the
one ``Problem`` schema every error response uses (FastAPI's ``HTTPValidationError`` is never
answered, so it is gone), and says that the health probes need no key.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from imagegen.contract import JobSpec
from producer.api.problems import (
    PROBLEM_MEDIA_TYPE,
    PROBLEM_SCHEMA_REF,
    Problem,
    default_problem_response,
)

__all__ = ["API_DESCRIPTION", "OPENAPI_TAGS", "install_openapi"]

REF_TEMPLATE = "#/components/schemas/{model}"
_UNANSWERED = ("HTTPValidationError", "ValidationError")
_PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
_METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options"})

API_DESCRIPTION = """\
Submit image jobs to the Stability AI models on AWS Bedrock, follow them, and download their
images, from any language.

**Authentication.** Every call but `/healthz` and `/readyz` takes
`Authorization: Bearer <API key>` (`imagegen keys create --tenant acme`); a key belongs to one
tenant, and a tenant sees only its own jobs, batches, chains and uploads. The `/v1/admin/*`
routes take the operators' token instead. In this page, **Authorize** takes either.

**Images.** Once a job succeeded, its record carries `image_url`: a presigned URL that needs no
credentials and expires at `image_url_expires_at` (15 minutes by default). Every read of the job
signs a fresh one, and `GET /v1/jobs/{job_id}/image` redirects to one, so a link that has
expired is never a dead end. Where the service streams images, `image_url` is that path
instead, fetched with the API key.

**Errors.** Every error is `application/problem+json` (RFC 9457): `title` says what went wrong,
`detail` what it was about, and `errors` names each bad field and the rule it broke. A 429 or a
503 says how long to wait in `Retry-After`.

**Webhooks.** A job's `webhook_url` receives its events, signed as
[Standard Webhooks](https://www.standardwebhooks.com/) v1 with your tenant's secrets
(`GET /v1/webhook-secrets`).
"""

OPENAPI_TAGS: list[dict[str, Any]] = [
    {"name": "jobs", "description": "Submit one job, follow it, cancel it, download its image"},
    {"name": "batches", "description": "Many jobs in one submission"},
    {"name": "chains", "description": "Jobs that each take an earlier one's image"},
    {"name": "uploads", "description": "Input images for the models that edit or upscale"},
    {"name": "models", "description": "The models a job may name"},
    {"name": "webhooks", "description": "The secrets that sign your webhooks"},
    {"name": "tenant", "description": "Your share of the quota, your spend and budgets"},
    {
        "name": "admin",
        "description": "Operators: any tenant's weight, caps and budgets (the admin token)",
    },
    {"name": "health", "description": "Probes: no key needed"},
]


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document (built once, on the first request for it)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = complete(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document with our schemas, one problem schema and the public probes."""
    document = copy.deepcopy(document)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    _, published = models_json_schema(
        [(JobSpec, "validation"), (Problem, "validation")], ref_template=REF_TEMPLATE
    )
    schemas.update(published.get("$defs", {}))
    for operation in _operations(document):
        for status, response in operation.get("responses", {}).items():
            if str(status)[0] in "45":
                _problem_only(int(status), response)
    for path, methods in document.get("paths", {}).items():
        if path in _PUBLIC_PATHS:
            for method, operation in methods.items():
                if method in _METHODS:
                    operation["security"] = []
    for name in _UNANSWERED:
        schemas.pop(name, None)
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        operation
        for methods in document.get("paths", {}).values()
        for method, operation in methods.items()
        if method in _METHODS
    ]


def _problem_only(status: int, response: dict[str, Any]) -> None:
    """An error response is problem+json with the one Problem schema: FastAPI's own 422 (and
    the empty ``application/json`` it may add beside declared content) becomes one, with the
    usual description and example. A declared body of another kind stays (``/readyz``'s 503 is
    its health report)."""
    content = response.get("content", {})
    if any(
        media != PROBLEM_MEDIA_TYPE and not _fastapi_filler(media, body)
        for media, body in content.items()
    ):
        return
    if PROBLEM_MEDIA_TYPE not in content:
        response.clear()
        response.update(copy.deepcopy(default_problem_response(status)))
        return
    content[PROBLEM_MEDIA_TYPE]["schema"] = {"$ref": PROBLEM_SCHEMA_REF}
    response["content"] = {PROBLEM_MEDIA_TYPE: content[PROBLEM_MEDIA_TYPE]}


def _fastapi_filler(media: str, body: dict[str, Any]) -> bool:
    schema = body.get("schema", {})
    return media == "application/json" and (
        not schema or schema.get("$ref", "").endswith("/HTTPValidationError")
    )
