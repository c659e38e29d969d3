"""Errors as RFC 9457 problem+json: every 4xx names the field and the rule it broke."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from imagegen.errors import (
    FieldError,
    IdempotencyConflictError,
    InvalidRequestError,
    JobConflictError,
    QueueFullError,
)

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_RESPONSES",
    "Problem",
    "ProblemError",
    "install_problem_handlers",
    "problem_response",
    "submission_problems",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"


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
