"""Celery tasks. Thin: messaging and retries here, the work in ``worker.pipeline``."""

from __future__ import annotations

from typing import Any

from producer.messages import GENERATE_TASK
from worker.app import app
from worker.pipeline import RetryLaterError, run_job
from worker.runtime import execution_owner, services

__all__ = ["generate"]


@app.task(name=GENERATE_TASK, bind=True, max_retries=None)
def generate(self: Any, job_id: str) -> dict[str, Any]:
    """Run one attempt of a job; on a retryable failure, come back after the chosen delay."""
    try:
        outcome = run_job(job_id, services(), execution_owner())
    except RetryLaterError as e:
        # Countdowns stay below retry_cap_s, well under the visibility timeout.
        raise self.retry(exc=e, countdown=e.delay_s, max_retries=None) from e
    return outcome.summary()
