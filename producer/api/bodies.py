"""Reading what a request carries: the body (size-limited, JSON, one job or a batch) and the
headers with a grammar of their own (``Prefer: wait``, durations)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegen.errors import FieldError
from imagegen.text import parse_duration_s, parse_json, parse_json_object
from producer.api.problems import Problem, ProblemError, problem_response

__all__ = [
    "BodyLimitMiddleware",
    "batch_items",
    "duration_header_s",
    "job_object",
    "prefer_wait_s",
    "raw_body",
]

_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d{1,6}(?:\.\d{1,3})?)", re.IGNORECASE)


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


async def raw_body(request: Request) -> bytes:
    return await request.body()


def job_object(body: bytes) -> dict[str, Any]:
    """One job: a JSON object."""
    try:
        return parse_json_object(body, "body")
    except ValueError as e:
        raise ProblemError(
            400, "Body is not a JSON object", str(e), [FieldError("body", str(e))]
        ) from e


def batch_items(body: bytes, content_type: str, max_jobs: int) -> list[dict[str, Any]]:
    """A batch of JSON objects: a JSON array, or JSON lines (``application/x-ndjson``)."""
    if "ndjson" in content_type or "jsonl" in content_type:
        items = []
        for number, line in enumerate(body.decode(errors="replace").splitlines(), start=1):
            if line.strip():
                try:
                    items.append(parse_json(line, f"line {number}"))
                except ValueError as e:
                    raise ProblemError(
                        400, "Line is not JSON", str(e), [FieldError(f"line {number}", str(e))]
                    ) from e
        return _only_objects(items, max_jobs)
    try:
        items = parse_json(body, "body")
    except ValueError as e:
        raise ProblemError(400, "Body is not JSON", str(e), [FieldError("body", str(e))]) from e
    if not isinstance(items, list):
        raise ProblemError(
            400,
            "Body is not a JSON array",
            "send a JSON array of jobs",
            [FieldError("body", "must be a JSON array (or JSON lines)")],
        )
    return _only_objects(items, max_jobs)


def _only_objects(items: list[Any], max_jobs: int) -> list[dict[str, Any]]:
    if len(items) > max_jobs:
        msg = f"a batch holds at most {max_jobs} jobs, not {len(items)}"
        raise ProblemError(413, "Batch too large", msg, [FieldError("body", msg)])
    bad = [
        FieldError(f"{index}", "must be a JSON object")
        for index, item in enumerate(items)
        if not isinstance(item, dict)
    ]
    if bad:
        raise ProblemError(422, "Invalid batch", "every job must be a JSON object", bad)
    return items


def duration_header_s(text: str, header: str) -> float:
    """Seconds from a duration header such as ``Cancel-After: 10m``."""
    try:
        return parse_duration_s(text)
    except ValueError as e:
        raise ProblemError(
            400, f"Bad {header}", f"{header}: {e}", [FieldError(header, str(e))]
        ) from e


def prefer_wait_s(prefer: str | None, max_wait_s: float) -> float:
    """The ``wait=N`` of a ``Prefer`` header (RFC 7240), capped at ``max_wait_s``; 0 when absent."""
    if not prefer:
        return 0.0
    match = _PREFER_WAIT.search(prefer)
    return min(float(match[1]), max_wait_s) if match else 0.0
