"""Celery task messages, built without Celery.

The producer writes a job record and the message that runs it in one Redis transaction, so a
job is never recorded without being queued, nor queued without a record. That needs the message
as kombu's Redis transport stores it: a JSON envelope pushed with LPUSH onto the list named after
the queue, holding a Celery protocol-2 message. The body is plain JSON (``body_encoding``
``utf-8``, which kombu reads as is), so backends in other languages can push the same envelope
themselves; docs/submitting/redis.md shows one.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from typing import Any

from imagegen.contract import PRIORITIES

__all__ = [
    "DELIVERY_ID_PLACEHOLDER",
    "DELIVER_TASK",
    "EMBED",
    "GENERATE_TASK",
    "JOB_ID_PLACEHOLDER",
    "JOB_QUEUES",
    "NONCE_PLACEHOLDER",
    "QUEUES",
    "WEBHOOK_QUEUE",
    "delivery_message_template",
    "generate_message_template",
    "task_message",
]

GENERATE_TASK = "imagegen.generate"
DELIVER_TASK = "imagegen.deliver_webhook"
# One Celery queue per priority class.
JOB_QUEUES: tuple[str, ...] = PRIORITIES
WEBHOOK_QUEUE = "webhooks"
QUEUES = (*JOB_QUEUES, WEBHOOK_QUEUE)
# Lua scripts that create a delivery put its id where this stands in a message template.
DELIVERY_ID_PLACEHOLDER = "__DELIVERY_ID__"
# ... and a job's id (and a nonce that keeps delivery tags apart) in a generate template.
JOB_ID_PLACEHOLDER = "__JOB_ID__"
NONCE_PLACEHOLDER = "__NONCE__"
_ORIGIN = f"imagegen-producer@{socket.gethostname()}:{os.getpid()}"
# The third part of a protocol-2 body: no callbacks, no canvas.
EMBED: dict[str, None] = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def task_message(
    task_name: str,
    task_id: str,
    args: list[Any],
    queue: str,
    *,
    kwargs: dict[str, Any] | None = None,
    delivery_tag: str | None = None,
) -> str:
    """The raw message kombu's Redis transport expects to find on ``queue``'s list."""
    kwargs = kwargs or {}
    body = json.dumps([args, kwargs, EMBED])
    envelope = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task_name,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            # What Flower shows for the arguments: the job id, never the prompt.
            "argsrepr": repr(args),
            "kwargsrepr": repr(sorted(kwargs)),
            "origin": _ORIGIN,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "utf-8",
            "delivery_tag": delivery_tag or str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope, separators=(",", ":"))


def generate_message_template(queue: str) -> str:
    """A generate message for ``queue`` whose job id is ``JOB_ID_PLACEHOLDER``, for a Lua
    script that sends a job again; its delivery tag ends in ``NONCE_PLACEHOLDER``."""
    return task_message(
        GENERATE_TASK,
        JOB_ID_PLACEHOLDER,
        [JOB_ID_PLACEHOLDER],
        queue,
        delivery_tag=f"{JOB_ID_PLACEHOLDER}.redrive.{NONCE_PLACEHOLDER}",
    )


def delivery_message_template() -> str:
    """A webhook-delivery message whose id and argument are ``DELIVERY_ID_PLACEHOLDER``, for a
    Lua script to fill in once it knows the delivery id. The delivery tag holds the id too, so
    messages made from one template for several deliveries still have tags of their own."""
    return task_message(
        DELIVER_TASK,
        DELIVERY_ID_PLACEHOLDER,
        [DELIVERY_ID_PLACEHOLDER],
        WEBHOOK_QUEUE,
        delivery_tag=f"{DELIVERY_ID_PLACEHOLDER}.{uuid.uuid4()}",
    )
