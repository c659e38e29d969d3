"""Checking a raw message from our queues before anything of Celery's reads it.

Anyone who can write to Redis can push onto ``interactive``, ``batch`` or ``webhooks``. Celery
trusts what it pops: a body of ``null``, a missing ``id`` header, bad base64, or a header such as
``expires: []`` or ``timelimit: "abc"`` stops a worker. ``check_envelope`` accepts only a
well-formed task of ours (the envelope kombu's Redis transport stores, a protocol-2 body, one of
our task names on its own queue, arguments of the right shape) and otherwise says why, in a short
reason code and a detail that never quotes the message. What Celery then reads is
``CheckedTask.message``: an envelope rebuilt from the checked fields alone, so no other header of
the original reaches it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from imagegen.ids import STORED_JOB_ID_PATTERN, is_valid_job_id
from imagegen.messages import DELIVER_TASK, GENERATE_TASK, JOB_QUEUES, WEBHOOK_QUEUE, task_message

__all__ = ["MAX_MESSAGE_BYTES", "CheckedTask", "MalformedMessageError", "check_envelope"]

# A raw job (prompt, negative prompt, metadata) fits well within this.
MAX_MESSAGE_BYTES = 256 * 1024
_JOB_ID = re.compile(STORED_JOB_ID_PATTERN)
# Delivery ids: {job_id}:{event}[:{replays}] for a job's and a chain's events, and
# {job_id}:tenant.budget_warning:{daily|monthly}[:{YYYY-MM-DD|YYYY-MM}] for a tenant's (without
# the period: a message queued before deliveries named it).
_DELIVERY_ID = re.compile(
    STORED_JOB_ID_PATTERN.removesuffix("$")
    + r":(?:(?:job|chain)\.[a-z_]{1,24}(?::\d{1,6})?"
    + r"|tenant\.budget_warning:(?:daily|monthly)(?::\d{4}-\d{2}(?:-\d{2})?)?)$"
)
_BODY_ENCODINGS = ("utf-8", "base64")
_TASK_QUEUES = {GENERATE_TASK: JOB_QUEUES, DELIVER_TASK: (WEBHOOK_QUEUE,)}


class MalformedMessageError(ValueError):
    """A message that is not a well-formed task of ours; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class CheckedTask:
    """A well-formed task message: what it asks for, and its delivery tag (kombu acknowledges
    and restores a message by it)."""

    task: str
    task_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    delivery_tag: str

    def message(self, queue: str) -> dict[str, Any]:
        """The envelope to hand to Celery: our own, built from the checked fields only."""
        rebuilt = task_message(
            self.task, self.task_id, self.args, queue, delivery_tag=self.delivery_tag
        )
        parsed: dict[str, Any] = json.loads(rebuilt)
        return parsed


def _refuse(reason: str, detail: str) -> MalformedMessageError:
    return MalformedMessageError(reason, detail)


def _no_constants(name: str) -> None:
    raise _refuse("not-json", f"{name} is not JSON")


def _loads(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        if isinstance(e, MalformedMessageError):
            raise
        raise _refuse("not-json", f"{what} is not JSON") from None


def check_envelope(raw: str | bytes, queue: str) -> CheckedTask:
    """The task in ``raw`` (popped from ``queue``); ``MalformedMessageError`` otherwise."""
    if len(raw) > MAX_MESSAGE_BYTES:
        raise _refuse("too-large", f"{len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    envelope = _loads(raw, "the message")
    if not isinstance(envelope, dict):
        raise _refuse("not-an-object", f"the message is a JSON {type(envelope).__name__}")
    headers, properties = envelope.get("headers"), envelope.get("properties")
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise _refuse("bad-envelope", "headers and properties must be JSON objects")
    if envelope.get("content-type") != "application/json":
        raise _refuse("bad-content-type", "content-type must be application/json")
    if envelope.get("content-encoding") != "utf-8":
        raise _refuse("bad-content-type", "content-encoding must be utf-8")
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        raise _refuse("bad-envelope", "properties.delivery_tag must be a string")
    if not isinstance(properties.get("delivery_info", {}), dict):
        raise _refuse("bad-envelope", "properties.delivery_info must be an object")
    task, task_id = headers.get("task"), headers.get("id")
    if task not in _TASK_QUEUES:
        raise _refuse("unknown-task", "headers.task is not a task of ours")
    if queue not in _TASK_QUEUES[task]:
        raise _refuse("wrong-queue", f"{task} does not run from {queue}")
    args, kwargs = _body(envelope, properties)
    if task == GENERATE_TASK:
        _check_generate(task_id, args, kwargs)
    else:
        _check_deliver(task_id, args, kwargs)
    return CheckedTask(str(task), str(task_id), args, kwargs, tag)


def _body(envelope: dict[str, Any], properties: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    body, encoding = envelope.get("body"), properties.get("body_encoding", "utf-8")
    if not isinstance(body, str) or encoding not in _BODY_ENCODINGS:
        raise _refuse("bad-body", "body must be a string in utf-8 or base64")
    if encoding == "base64":
        try:
            body = base64.b64decode(body, validate=True).decode()
        except (binascii.Error, ValueError):
            raise _refuse("bad-body", "body is not base64 of UTF-8 text") from None
    decoded = _loads(body, "the body")
    if (
        not isinstance(decoded, list)
        or len(decoded) != 3
        or not isinstance(decoded[0], list)
        or not isinstance(decoded[1], dict)
        or not isinstance(decoded[2], dict)
    ):
        raise _refuse("bad-body", "body must be [args, kwargs, embed] (Celery protocol 2)")
    return decoded[0], decoded[1]


def _check_generate(task_id: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    if not isinstance(task_id, str) or not _JOB_ID.match(task_id):
        raise _refuse("bad-arguments", "headers.id must be a job id")
    if args != [task_id]:
        raise _refuse("bad-arguments", "args must be [job_id], the same as headers.id")
    if set(kwargs) - {"job"}:
        raise _refuse("bad-arguments", "the only keyword argument is job")
    # A raw job has no tenant: its id may not be one of a tenant's namespace ({tenant}.{id}).
    if "job" in kwargs and not is_valid_job_id(task_id):
        raise _refuse("bad-arguments", "a raw job's headers.id must be a plain job id")


def _check_deliver(task_id: Any, args: list[Any], kwargs: dict[str, Any]) -> None:
    if not isinstance(task_id, str) or not _DELIVERY_ID.match(task_id):
        raise _refuse("bad-arguments", "headers.id must be a delivery id")
    if args != [task_id] or kwargs:
        raise _refuse("bad-arguments", "args must be [delivery_id], with no keyword arguments")
