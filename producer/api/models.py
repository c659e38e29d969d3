"""``/v1/models``: the models a job may name, with their fields, input images and prices."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from producer.api.auth import Tenant
from producer.api.state import State

__all__ = ["router"]

router = APIRouter(tags=["models"])


@router.get("/v1/models", summary="The models a job may name")
def list_models(tenant_id: Tenant, state: State) -> dict[str, list[dict[str, Any]]]:
    return {"models": state.client.models()}
