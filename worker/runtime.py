"""The per-process services a worker's threads share: one Redis pool, one boto3 client each."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, cast

from celery.signals import worker_process_init

from imagegen.bedrock import PoolClients, make_bedrock_client
from imagegen.epoch import MARK_TIMEOUTS_S, EpochWatch
from imagegen.redis.connection import connect
from imagegen.s3 import make_s3_client
from imagegen.settings import Settings, get_settings
from imagegen.store.pool_stats import PoolStats
from imagegen.store.quarantine import Quarantine
from worker.intake import Intake
from worker.lost_images import LostImages
from worker.pipeline import Services
from worker.release_loop import ReleaseLoop
from worker.send_now import SendNow
from worker.sweeper import OutboxSweeper
from worker.webhooks import WebhookSender

__all__ = [
    "build_services",
    "execution_owner",
    "outbox_sweeper",
    "quarantine",
    "release_loop",
    "services",
    "webhook_sender",
]

T = TypeVar("T")
_lock = threading.RLock()
_built: dict[str, Any] = {}
# Connections beyond the thread count, for the occasional HEAD or parked-image read.
_SPARE_CONNECTIONS = 4
# The sweeper thread, the release loop and the webhook sender beside the job threads.
_SWEEPER_CONNECTIONS = 3


def build_services(settings: Settings) -> Services:
    pool_size = settings.worker_concurrency + _SPARE_CONNECTIONS
    redis_client = connect(
        settings,
        max_connections=pool_size + _SWEEPER_CONNECTIONS + settings.webhook_send_threads,
    )
    return Services.on(
        redis_client,
        settings,
        bedrock=make_bedrock_client(settings, max_pool_connections=pool_size),
        s3=make_s3_client(settings, attempts=1, max_pool_connections=pool_size),
        pools=PoolClients(settings, max_pool_connections=pool_size),
        pool_stats=PoolStats(redis_client),
        send_now=send_now if settings.webhook_send_threads else None,
        lost_images=LostImages(redis_client, settings),
    )


def _once(name: str, build: Callable[[], T]) -> T:
    """This process's ``name``, built on first use (thread-safe)."""
    found = _built.get(name)
    if found is None:
        with _lock:
            found = _built.get(name)
            if found is None:
                found = _built[name] = build()
    return cast("T", found)


def services() -> Services:
    """This process's services."""
    return _once("services", lambda: build_services(get_settings()))


def quarantine() -> Quarantine:
    """This process's view of the quarantine (the gate in ``worker.transport`` writes it)."""
    return _once("quarantine", lambda: Quarantine(services().store.redis))


def webhook_sender() -> WebhookSender:
    """This process's webhook sender."""

    def build() -> WebhookSender:
        shared = services()
        return WebhookSender(shared.store.redis, shared.settings, shared.s3)

    return _once("webhook_sender", build)


def send_now() -> SendNow:
    """This process's threads that send finished jobs' webhooks at once."""

    def build() -> SendNow:
        return SendNow(webhook_sender().deliver_claimed, services().settings.webhook_send_threads)

    return _once("send_now", build)


def intake() -> Intake:
    """This process's reader of the plain intake and of raw jobs in Celery messages."""

    def build() -> Intake:
        shared = services()
        return Intake(shared.store, shared.dispatch, shared.settings, s3=lambda: shared.s3)

    return _once("intake", build)


def release_loop() -> ReleaseLoop:
    """This process's release loop (the dispatcher's clock)."""

    def build() -> ReleaseLoop:
        shared = services()
        return ReleaseLoop(shared.dispatch, shared.settings, read_intake=intake().read_list)

    return _once("release_loop", build)


def outbox_sweeper() -> OutboxSweeper:
    """This process's maintenance sweeper."""

    def build() -> OutboxSweeper:
        shared = services()
        s3 = make_s3_client(shared.settings, attempts=1, timeouts_s=MARK_TIMEOUTS_S)
        watch = EpochWatch(shared.store.redis, s3, shared.settings)
        return OutboxSweeper(shared.store.redis, shared.settings, epoch_watch=watch)

    return _once("outbox_sweeper", build)


@worker_process_init.connect
def _fresh_after_fork(**_: object) -> None:
    # A forked pool child must not share its parent's sockets.
    _built.clear()


def execution_owner() -> str:
    """A lease owner id unique to one run of one task."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:10]}"
