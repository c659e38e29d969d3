"""Errors as RFC 9457 problem+json: every 4xx names the field and the rule it broke."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from imagegen.errors import (
    FieldError,
    IdempotencyConflictError,
    InvalidRequestError,
    JobConflictError,
    QueueFullError,
    ReplicaAckTimeoutError,
)
from producer.api.examples import PROBLEM_EXAMPLES

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "PROBLEM_SCHEMA_REF",
    "Problem",
    "ProblemError",
    "ProblemField",
    "default_problem_response",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
    "submission_problems",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemField(BaseModel):
    """One field of the request and the rule it broke."""

    field: str = Field(
        description="Where: a dotted path into the body (`request.aspect_ratio`, "
        "`steps[1].request.image`, `0.request.seed` in a batch), or a header's name"
    )
    message: str = Field(description="The rule it broke")


class Problem(BaseModel):
    """RFC 9457 problem details; ``errors`` names each bad field and the rule it broke."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "about:blank",
                    "title": "Invalid job",
                    "status": 422,
                    "detail": "the job was refused; see errors",
                    "errors": [
                        {
                            "field": "request.aspect_ratio",
                            "message": "Input should be '16:9', '1:1', '21:9', '2:3', '3:2', "
                            "'4:5', '5:4', '9:16' or '9:21'",
                        }
                    ],
                }
            ]
        }
    )

    type: str = Field(default="about:blank", description="Always `about:blank`: see `title`")
    title: str = Field(description="What went wrong, the same for every problem of its kind")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What went wrong with this request")
    errors: list[ProblemField] = Field(
        default=[], description="Each bad field and the rule it broke (empty when none applies)"
    )


_DESCRIPTIONS = {
    400: "Malformed request: the body (or a header) cannot be read",
    401: "Missing or unknown API key",
    404: "Not found (another tenant's resources are as absent as missing ones)",
    409: "Conflict",
    413: "Body too large",
    422: "The request breaks a rule; `errors` names each field",
    429: "Too many requests; wait for Retry-After",
    503: "Unavailable for now; wait for Retry-After",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 0},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with: `Bearer`",
            "schema": {"type": "string"},
        }
    },
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}
PROBLEM_SCHEMA_REF = "#/components/schemas/Problem"


_EXAMPLES = {
    400: "bad-body",
    401: "unauthorized",
    404: "not-found",
    409: "conflict",
    413: "too-large",
    422: "invalid-request",
    429: "too-many-bad-keys",
    503: "storage-unavailable",
}


def default_problem_response(status: int) -> dict[str, Any]:
    """The usual description and example of a problem with this status."""
    [response] = problem_responses(status).values()
    return response


def problem_responses(
    *statuses: int,
    described: Mapping[int, str] | None = None,
    examples: Mapping[int, str] | None = None,
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses for the problems a route answers: ``statuses`` with their usual
    description, ``described`` with the route's own; each with an example (``examples`` names
    the route's own, from ``producer.api.examples.PROBLEM_EXAMPLES``)."""
    descriptions = {status: _DESCRIPTIONS[status] for status in statuses} | dict(described or {})
    chosen = _EXAMPLES | dict(examples or {})
    return {
        status: {
            "description": descriptions[status],
            "content": {
                PROBLEM_MEDIA_TYPE: {
                    "schema": {"$ref": PROBLEM_SCHEMA_REF},
                    "examples": {
                        chosen[status]: {"value": PROBLEM_EXAMPLES[chosen[status]]},
                    },
                }
            },
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
        for status in sorted(descriptions)
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

    @app.exception_handler(ReplicaAckTimeoutError)
    async def _not_replicated(_: Request, error: ReplicaAckTimeoutError) -> JSONResponse:
        problem = Problem(title="Not confirmed by a replica", status=503, detail=str(error))
        return problem_response(problem, {"Retry-After": str(error.retry_after_s)})

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
