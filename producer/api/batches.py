"""``/v1/batches``: submit many jobs at once (a JSON array or JSON lines) and follow them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel

from imagegen.errors import JobNotFoundError
from imagegen.ids import is_valid_job_id
from producer.api.auth import Tenant
from producer.api.bodies import batch_items, raw_body
from producer.api.problems import PROBLEM_RESPONSES, ProblemError, submission_problems
from producer.api.state import ApiState, State
from producer.client import BatchStatus

__all__ = ["BatchCreated", "BatchResource", "owned_batch", "router"]

router = APIRouter(tags=["batches"])


class BatchCreated(BaseModel):
    batch_id: str
    url: str
    size: int
    job_ids: list[str]


class BatchResource(BatchStatus):
    url: str


_BATCH_BODY_SCHEMA = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"type": "array", "items": {"$ref": "#/components/schemas/JobSpec"}}
        },
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}


@router.post(
    "/v1/batches",
    status_code=202,
    response_model=BatchCreated,
    responses=PROBLEM_RESPONSES,
    openapi_extra={"requestBody": _BATCH_BODY_SCHEMA},
    summary="Submit a batch (JSON array or JSON lines)",
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
    response_model=BatchResource,
    responses=PROBLEM_RESPONSES,
    summary="A batch's progress",
)
def get_batch(batch_id: str, tenant_id: Tenant, state: State) -> BatchResource:
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
