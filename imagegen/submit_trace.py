"""The span of a submission, and the trace each job it stores keeps.

A submission is one ``send`` (PRODUCER, by the messaging conventions: ``send {queue}``, with
``messaging.*`` attributes) in the current context: the caller's request, a Python caller's own
span, or an intake message's ``traceparent``. Every job stored keeps the span's
``traceparent``; while the span is recorded, also where the job stands in the dispatcher as it
arrives (its place among the waiting jobs of its model and its tenant's share of the rate), for
the span of its wait (``worker.job_spans``). With no SDK and no caller's context there is no
trace, and nothing is kept.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode

from imagegen import tracing
from imagegen.records import NewJob
from imagegen.store.jobs import CreateOutcome

if TYPE_CHECKING:
    from imagegen.store.dispatch import Dispatch

__all__ = ["TracedSubmission", "traced_submission"]


class TracedSubmission:
    """The jobs to store, each with its trace; ``stored`` tells the span how it went."""

    def __init__(self, span: Span, jobs: list[NewJob]) -> None:
        self._span = span
        self.jobs = jobs

    def stored(self, outcomes: Sequence[tuple[CreateOutcome, str]]) -> None:
        if not self._span.is_recording():
            return
        if outcomes and outcomes[0][0] is CreateOutcome.FULL:
            self._span.set_attribute("error.type", "QueueFull")
            self._span.set_status(Status(StatusCode.ERROR, "the caps on open jobs had no room"))
            return
        created = sum(1 for outcome, _ in outcomes if outcome is CreateOutcome.CREATED)
        self._span.set_attribute("imagegen.jobs.created", created)


@contextmanager
def traced_submission(jobs: list[NewJob], dispatch: Dispatch) -> Iterator[TracedSubmission]:
    """The ``send`` span around storing ``jobs``, and the jobs carrying its trace (none, and
    no span at all, while tracing is off and the caller has no trace)."""
    if not tracing.may_trace():
        yield TracedSubmission(INVALID_SPAN, jobs)
        return
    queues = {job.spec.priority for job in jobs}
    queue = next(iter(queues)) if len(queues) == 1 else None
    with tracing.TRACER.start_as_current_span(
        f"send {queue}" if queue else "send",
        kind=SpanKind.PRODUCER,
        attributes=_attributes(jobs, queue),
    ) as span:
        traceparent = tracing.traceparent_of(span)
        if traceparent is not None:
            places = _places(jobs, dispatch) if span.is_recording() else {}
            jobs = [
                dataclasses.replace(
                    job,
                    traceparent=traceparent,
                    position_at_submit=places.get(index, (None, None))[0],
                    share_at_submit=places.get(index, (None, None))[1],
                )
                for index, job in enumerate(jobs)
            ]
        yield TracedSubmission(span, jobs)


def _attributes(jobs: list[NewJob], queue: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": tracing.MESSAGING_SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
    }
    if queue:
        attributes["messaging.destination.name"] = queue
    if len(jobs) == 1:
        attributes["messaging.message.id"] = jobs[0].job_id
    else:
        attributes["messaging.batch.message_count"] = len(jobs)
    first = jobs[0] if jobs else None
    if first is not None and first.tenant:
        attributes["imagegen.tenant"] = first.tenant
    if first is not None and first.batch_id:
        attributes["imagegen.batch_id"] = first.batch_id
    models = {job.model_id for job in jobs}
    if len(models) == 1:
        attributes["gen_ai.request.model"] = next(iter(models))
    return attributes


def _places(jobs: list[NewJob], dispatch: Dispatch) -> dict[int, tuple[int, float]]:
    """Where each job that joins a waiting set will stand (one estimate per model, tenant and
    class): its place among the model's waiting jobs and its tenant's share, by index."""
    groups: dict[tuple[str, str | None, str], list[int]] = defaultdict(list)
    for index, job in enumerate(jobs):
        if job.after_job_id is None:
            groups[(job.model_id, job.tenant, job.spec.priority)].append(index)
    places: dict[int, tuple[int, float]] = {}
    for (model_id, tenant, priority), indexes in groups.items():
        found = dispatch.estimates(
            model_id,
            tenant,
            priority,
            [(jobs[i].expires_ms, ahead) for ahead, i in enumerate(indexes)],
        )
        for index, estimate in zip(indexes, found, strict=False):
            places[index] = (estimate.position, round(estimate.share, 4))
    return places
