"""Celery's remote control, cut down to commands that only read.

Remote control travels over Redis (pub/sub and a broadcast queue), so anyone who can write to
Redis can send a command, and Celery's own set changes the worker: ``shutdown``,
``add_consumer`` (a queue the gate does not check), ``revoke``, ``pool_restart``,
``rate_limit``, and ``hello``, which merges the revoked task ids it is sent. A worker keeps
only ``ping`` (``imagegen health worker``) and the inspection Flower shows; any other command
is answered with an error, logged, and changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, MutableMapping
from typing import Any

__all__ = ["ALLOWED_COMMANDS", "restrict_remote_control"]

log = logging.getLogger("imagegen.worker")

ALLOWED_COMMANDS = frozenset(
    {
        "ping",
        # What Flower inspects (flower.inspector.Inspector.inspect_methods), with the older
        # names Celery still answers to.
        "stats",
        "active_queues",
        "registered",
        "dump_tasks",
        "scheduled",
        "dump_schedule",
        "active",
        "dump_active",
        "reserved",
        "dump_reserved",
        "revoked",
        "dump_revoked",
        "conf",
        "dump_conf",
        # Read-only and harmless: the logical clock, and a heartbeat event sent now.
        "clock",
        "heartbeat",
    }
)

Handler = Callable[..., Any]


def restrict_remote_control(handlers: MutableMapping[str, Handler]) -> list[str]:
    """Replace every command of ``handlers`` (Celery's ``Panel.data``) that is not allowed by
    a refusal; returns the names refused."""
    refused = sorted(name for name in handlers if name not in ALLOWED_COMMANDS)
    for name in refused:
        handlers[name] = _refusal(name)
    return refused


def _refusal(name: str) -> Handler:
    def refuse(state: Any, **arguments: Any) -> dict[str, str]:
        log.warning("remote control command refused", extra={"command": name})
        return {"error": f"{name} is not allowed on this worker"}

    return refuse
