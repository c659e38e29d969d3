"""Asking running workers whether they are up (Celery remote control over Redis)."""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Any

from celery import Celery

__all__ = ["worker_answers"]

_PING_TIMEOUT_S = 0.5


@lru_cache(maxsize=8)
def _control_app(redis_url: str) -> Any:
    app = Celery("imagegen-control", broker=redis_url)
    app.conf.update(accept_content=["json"], broker_connection_retry_on_startup=True)
    return app


def worker_answers(redis_url: str, name: str) -> bool:
    """True when the worker ``{name}@{this host}`` replies to a ping."""
    destination = f"{name}@{socket.gethostname()}"
    replies = _control_app(redis_url).control.ping(
        destination=[destination], timeout=_PING_TIMEOUT_S
    )
    return any(destination in reply for reply in replies or [])
