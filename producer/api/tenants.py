"""``/v1/tenant``: a tenant reads its own weight, caps and share of each model's rate.
``/v1/admin/tenants/{tenant}``: an operator reads and sets any tenant's weight and caps, with the
admin token (``api_admin_token``; unset, these routes answer 404)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Header, Path
from pydantic import BaseModel, ConfigDict, Field

from imagegen.store.dispatch import TenantLimits
from imagegen.store.tenants import TENANT_PATTERN
from producer.api.auth import Tenant
from producer.api.problems import PROBLEM_RESPONSES, ProblemError
from producer.api.state import ApiState, State

__all__ = ["router"]

router = APIRouter(tags=["tenants"])


class TenantLimitsResource(BaseModel):
    """A tenant's weight in the fair share and its caps (0: no cap), as the dispatcher applies
    them."""

    tenant: str
    weight: float
    rate_rpm: float
    max_concurrency: int


class ModelShare(BaseModel):
    """The tenant's use of one model's rate."""

    model_id: str
    waiting: int
    released_last_minute: int
    share: float = Field(description="its part of every job released over the last minute")
    fair_share: float | None = Field(
        description="what its weight gives it among tenants with jobs waiting (None: none waiting)"
    )


class TenantResource(TenantLimitsResource):
    models: list[ModelShare]


class TenantLimitsUpdate(BaseModel):
    """What to change; a field left out (or null) stays as it is."""

    model_config = ConfigDict(extra="forbid")

    weight: float | None = Field(default=None, gt=0, le=1000)
    rate_rpm: float | None = Field(default=None, ge=0, description="0: no cap")
    max_concurrency: int | None = Field(default=None, ge=0, description="0: no cap")


def _limits(found: TenantLimits) -> TenantLimitsResource:
    return TenantLimitsResource(
        tenant=found.tenant,
        weight=found.weight,
        rate_rpm=found.rate_rpm,
        max_concurrency=found.max_concurrency,
    )


@router.get(
    "/v1/tenant",
    response_model=TenantResource,
    responses=PROBLEM_RESPONSES,
    summary="Your weight, caps and share of each model's rate",
)
def get_tenant(tenant_id: Tenant, state: State) -> TenantResource:
    client = state.client
    shares = [s for s in client.tenant_shares() if s.tenant == tenant_id]
    return TenantResource(
        **_limits(client.tenant_limits(tenant_id)).model_dump(),
        models=[
            ModelShare(
                model_id=s.model_id,
                waiting=s.waiting,
                released_last_minute=s.released_last_minute,
                share=round(s.share, 4),
                fair_share=None if s.fair_share is None else round(s.fair_share, 4),
            )
            for s in shares
        ],
    )


def _require_admin(state: ApiState, authorization: str | None) -> None:
    token = state.settings.api_admin_token
    if token is None:
        raise ProblemError(404, "Not Found", "no admin API on this service")
    presented = (authorization or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(presented.encode(), token.get_secret_value().encode()):
        raise ProblemError(
            401,
            "Unauthorized",
            "send Authorization: Bearer <admin token>",
            headers={"WWW-Authenticate": 'Bearer realm="imagegen-admin"'},
        )


TenantName = Annotated[str, Path(pattern=TENANT_PATTERN)]
AdminAuthorization = Annotated[str | None, Header(max_length=512)]


@router.get(
    "/v1/admin/tenants/{tenant}",
    response_model=TenantLimitsResource,
    responses=PROBLEM_RESPONSES,
    summary="A tenant's weight and caps (admin)",
)
def get_tenant_limits(
    tenant: TenantName, state: State, authorization: AdminAuthorization = None
) -> TenantLimitsResource:
    _require_admin(state, authorization)
    return _limits(state.client.tenant_limits(tenant))


@router.put(
    "/v1/admin/tenants/{tenant}",
    response_model=TenantLimitsResource,
    responses=PROBLEM_RESPONSES,
    summary="Set a tenant's weight or caps (admin)",
)
def set_tenant_limits(
    tenant: TenantName,
    update: TenantLimitsUpdate,
    state: State,
    authorization: AdminAuthorization = None,
) -> TenantLimitsResource:
    _require_admin(state, authorization)
    found = state.client.set_tenant_limits(
        tenant,
        weight=update.weight,
        rate_rpm=update.rate_rpm,
        max_concurrency=update.max_concurrency,
    )
    return _limits(found)
