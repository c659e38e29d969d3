"""The one way to connect to Redis: every client (API, worker, library, CLI, Celery's broker
and Flower) gets its address, timeouts, health checks and pool size from the settings here.

``IMAGEGEN_REDIS_URL`` names one server (``redis://``, ``rediss://``) or a primary that Redis
Sentinel manages (``redis+sentinel://``, ``imagegen.redis.urls``). Through Sentinel, a client
asks the Sentinels for the primary when it opens a connection; after a failover its connections
to the old primary fail (or answer READONLY, which redis-py turns into a connection error), are
dropped, and the command is retried on the primary the Sentinels name now. Celery's broker does
the same through kombu's Sentinel transport."""

from __future__ import annotations

import ssl
from typing import Any
from urllib.parse import quote

import redis
from redis.sentinel import Sentinel

from imagegen.redis.failover import (
    BlockingSentinelConnectionPool,
    FailoverConnection,
    FailoverSSLConnection,
    demoted_primary_retry,
)
from imagegen.redis.replica_ack import ReplicaAck
from imagegen.redis.urls import SentinelUrl, is_sentinel_url, parse_sentinel_url
from imagegen.settings import Settings

__all__ = [
    "broker_tls",
    "broker_transport_options",
    "broker_url",
    "connect",
    "sentinel_url",
    "uses_sentinel",
    "uses_tls",
]


def connect(
    settings: Settings, *, max_connections: int | None = None, timeout_s: float | None = None
) -> redis.Redis:
    """A client with ``decode_responses=True`` on a bounded pool: a caller that finds every
    connection busy waits up to ``redis_pool_timeout_s``, then gets a ``ConnectionError``.
    A ``rediss://`` URL is TLS, checked against ``redis_tls_ca_file`` (or the system's CAs).
    ``timeout_s`` bounds the pool wait, the connect and every command instead of the settings'
    timeouts: for a client whose commands must never hold anything up. Its writes the service
    answers for wait for a replica as ``redis_replica_ack`` says."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "max_connections": max_connections or settings.redis_max_connections,
        "timeout": timeout_s or settings.redis_pool_timeout_s,
        "socket_connect_timeout": timeout_s or settings.redis_connect_timeout_s,
        "socket_timeout": timeout_s or settings.redis_socket_timeout_s,
        "socket_keepalive": True,
        "health_check_interval": settings.redis_health_check_interval_s,
        "retry_on_timeout": False,
    }
    if uses_sentinel(settings):
        client = _sentinel_client(settings, sentinel_url(settings), options)
    else:
        if uses_tls(settings):
            options |= {"ssl_cert_reqs": "required", "ssl_ca_certs": settings.redis_tls_ca_file}
        pool = redis.BlockingConnectionPool.from_url(settings.redis_url, **options)
        client = redis.Redis(connection_pool=pool)
    ReplicaAck.register(client, ReplicaAck.from_settings(settings, options["socket_timeout"]))
    return client


def _sentinel_client(settings: Settings, url: SentinelUrl, options: dict[str, Any]) -> redis.Redis:
    tls: dict[str, Any] = {}
    if url.tls:
        tls = {"ssl_cert_reqs": "required", "ssl_ca_certs": settings.redis_tls_ca_file}
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(url.sentinels), sentinel_kwargs=_sentinel_kwargs(settings, url)
    )
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        url.master_name,
        connection_pool_class=BlockingSentinelConnectionPool,
        connection_class=FailoverSSLConnection if url.tls else FailoverConnection,
        retry=demoted_primary_retry(),
        db=url.db,
        username=url.username,
        password=url.password,
        **options,
        **tls,
    )
    return client


def _sentinel_kwargs(settings: Settings, url: SentinelUrl) -> dict[str, Any]:
    """How to reach the Sentinels themselves: the same timeouts and TLS, their own password."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_keepalive": True,
    }
    if settings.redis_sentinel_password is not None:
        kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
    if url.tls:
        kwargs |= {
            "ssl": True,
            "ssl_cert_reqs": "required",
            "ssl_ca_certs": settings.redis_tls_ca_file,
        }
    return kwargs


def uses_sentinel(settings: Settings) -> bool:
    return is_sentinel_url(settings.redis_url)


def sentinel_url(settings: Settings) -> SentinelUrl:
    return parse_sentinel_url(settings.redis_url)


def uses_tls(settings: Settings) -> bool:
    if uses_sentinel(settings):
        return sentinel_url(settings).tls
    return settings.redis_url.startswith("rediss://")


def broker_url(settings: Settings) -> str:
    """Celery's broker URL: the Redis URL, or for Sentinel kombu's form (``sentinel://`` once
    per Sentinel, separated by ``;``; the primary's name is a transport option)."""
    if not uses_sentinel(settings):
        return settings.redis_url
    url = sentinel_url(settings)
    credentials = ""
    if url.username or url.password:
        credentials = f"{_quote(url.username or '')}:{_quote(url.password or '')}@"
    hosts = [f"[{host}]" if ":" in host else host for host, _ in url.sentinels]
    return ";".join(
        f"sentinel://{credentials}{host}:{port}/{url.db}"
        for host, (_, port) in zip(hosts, url.sentinels, strict=True)
    )


def _quote(text: str) -> str:
    return quote(text, safe="")


def broker_tls(settings: Settings) -> dict[str, Any] | None:
    """Celery's ``broker_use_ssl`` for a TLS URL (certificate required), else None."""
    if not uses_tls(settings):
        return None
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.redis_tls_ca_file:
        options["ssl_ca_certs"] = settings.redis_tls_ca_file
    return options


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """The same timeouts for kombu's Redis transport (Celery's broker connections), and for
    Sentinel the primary's name and how to reach the Sentinels."""
    options: dict[str, Any] = {
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "socket_keepalive": True,
        "health_check_interval": settings.redis_health_check_interval_s,
        "max_connections": settings.redis_max_connections,
    }
    if uses_sentinel(settings):
        url = sentinel_url(settings)
        options |= {
            "master_name": url.master_name,
            "sentinel_kwargs": _sentinel_kwargs(settings, url),
        }
    return options
