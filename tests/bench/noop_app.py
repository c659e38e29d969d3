"""The Celery baseline of ``tests/bench/whole_job.py``: one no-op task on a plain Celery app (and
a task that sleeps, the baseline of ``tests/bench/worker_memory.py``).

Configured like the service's own app where it matters for Redis (acks_late, prefetch 1,
reject on worker lost, JSON only, the threads pool, task events for Flower), plus a Redis result
backend that stores the task's return value. A worker runs it as

    NOOP_REDIS_URL=redis://127.0.0.1:PORT/0 NOOP_EVENTS=1 NOOP_CONCURRENCY=8 \\
        python -m celery -A tests.bench.noop_app worker --pool threads ...

(from the repository root, or with it on ``PYTHONPATH``).
"""

from __future__ import annotations

import os
import time

from celery import Celery

__all__ = ["NOOP_TASK", "SLEEP_TASK", "app", "make_app"]

NOOP_TASK = "bench.noop"
SLEEP_TASK = "bench.sleep"
URL_ENV = "NOOP_REDIS_URL"
EVENTS_ENV = "NOOP_EVENTS"
CONCURRENCY_ENV = "NOOP_CONCURRENCY"


def make_app(redis_url: str, *, events: bool, concurrency: int) -> Celery:
    """A Celery app whose broker and result backend are both ``redis_url``."""
    celery = Celery("noop", broker=redis_url, backend=redis_url)
    celery.conf.update(
        task_serializer="json",
        result_serializer="json",
        event_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_reject_on_worker_lost=True,
        worker_send_task_events=events,
        worker_pool="threads",
        worker_concurrency=concurrency,
        broker_connection_retry_on_startup=True,
    )

    @celery.task(name=NOOP_TASK, shared=False)
    def noop() -> int:
        return 1

    @celery.task(name=SLEEP_TASK, shared=False)
    def sleep(seconds: float) -> int:
        time.sleep(seconds)
        return 1

    return celery


app = make_app(
    os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0"),
    events=os.environ.get(EVENTS_ENV, "1") not in ("", "0", "false", "no"),
    concurrency=int(os.environ.get(CONCURRENCY_ENV, "8")),
)
