"""``/v1/chains``: jobs that each take an earlier one's output, as one submission; a chain's
status links to each step's image and to its final one."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from imagegen.errors import FieldError, JobNotFoundError
from imagegen.ids import is_valid_job_id
from imagegen.records import ChainStep
from producer.api.auth import Tenant
from producer.api.bodies import job_object, raw_body
from producer.api.examples import CHAIN_EXAMPLE, CHAIN_RESOURCE_EXAMPLE
from producer.api.images import IF_NONE_MATCH_DESCRIPTION, IMAGE_RESPONSES, image_response
from producer.api.jobs import owned_job
from producer.api.problems import ProblemError, problem_responses, submission_problems
from producer.api.state import ApiState, State
from producer.chains import MAX_CHAIN_STEPS, ChainStatus

__all__ = ["ChainCreated", "ChainResource", "ChainStepResource", "router"]

router = APIRouter(tags=["chains"])


class ChainCreated(BaseModel):
    chain_id: str
    url: str = Field(description="The chain's URL, relative to the API")
    job_ids: list[str] = Field(description="Each step's job, in order")


class ChainStepResource(ChainStep):
    """One step: its job, and a link to its image once it succeeded."""

    url: str = Field(description="The step's job, relative to the API")
    image_url: str | None = Field(
        default=None,
        description="Where to GET the step's image once it succeeded (as a job's `image_url`)",
    )
    image_url_expires_at: datetime | None = None


class ChainResource(ChainStatus):
    """A chain, its steps, and its final image once it succeeded."""

    model_config = ConfigDict(json_schema_extra={"examples": [CHAIN_RESOURCE_EXAMPLE]})

    url: str = Field(description="The chain's URL, relative to the API")
    steps: list[ChainStepResource]  # type: ignore[assignment]
    output_image_url: str | None = Field(
        default=None,
        description="Where to GET the chain's final image (the last step's) once the chain "
        "succeeded: a presigned URL, fresh on every read, that expires at "
        "`output_image_url_expires_at`; `GET /v1/chains/{chain_id}/image` redirects to one",
    )
    output_image_url_expires_at: datetime | None = None


ChainId = Annotated[
    str, Path(description="The chain's id", examples=["01M89S0B3XQ2C6W4Z2E8N1K5TP"])
]
_NO_CHAIN = "No such chain (another tenant's chain is as absent as a missing one)"


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
            },
            "examples": {
                "generate-cut-out-upscale": {
                    "summary": "Generate, remove the background, upscale",
                    "value": CHAIN_EXAMPLE,
                }
            },
        }
    },
}


@router.post(
    "/v1/chains",
    operation_id="submitChain",
    status_code=202,
    response_model=ChainCreated,
    response_description="Queued: the chain and its steps' jobs, with `Location` its URL",
    responses=problem_responses(
        400,
        401,
        413,
        422,
        described={
            409: "A step's job id is used by another job",
            429: "Too many of your jobs are not finished yet (or too many bad keys); wait for "
            "Retry-After",
        },
        examples={429: "queue-full"},
    ),
    openapi_extra={"requestBody": _CHAIN_BODY_SCHEMA},
    summary="Submit a chain of steps",
    description='Each step is a job that may take an earlier step\'s image (`{"step": n}`); '
    "a step waits until that one succeeds, and every later step ends when a step ends without "
    "an image.",
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
    operation_id="getChain",
    response_model=ChainResource,
    responses=problem_responses(
        401, 429, described={404: _NO_CHAIN}, examples={404: "chain-not-found"}
    ),
    summary="Get a chain: its progress step by step, and its final image",
)
def get_chain(chain_id: ChainId, tenant_id: Tenant, state: State) -> ChainResource:
    chain = owned_chain(state, chain_id, tenant_id)
    images = state.images
    steps = []
    for step in chain.steps:
        link = images.for_step(step)
        steps.append(
            ChainStepResource(
                **dict(step),
                url=f"/v1/jobs/{step.job_id}",
                image_url=link.url if link else None,
                image_url_expires_at=link.expires_at if link else None,
            )
        )
    output = steps[-1] if chain.status == "succeeded" and steps else None
    return ChainResource(
        **(dict(chain) | {"steps": steps}),
        url=f"/v1/chains/{chain_id}",
        output_image_url=output.image_url if output else None,
        output_image_url_expires_at=output.image_url_expires_at if output else None,
    )


@router.get(
    "/v1/chains/{chain_id}/image",
    operation_id="getChainImage",
    status_code=302,
    response_class=Response,
    responses={
        **IMAGE_RESPONSES,
        **problem_responses(
            401,
            422,
            429,
            described={
                404: f"{_NO_CHAIN}; or its image is no longer stored",
                409: "The chain has no image: not finished yet (`Image not ready`), or it "
                "failed (`No image`); read the chain for its status",
                503: "The image store did not answer, or cannot sign URLs; wait for Retry-After",
            },
            examples={404: "chain-not-found", 409: "image-not-ready"},
        ),
    },
    summary="Download a chain's final image",
    description="The last step's image once the chain succeeded, as `GET "
    "/v1/jobs/{job_id}/image` gives it.",
)
def get_chain_image(
    chain_id: ChainId,
    tenant_id: Tenant,
    state: State,
    if_none_match: Annotated[
        str | None, Header(max_length=256, description=IF_NONE_MATCH_DESCRIPTION)
    ] = None,
) -> Response:
    chain = owned_chain(state, chain_id, tenant_id)
    if chain.status != "succeeded":
        detail = f"chain {chain_id} is {chain.status}"
        raise ProblemError(
            409,
            "No image" if chain.status == "failed" else "Image not ready",
            f"{detail}: {chain.reason}" if chain.reason else detail,
        )
    last = owned_job(state, chain.steps[-1].job_id, tenant_id)
    return image_response(state, last, if_none_match)


def owned_chain(state: ApiState, chain_id: str, tenant_id: str) -> ChainStatus:
    """The tenant's chain, or 404 (someone else's chain is as absent as a missing one)."""
    try:
        chain = state.client.chain(chain_id) if is_valid_job_id(chain_id) else None
    except JobNotFoundError:
        chain = None
    if chain is None or chain.tenant != tenant_id:
        raise ProblemError(404, "Chain not found", f"no chain {chain_id}")
    return chain
