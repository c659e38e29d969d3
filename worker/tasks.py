"""Celery tasks. Thin: messaging and retries here, the work in ``worker.pipeline`` and
``worker.webhooks``."""

from __future__ import annotations

import json
from typing import Any

from celery.signals import setup_logging, worker_init, worker_ready, worker_shutdown
from celery.worker.control import Panel

from imagegen import tracing
from imagegen.logs import configure_logging
from imagegen.messages import DELIVER_TASK, GENERATE_TASK
from imagegen.records import JobStatus
from imagegen.settings import get_settings
from worker.app import app
from worker.metrics import serve_metrics
from worker.pipeline import run_job
from worker.remote_control import restrict_remote_control
from worker.runtime import (
    execution_owner,
    outbox_sweeper,
    release_loop,
    services,
    webhook_sender,
)

__all__ = ["JobEndedWithoutImage", "deliver_webhook", "generate"]


class JobEndedWithoutImage(Exception):  # noqa: N818 (it names what happened, not an error)
    """The task's job ended failed, filtered, canceled, expired or past its budget: the task
    raises it so Flower (and Celery's events) show the task as failed; the job's record says
    why. Celery logs it as expected, without a traceback, and acknowledges the message."""


# The final statuses Flower shows as a failed task.
_ENDED_WITHOUT_IMAGE = frozenset(
    {
        JobStatus.FAILED.value,
        JobStatus.FILTERED.value,
        JobStatus.CANCELED.value,
        JobStatus.EXPIRED.value,
        JobStatus.BUDGET_EXCEEDED.value,
    }
)


@app.task(name=GENERATE_TASK, throws=(JobEndedWithoutImage,))
def generate(job_id: str) -> dict[str, Any]:
    """Run one attempt of a job the dispatcher released. A retryable failure puts the job back
    in the dispatcher for its retry's due time; no countdown is held here.

    A job pushed as a raw message (with its job as a keyword) was turned into a waiting job by
    the gate (``worker.transport``); its own release is the message this task runs."""
    outcome = None
    try:
        outcome = run_job(job_id, services(), execution_owner())
    finally:
        # A finished job frees a worker thread (and maybe a cap's slot): release what is due
        # (its finish released into that slot already, in its round trip, when it could).
        if outcome is not None and outcome.release is not None and outcome.model_id:
            release_loop().released(outcome.model_id, outcome.release)
        else:
            release_loop().wake(outcome.model_id if outcome else None)
    if outcome.status in _ENDED_WITHOUT_IMAGE:
        raise JobEndedWithoutImage(json.dumps(outcome.summary()))
    return outcome.summary()


@app.task(name=DELIVER_TASK)
def deliver_webhook(delivery_id: str) -> dict[str, Any]:
    """One try at one webhook delivery; its retries wait in the outbox, not in Celery."""
    return webhook_sender().deliver(delivery_id).summary()


@setup_logging.connect
def _logging(**_: object) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@worker_init.connect
def _only_reading_commands(**_: object) -> None:
    # Before the consumer, and with it the remote-control mailbox, starts.
    restrict_remote_control(Panel.data)
    # Before the pool forks: the SDK's span processor starts again in each child.
    tracing.configure("imagegen-worker")


@worker_ready.connect
def _start_sweeper_and_metrics(**_: object) -> None:
    outbox_sweeper().start()
    release_loop().start()
    settings = get_settings()
    serve_metrics(settings.worker_metrics_port, settings.worker_metrics_host)


@worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    release_loop().stop()
    outbox_sweeper().stop()
