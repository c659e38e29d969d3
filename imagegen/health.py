"""Is a worker alive? A ping over Celery's remote control (Redis pub/sub), by worker name.

Used by ``imagegen health worker`` (compose and Kubernetes probes) and by the local stack.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Any

from celery import Celery

from imagegen.redis.connection import (
    broker_tls,
    broker_transport_options,
    broker_url,
    uses_sentinel,
)
from imagegen.settings import Settings

__all__ = ["answering_workers", "worker_answers"]

_PING_TIMEOUT_S = 0.5


@lru_cache(maxsize=8)
def _control_app(redis_url: str) -> Any:
    settings = Settings(redis_url=redis_url)
    app = Celery("imagegen-control", broker=broker_url(settings))
    app.conf.update(
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_transport_options=broker_transport_options(settings),
    )
    if uses_sentinel(settings):
        app.conf.update(broker_transport="sentinel", broker_use_ssl=broker_tls(settings))
    return app


def answering_workers(
    redis_url: str, destination: str | None = None, timeout_s: float = _PING_TIMEOUT_S
) -> list[str]:
    """Names of the workers that answered a ping (only ``destination`` when given)."""
    replies = _control_app(redis_url).control.ping(
        destination=[destination] if destination else None, timeout=timeout_s
    )
    return sorted(name for reply in replies or [] for name in reply)


def worker_answers(redis_url: str, name: str) -> bool:
    """True when the worker ``{name}@{this host}`` replies to a ping."""
    destination = f"{name}@{socket.gethostname()}"
    return destination in answering_workers(redis_url, destination)
