"""The Celery application: JSON only, explicit queues, at-least-once delivery.

Start a worker with ``imagegen worker`` or ``celery -A worker.app worker``.
"""

from __future__ import annotations

from celery import Celery
from kombu import Exchange, Queue
from kombu.connection import failover_strategies

from imagegen.messages import GENERATE_TASK, QUEUES
from imagegen.redis.connection import (
    broker_tls,
    broker_transport_options,
    broker_url,
    uses_sentinel,
)
from imagegen.settings import Settings, get_settings

__all__ = ["STAY_ON_FIRST_URL", "StayOnFirstUrl", "app", "make_app"]


def make_app(settings: Settings) -> Celery:
    celery = Celery("imagegen", broker=broker_url(settings), include=["worker.tasks"])
    # Every message is checked before Celery reads it; malformed ones go to the quarantine.
    # Through Sentinel, kombu finds the primary (and follows a failover) itself.
    gated = "GatedSentinelTransport" if uses_sentinel(settings) else "GatedTransport"
    celery.conf.broker_transport = f"worker.transport:{gated}"
    if uses_sentinel(settings):
        # By name: the setting is read back by ``inspect conf`` (Flower), which needs JSON.
        celery.conf.broker_failover_strategy = STAY_ON_FIRST_URL
    celery.conf.broker_use_ssl = broker_tls(settings)
    transport_options = {
        # A delivered message is kept until its ack in this process only, not copied to Redis
        # (kombu's `unacked` hash, two MULTI/EXEC round trips a message): every message on our
        # queues belongs to a record that brings its work back when the process dies. A
        # released job nobody claimed is put back to wait after dispatch_redrive_grace_s, a
        # running one when its lease ends, a queued webhook delivery after
        # webhook_handoff_grace_s. A worker that stops cleanly still hands back the messages it
        # took and did not start.
        "ack_emulation": False,
        # Workers listening on "interactive,batch" always empty interactive first.
        "queue_order_strategy": "priority",
        **broker_transport_options(settings),
    }
    celery.conf.update(
        # JSON only: a pickle message is refused, never loaded.
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue=QUEUES[0],
        task_create_missing_queues=False,
        # At-least-once: a message is acknowledged after its task ran, and given back when
        # the worker dies. Every effect of a task is idempotent by job id.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport_options,
        # Our job records are the results store; Celery keeps no results of its own.
        task_ignore_result=True,
        # Flower follows the fleet through task events.
        worker_send_task_events=True,
        task_send_sent_event=True,
        # Enforced by the prefork pool; with threads, the Bedrock and S3 timeouts bound a task.
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        worker_pool=settings.worker_pool,
        worker_concurrency=settings.worker_concurrency,
        broker_connection_retry_on_startup=True,
        # For the health check's ping and Flower's inspection; every command that changes the
        # worker is refused (worker.remote_control, applied as the worker starts).
        worker_enable_remote_control=True,
    )
    if settings.celery_rate_limit:
        # Celery's limit is per worker process; the shared limiter is worker.limiter.
        celery.conf.task_annotations = {GENERATE_TASK: {"rate_limit": settings.celery_rate_limit}}
    return celery


class StayOnFirstUrl:
    """kombu's failover strategy for the Sentinel URLs: never switch to the next one. Each URL
    names a Sentinel, and the channel asks all of them for the primary whichever URL it was
    opened with, so the next URL reaches the same primary; but kombu takes a switched-to URL's
    transport from its scheme (``sentinel://``), and the worker would go on with kombu's own
    transport: no gate, and none of ``worker.transport``'s reconnect fixes."""

    def __init__(self, urls: list[str]) -> None:
        self._first = urls[0]

    def __iter__(self) -> StayOnFirstUrl:
        return self

    def __next__(self) -> str:
        return self._first

    def __bool__(self) -> bool:
        return False  # kombu switches only while its strategy is truthy


STAY_ON_FIRST_URL = "imagegen-stay-on-first-url"
failover_strategies[STAY_ON_FIRST_URL] = StayOnFirstUrl

app = make_app(get_settings())
