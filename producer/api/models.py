"""``/v1/models``: the models a job may name, with their fields, input images and prices."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from producer.api.auth import Tenant
from producer.api.problems import problem_responses
from producer.api.state import State

__all__ = ["ModelInfo", "ModelList", "router"]

router = APIRouter(tags=["models"])


class ModelInfo(BaseModel):
    """One model a job may name (its ``model_id``), and what it takes."""

    model_id: str
    name: str | None = None
    kind: str = Field(description="`generate`, `upscale`, `edit` or `control`")
    access: str | None = Field(
        default=None, description="`on-demand`, or `inference-profile` (a `us.` id)"
    )
    price_usd: float = Field(description="What one image costs here")
    price_confirmed: bool | None = None
    fields: list[str] = Field(default=[], description="The fields its `request` takes")
    required: list[str] = Field(default=[], description="The fields it needs")
    input_images: list[str] = Field(default=[], description="The fields that name an image")
    output_formats: list[str] = []
    output_size: str | None = None


class ModelList(BaseModel):
    models: list[ModelInfo]


@router.get(
    "/v1/models",
    operation_id="listModels",
    response_model=ModelList,
    responses=problem_responses(401, 429),
    summary="List the models a job may name",
    description="Each model's id, request fields, input images and price.",
)
def list_models(tenant_id: Tenant, state: State) -> ModelList:
    return ModelList.model_validate({"models": state.client.models()})
