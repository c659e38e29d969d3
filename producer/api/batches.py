"""``/v1/batches``: submit many jobs at once (a JSON array or JSON lines) and follow them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from imagegen.errors import JobNotFoundError
from imagegen.ids import is_valid_job_id
from producer.api.auth import Tenant
from producer.api.bodies import batch_items, raw_body
from producer.api.problems import ProblemError, problem_responses, submission_problems
from producer.api.state import ApiState, State
from producer.client import BatchStatus

__all__ = ["BatchCreated", "BatchResource", "owned_batch", "router"]

router = APIRouter(tags=["batches"])


class BatchCreated(BaseModel):
    batch_id: str
    url: str = Field(description="The batch's URL, relative to the API")
    size: int
    job_ids: list[str] = Field(description="Each job's id, in the order given")


class BatchResource(BatchStatus):
    url: str = Field(description="The batch's URL, relative to the API")


BatchId = Annotated[
    str, Path(description="The batch's id", examples=["01M89S0B3XQ2C6W4Z2E8N1K5TP"])
]


_BATCH_BODY_SCHEMA = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/JobSpec"}},
            "examples": {
                "two-pictures": {
                    "summary": "Two jobs (they wait in the batch class unless they say otherwise)",
                    "value": [
                        {"request": {"prompt": "a red fox"}},
                        {"request": {"prompt": "a blue whale"}, "metadata": {"row": 2}},
                    ],
                }
            },
        },
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}


@router.post(
    "/v1/batches",
    operation_id="submitBatch",
    status_code=202,
    response_model=BatchCreated,
    response_description="Queued: every job, with `Location` the batch's URL",
    responses=problem_responses(
        400,
        401,
        422,
        described={
            409: "A job id is used by another job",
            413: "Body too large, or more jobs than IMAGEGEN_MAX_BATCH_SIZE",
            429: "Too many of your jobs are not finished yet (or too many bad keys); wait for "
            "Retry-After",
        },
        examples={429: "queue-full"},
    ),
    openapi_extra={"requestBody": _BATCH_BODY_SCHEMA},
    summary="Submit a batch (JSON array or JSON lines)",
    description="Every job is checked first: one bad job refuses the whole batch, and its "
    "errors name the job by its index (`1.request.seed`).",
)
def submit_batch(
    *,
    request: Request,
    request_body: Annotated[bytes, Depends(raw_body)],
    tenant_id: Tenant,
    state: State,
    response: Response,
) -> BatchCreated:
    items = batch_items(
        request_body, request.headers.get("content-type", ""), state.settings.max_batch_size
    )
    with submission_problems("Invalid batch", "no job was queued; see errors"):
        batch_id, records = state.client.submit_batch(items, tenant=tenant_id)
    response.headers["Location"] = f"/v1/batches/{batch_id}"
    return BatchCreated(
        batch_id=batch_id,
        url=f"/v1/batches/{batch_id}",
        size=len(records),
        job_ids=[r.job_id for r in records],
    )


@router.get(
    "/v1/batches/{batch_id}",
    operation_id="getBatch",
    response_model=BatchResource,
    responses=problem_responses(
        401,
        429,
        described={404: "No such batch (another tenant's batch is as absent as a missing one)"},
        examples={404: "batch-not-found"},
    ),
    summary="Get a batch: its jobs and how many are in each status",
    description="List its jobs with `GET /v1/jobs?batch={batch_id}`.",
)
def get_batch(batch_id: BatchId, tenant_id: Tenant, state: State) -> BatchResource:
    batch = owned_batch(state, batch_id, tenant_id)
    return BatchResource(**batch.model_dump(), url=f"/v1/batches/{batch_id}")


def owned_batch(state: ApiState, batch_id: str, tenant_id: str) -> BatchStatus:
    """The tenant's batch, or 404 (someone else's batch is as absent as a missing one)."""
    try:
        batch = state.client.batch(batch_id) if is_valid_job_id(batch_id) else None
    except JobNotFoundError:
        batch = None
    if batch is None or batch.tenant != tenant_id:
        raise ProblemError(404, "Batch not found", f"no batch {batch_id}")
    return batch
