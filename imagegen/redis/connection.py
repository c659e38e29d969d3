"""The one way to connect to Redis: every client (API, worker, library, Celery's broker) gets
its timeouts, health checks and pool size from the settings here."""

from __future__ import annotations

import ssl
from typing import Any

import redis

from imagegen.settings import Settings

__all__ = ["broker_tls", "broker_transport_options", "connect", "uses_tls"]


def connect(settings: Settings, *, max_connections: int | None = None) -> redis.Redis:
    """A client with ``decode_responses=True`` on a bounded pool: a caller that finds every
    connection busy waits up to ``redis_pool_timeout_s``, then gets a ``ConnectionError``.
    A ``rediss://`` URL is TLS, checked against ``redis_tls_ca_file`` (or the system's CAs)."""
    tls: dict[str, Any] = {}
    if uses_tls(settings):
        tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": settings.redis_tls_ca_file}
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        **tls,
        decode_responses=True,
        max_connections=max_connections or settings.redis_max_connections,
        timeout=settings.redis_pool_timeout_s,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_keepalive=True,
        health_check_interval=settings.redis_health_check_interval_s,
        retry_on_timeout=False,
    )
    return redis.Redis(connection_pool=pool)


def uses_tls(settings: Settings) -> bool:
    return settings.redis_url.startswith("rediss://")


def broker_tls(settings: Settings) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` for a ``rediss://`` URL (certificate required), else None."""
    if not uses_tls(settings):
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    return options


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """The same timeouts for kombu's Redis transport (Celery's broker connections)."""
    return {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_keepalive": True,
        "health_check_interval": settings.redis_health_check_interval_s,
        "max_connections": settings.redis_max_connections,
    }
