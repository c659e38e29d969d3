"""``/v1/chains``: jobs that each take an earlier one's output, as one submission."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel

from imagegen.errors import FieldError, JobNotFoundError
from imagegen.ids import is_valid_job_id
from producer.api.auth import Tenant
from producer.api.bodies import job_object, raw_body
from producer.api.problems import PROBLEM_RESPONSES, ProblemError, submission_problems
from producer.api.state import State
from producer.chains import MAX_CHAIN_STEPS, ChainStatus

__all__ = ["ChainCreated", "ChainResource", "router"]

router = APIRouter(tags=["chains"])


class ChainCreated(BaseModel):
    chain_id: str
    url: str
    job_ids: list[str]


class ChainResource(ChainStatus):
    url: str


_CHAIN_BODY_SCHEMA = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["steps"],
                "additionalProperties": False,
                "properties": {
                    "steps": {
                        "type": "array",
                        "minItems": 2,
                        "maxItems": MAX_CHAIN_STEPS,
                        "items": {"$ref": "#/components/schemas/JobSpec"},
                        "description": 'Jobs in order; an input image {"step": n} is step '
                        "n's output (0-based, an earlier step).",
                    }
                },
            }
        }
    },
}


@router.post(
    "/v1/chains",
    status_code=202,
    response_model=ChainCreated,
    responses=PROBLEM_RESPONSES,
    openapi_extra={"requestBody": _CHAIN_BODY_SCHEMA},
    summary="Submit a chain of steps",
)
def submit_chain(
    *,
    request_body: Annotated[bytes, Depends(raw_body)],
    tenant_id: Tenant,
    state: State,
    response: Response,
) -> ChainCreated:
    data = job_object(request_body)
    steps: Any = data.get("steps")
    unknown = sorted(set(data) - {"steps"})
    if unknown or not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
        errors = [FieldError(name, "is not a field of a chain") for name in unknown] or [
            FieldError("steps", "must be a JSON array of jobs")
        ]
        raise ProblemError(422, "Invalid chain", "no job was queued; see errors", errors)
    with submission_problems("Invalid chain", "no job was queued; see errors"):
        chain_id, records = state.client.submit_chain(steps, tenant=tenant_id)
    response.headers["Location"] = f"/v1/chains/{chain_id}"
    return ChainCreated(
        chain_id=chain_id, url=f"/v1/chains/{chain_id}", job_ids=[r.job_id for r in records]
    )


@router.get(
    "/v1/chains/{chain_id}",
    response_model=ChainResource,
    responses=PROBLEM_RESPONSES,
    summary="A chain's progress, step by step",
)
def get_chain(chain_id: str, tenant_id: Tenant, state: State) -> ChainResource:
    try:
        chain = state.client.chain(chain_id) if is_valid_job_id(chain_id) else None
    except JobNotFoundError:
        chain = None
    if chain is None or chain.tenant != tenant_id:
        raise ProblemError(404, "Chain not found", f"no chain {chain_id}")
    return ChainResource(**dict(chain), url=f"/v1/chains/{chain_id}")
