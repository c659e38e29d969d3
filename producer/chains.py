"""Chains: jobs that each take the previous one's output (generate -> upscale -> cut out), sent
as one submission.

Each step is a job of its own (record, webhook, cost); a step waits in Redis until the step it
takes its image from succeeds, then its turn comes like any job's. When a step ends without an
image, every later step ends ``canceled`` with the code ``ChainStepSkipped`` and never calls
Bedrock. The chain's status is worked out from its steps; its last step's webhook also reports
``chain.succeeded`` or ``chain.failed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from imagegen.contract import JobSpec
from imagegen.errors import FieldError, InvalidRequestError
from imagegen.inputs import parse_image_ref
from imagegen.records import ChainStep, JobRecord, JobStatus

__all__ = ["MAX_CHAIN_STEPS", "MIN_CHAIN_STEPS", "ChainStatus", "bind_steps", "chain_status"]

MIN_CHAIN_STEPS = 2
MAX_CHAIN_STEPS = 10
ChainState = Literal["queued", "running", "succeeded", "failed"]


class ChainStatus(BaseModel):
    """A chain as the API reports it."""

    chain_id: str
    tenant: str | None
    created_at: datetime
    status: ChainState
    # Why it failed: the first step that ended without an image, and how.
    reason: str | None = None
    # The last step's image, once the chain succeeded.
    output_s3_uri: str | None = None
    cost_usd: float
    steps: list[ChainStep]


def bind_steps(specs: Sequence[JobSpec], job_ids: Sequence[str]) -> list[JobSpec]:
    """Each ``{"step": n}`` input becomes ``{"job": <step n's id>}``; a step may take only an
    earlier step's output."""
    if not MIN_CHAIN_STEPS <= len(specs) <= MAX_CHAIN_STEPS:
        msg = f"a chain has {MIN_CHAIN_STEPS} to {MAX_CHAIN_STEPS} steps, not {len(specs)}"
        raise InvalidRequestError([FieldError("steps", msg)])
    bound, errors = [], []
    for index, spec in enumerate(specs):
        updates = {}
        for field, value in spec.request.image_inputs().items():
            ref = parse_image_ref(value)
            if ref.kind != "step":
                continue
            if ref.step >= index:
                errors.append(
                    FieldError(
                        f"steps[{index}].request.{field}",
                        f"step {ref.step} is not an earlier step of the chain",
                    )
                )
                continue
            updates[field] = f"job:{job_ids[ref.step]}"
        request = spec.request.model_copy(update=updates) if updates else spec.request
        bound.append(spec.model_copy(update={"request": request}))
    if errors:
        raise InvalidRequestError(errors)
    return bound


def chain_status(
    chain_id: str, tenant: str | None, created_at: datetime, steps: Sequence[JobRecord]
) -> ChainStatus:
    """Where the chain stands: failed at its first step without an image, succeeded when the
    last step did, running once a step started, queued before."""
    reason, state = None, "queued"
    for index, step in enumerate(steps):
        if step.is_terminal and step.status is not JobStatus.SUCCEEDED:
            detail = f": {step.error_code}" if step.error_code else ""
            reason = f"step {index} ({step.job_id}) ended {step.status.value}{detail}"
            break
    if reason is not None:
        state = "failed" if all(step.is_terminal for step in steps) else "running"
    elif steps and steps[-1].status is JobStatus.SUCCEEDED:
        state = "succeeded"
    elif any(step.status is not JobStatus.QUEUED for step in steps):
        state = "running"
    return ChainStatus(
        chain_id=chain_id,
        tenant=tenant,
        created_at=created_at,
        status=state,  # type: ignore[arg-type]
        reason=reason,
        output_s3_uri=steps[-1].s3_uri if state == "succeeded" else None,
        cost_usd=round(sum(step.cost_usd or 0 for step in steps), 6),
        steps=[ChainStep.model_validate(step) for step in steps],
    )
