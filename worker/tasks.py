"""Celery tasks. Thin: messaging and retries here, the work in ``worker.pipeline`` and
``worker.webhooks``."""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging, worker_ready, worker_shutdown

from imagegen.logs import configure_logging
from imagegen.messages import DELIVER_TASK, GENERATE_TASK
from imagegen.settings import get_settings
from worker.app import app
from worker.metrics import serve_metrics
from worker.pipeline import RetryLaterError, run_job
from worker.runtime import execution_owner, outbox_sweeper, services, webhook_sender

__all__ = ["deliver_webhook", "generate"]


@app.task(name=GENERATE_TASK, bind=True, max_retries=None)
def generate(self: Any, job_id: str) -> dict[str, Any]:
    """Run one attempt of a job; on a retryable failure, come back after the chosen delay.

    A job pushed as a raw message (with its job as a keyword) was turned into a record by the
    gate (``worker.transport``) before this runs: the task only ever sees the job id."""
    shared = services()
    try:
        outcome = run_job(job_id, shared, execution_owner())
    except RetryLaterError as e:
        # Countdowns stay below retry_cap_s, well under the visibility timeout.
        raise self.retry(exc=e, countdown=e.delay_s, max_retries=None) from e
    return outcome.summary()


@app.task(name=DELIVER_TASK)
def deliver_webhook(delivery_id: str) -> dict[str, Any]:
    """One try at one webhook delivery; its retries wait in the outbox, not in Celery."""
    return webhook_sender().deliver(delivery_id).summary()


@setup_logging.connect
def _logging(**_: object) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@worker_ready.connect
def _start_sweeper_and_metrics(**_: object) -> None:
    outbox_sweeper().start()
    settings = get_settings()
    serve_metrics(settings.worker_metrics_port, settings.worker_metrics_host)


@worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    outbox_sweeper().stop()
