"""Celery task messages, built without Celery.

The producer writes a job record and the message that runs it in one Redis transaction, so a
job is never recorded without being queued, nor queued without a record. That needs the message
as kombu's Redis transport stores it: a JSON envelope pushed with LPUSH onto the list named after
the queue, holding a Celery protocol-2 message (base64 body). Backends in other languages can
push the same envelope themselves; the README shows one.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

__all__ = ["GENERATE_TASK", "QUEUES", "task_message"]

GENERATE_TASK = "imagegen.generate"
QUEUES = ("interactive", "batch")
_ORIGIN = f"imagegen-producer@{socket.gethostname()}:{os.getpid()}"


def task_message(
    task_name: str,
    task_id: str,
    args: list[Any],
    queue: str,
    kwargs: dict[str, Any] | None = None,
) -> str:
    """The raw message kombu's Redis transport expects to find on ``queue``'s list."""
    kwargs = kwargs or {}
    body = json.dumps(
        [args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    )
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
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
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope, separators=(",", ":"))
