"""What the HTTP API needs around its routes: problem+json errors, authentication with a brake
on repeated bad keys, a body-size limit, and header parsing."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer import keys
from producer.apikeys import ApiKeys
from producer.errors import (
    FieldError,
    IdempotencyConflictError,
    InvalidRequestError,
    JobConflictError,
    QueueFullError,
)
from producer.settings import Settings

if TYPE_CHECKING:
    from redis import Redis

__all__ = [
    "PROBLEM_RESPONSES",
    "BodyLimitMiddleware",
    "Problem",
    "ProblemError",
    "authenticate_client",
    "install_problem_handlers",
    "parse_duration_s",
    "parse_prefer_wait_s",
    "submission_problems",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_AUTH_WINDOW_S = 60
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


class ProblemField(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """RFC 9457 problem details; ``errors`` names each bad field and the rule it broke."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemField] = []


_PROBLEM_CONTENT = {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": _PROBLEM_CONTENT}
    for status, description in (
        (400, "Malformed request"),
        (401, "Missing or unknown API key"),
        (404, "No such job or batch (or not yours)"),
        (409, "Conflict"),
        (413, "Body too large"),
        (422, "The request breaks a rule; errors name each field"),
        (429, "Too many jobs waiting, or too many bad keys; see Retry-After"),
    )
}


class ProblemError(Exception):
    """Raised by a route to answer with a problem+json."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: Sequence[FieldError] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = Problem(
            title=title,
            status=status,
            detail=detail,
            errors=[ProblemField(field=e.field, message=e.message) for e in errors],
        )
        self.headers = headers or {}


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(_: Request, error: ProblemError) -> JSONResponse:
        return problem_response(error.problem, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        fields = [
            FieldError(".".join(str(part) for part in item["loc"]), str(item["msg"]))
            for item in error.errors()
        ]
        problem = ProblemError(
            422, "Invalid request", "the request breaks a rule; see errors", fields
        ).problem
        return problem_response(problem)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, error: HTTPException) -> JSONResponse:
        problem = Problem(
            title=str(error.detail), status=error.status_code, detail=str(error.detail)
        )
        return problem_response(problem, dict(error.headers or {}))


class BodyLimitMiddleware:
    """Answers 413 when a request body is larger than ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ProblemError(
                        413, "Body too large", f"the body is over {self.max_bytes} bytes"
                    )
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = Problem(
            title="Body too large", status=413, detail=f"the body is over {self.max_bytes} bytes"
        )
        await problem_response(problem)(scope, receive, send)


def authenticate_client(
    request: Request,
    authorization: str | None,
    api_keys: ApiKeys,
    redis: Redis,
    settings: Settings,
) -> str:
    """The caller's tenant. Bad or missing keys answer 401; a client that keeps presenting bad
    keys gets 429 until its minute is over."""
    client = request.client.host if request.client else "unknown"
    failures_key = keys.auth_failures_key(client)
    failures = int(redis.get(failures_key) or 0)
    limit = settings.api_auth_failures_per_minute
    if failures >= limit:
        retry_after = max(1, int(redis.ttl(failures_key)))
        raise ProblemError(
            429,
            "Too many failed authentications",
            f"{failures} bad API keys from {client} in the last minute",
            headers={"Retry-After": str(retry_after)},
        )
    scheme, _, token = (authorization or "").partition(" ")
    found = api_keys.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        pipe = redis.pipeline(transaction=True)
        pipe.incr(failures_key)
        pipe.expire(failures_key, _AUTH_WINDOW_S, nx=True)
        pipe.execute()
        detail = "send Authorization: Bearer <API key>" if not authorization else "unknown key"
        raise ProblemError(
            401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="imagegen"'}
        )
    return found.tenant


@contextmanager
def submission_problems(invalid_title: str, invalid_detail: str) -> Iterator[None]:
    """Submitting errors as problems: 422 invalid, 409 conflict, 429 queue full."""
    try:
        yield
    except InvalidRequestError as e:
        raise ProblemError(422, invalid_title, invalid_detail, list(e.errors)) from e
    except (JobConflictError, IdempotencyConflictError) as e:
        raise ProblemError(409, "Conflict", str(e)) from e
    except QueueFullError as e:
        raise ProblemError(
            429, "Too many jobs waiting", str(e), headers={"Retry-After": str(e.retry_after_s)}
        ) from e


def parse_duration_s(text: str, header: str) -> float:
    """Seconds from ``90``, ``90s``, ``10m``, ``2h``, ``1d``."""
    match = _DURATION.match(text)
    if match is None or float(match[1]) <= 0:
        raise ProblemError(
            400,
            f"Bad {header}",
            f"{header} must be a duration like 10m or 90s",
            [FieldError(header, "must be a positive duration like 10m or 90s")],
        )
    return float(match[1]) * _UNIT_S[match[2]]


def parse_prefer_wait_s(prefer: str | None, max_wait_s: float) -> float:
    """The ``wait=N`` of a ``Prefer`` header (RFC 7240), capped at ``max_wait_s``; 0 when absent."""
    if not prefer:
        return 0.0
    match = _PREFER_WAIT.search(prefer)
    return min(float(match[1]), max_wait_s) if match else 0.0
