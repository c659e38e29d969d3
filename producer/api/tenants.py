"""``/v1/tenant``: a tenant reads its own weight, caps and share of each model's rate.
``/v1/spend``: a tenant reads its own spend, reservations and budgets (JSON, or CSV).
``/v1/admin/tenants/{tenant}[/budget]``: an operator reads and sets any tenant's weight, caps and
budgets, with the admin token (``api_admin_token``; unset, these routes answer 404)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from imagegen.store.dispatch import TenantLimits
from imagegen.store.spend import Budget, OnExceed, PeriodSpend, rows_as_csv
from imagegen.store.tenants import TENANT_PATTERN
from producer.admin_bounds import MAX_BUDGET_USD, MAX_CONCURRENCY, MAX_RATE_RPM, MAX_WEIGHT
from producer.api.auth import Tenant
from producer.api.problems import ProblemError, problem_responses
from producer.api.state import ApiState, State

__all__ = ["admin_router", "router"]

router = APIRouter(tags=["tenant"])

# The operators' token, as its own OpenAPI security scheme (Authorize in /docs takes either).
ADMIN_TOKEN_SCHEME = HTTPBearer(
    scheme_name="adminToken",
    description="The operators' token (IMAGEGEN_API_ADMIN_TOKEN), for /v1/admin/*",
    auto_error=False,
)


# Every number an operator sets is finite and bounded: anything else is a 422 naming it.
Dollars = Annotated[float, Field(ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)]


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
    cache_shared: bool = Field(
        description="its fixed-seed jobs use the image cache shared by tenants that opted in"
    )


class TenantLimitsUpdate(BaseModel):
    """What to change; a field left out (or null) stays as it is."""

    model_config = ConfigDict(extra="forbid")

    weight: float | None = Field(default=None, gt=0, le=MAX_WEIGHT, allow_inf_nan=False)
    rate_rpm: float | None = Field(
        default=None, ge=0, le=MAX_RATE_RPM, allow_inf_nan=False, description="0: no cap"
    )
    max_concurrency: int | None = Field(
        default=None, ge=0, le=MAX_CONCURRENCY, description="0: no cap"
    )
    share_cache: bool | None = Field(
        default=None, description="use the image cache shared by tenants that opted in"
    )


def _limits(found: TenantLimits) -> TenantLimitsResource:
    return TenantLimitsResource(
        tenant=found.tenant,
        weight=found.weight,
        rate_rpm=found.rate_rpm,
        max_concurrency=found.max_concurrency,
    )


@router.get(
    "/v1/tenant",
    operation_id="getTenant",
    response_model=TenantResource,
    responses=problem_responses(401, 429),
    summary="Your weight, caps and share of each model's rate",
)
def get_tenant(tenant_id: Tenant, state: State) -> TenantResource:
    operator = state.client.operator
    shares = operator.tenant_shares(tenant=tenant_id)
    return TenantResource(
        **_limits(operator.tenant_limits(tenant_id)).model_dump(),
        cache_shared=operator.cache.shared(tenant_id),
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


def admin_only(
    request: Request,
    state: State,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(ADMIN_TOKEN_SCHEME)],
) -> None:
    """The admin routes' guard: the admin token, or 401 (404 when there is no admin API)."""
    authorization = request.headers.get("authorization")
    _require_admin(state, authorization if authorization and len(authorization) <= 512 else None)


TenantName = Annotated[str, Path(pattern=TENANT_PATTERN, description="The tenant's name")]
# The operators' routes: each needs the admin token.
admin_router = APIRouter(
    tags=["admin"],
    dependencies=[Depends(admin_only)],
    responses=problem_responses(
        422,
        described={
            401: "Missing or wrong admin token",
            404: "No admin API on this service (IMAGEGEN_API_ADMIN_TOKEN is unset)",
        },
        examples={401: "admin-unauthorized", 404: "no-admin-api"},
    ),
)


@admin_router.get(
    "/v1/admin/tenants/{tenant}",
    operation_id="getTenantLimits",
    response_model=TenantLimitsResource,
    summary="Get a tenant's weight and caps (admin)",
)
def get_tenant_limits(tenant: TenantName, state: State) -> TenantLimitsResource:
    return _limits(state.client.operator.tenant_limits(tenant))


@admin_router.put(
    "/v1/admin/tenants/{tenant}",
    operation_id="setTenantLimits",
    response_model=TenantLimitsResource,
    summary="Set a tenant's weight or caps (admin)",
)
def set_tenant_limits(
    tenant: TenantName, update: TenantLimitsUpdate, state: State
) -> TenantLimitsResource:
    found = state.client.operator.set_tenant_limits(
        tenant,
        weight=update.weight,
        rate_rpm=update.rate_rpm,
        max_concurrency=update.max_concurrency,
    )
    if update.share_cache is not None:
        state.client.operator.cache.set_shared(tenant, update.share_cache)
    return _limits(found)


class BudgetResource(BaseModel):
    """A tenant's budgets in dollars per UTC day and month (null: none). Past a hard one, its
    jobs wait for the next period or a higher budget (``wait``), or end ``budget_exceeded``
    (``fail``), never called; crossing a soft one is counted and shown."""

    model_config = ConfigDict(extra="forbid")

    daily_hard: Dollars | None = None
    daily_soft: Dollars | None = None
    monthly_hard: Dollars | None = None
    monthly_soft: Dollars | None = None
    on_exceed: OnExceed = "wait"


class PeriodResource(BaseModel):
    period: str
    spent_usd: float
    reserved_usd: float = Field(description="released jobs not settled yet")
    soft_budget_crossed: bool


class SpendRowResource(BaseModel):
    day: str
    model_id: str
    images: int
    spend_usd: float
    cache_hits: int
    saved_usd: float = Field(description="what the cache hits would have cost")


class SpendResource(BaseModel):
    tenant: str
    today: PeriodResource
    this_month: PeriodResource
    budget: BudgetResource
    days: list[SpendRowResource]


def _budget(found: Budget) -> BudgetResource:
    return BudgetResource(
        daily_hard=found.daily_hard,
        daily_soft=found.daily_soft,
        monthly_hard=found.monthly_hard,
        monthly_soft=found.monthly_soft,
        on_exceed=found.on_exceed,
    )


def _period(found: PeriodSpend) -> PeriodResource:
    return PeriodResource(
        period=found.period.split(":", 1)[1],
        spent_usd=found.spent_usd,
        reserved_usd=found.reserved_usd,
        soft_budget_crossed=found.soft_budget_crossed,
    )


@router.get(
    "/v1/spend",
    operation_id="getSpend",
    response_model=SpendResource,
    responses={
        **problem_responses(401, 422, 429),
        200: {
            "content": {"text/csv": {"schema": {"type": "string"}}},
            "description": "JSON, or CSV with Accept: text/csv",
        },
    },
    summary="Your spend per model and day, what is reserved now, and your budgets",
)
def get_spend(
    tenant_id: Tenant,
    state: State,
    request: Request,
    days: Annotated[int, Query(ge=1, le=400)] = 31,
) -> SpendResource | Response:
    operator = state.client.operator
    rows = operator.spend(tenant_id, days)
    if "text/csv" in request.headers.get("accept", ""):
        return Response(rows_as_csv(rows), media_type="text/csv")
    today, month = operator.spend_now(tenant_id)
    return SpendResource(
        tenant=tenant_id,
        today=_period(today),
        this_month=_period(month),
        budget=_budget(operator.budget(tenant_id)),
        days=[
            SpendRowResource(
                day=r.period,
                model_id=r.model_id,
                images=r.images,
                spend_usd=r.spend_usd,
                cache_hits=r.cache_hits,
                saved_usd=r.saved_usd,
            )
            for r in rows
        ],
    )


@admin_router.get(
    "/v1/admin/tenants/{tenant}/budget",
    operation_id="getTenantBudget",
    response_model=BudgetResource,
    summary="Get a tenant's budgets (admin)",
)
def get_budget(tenant: TenantName, state: State) -> BudgetResource:
    return _budget(state.client.operator.budget(tenant))


@admin_router.put(
    "/v1/admin/tenants/{tenant}/budget",
    operation_id="setTenantBudget",
    response_model=BudgetResource,
    summary="Replace a tenant's budgets (admin)",
)
def set_budget(tenant: TenantName, budget: BudgetResource, state: State) -> BudgetResource:
    found = state.client.operator.set_budget(Budget(tenant=tenant, **budget.model_dump()))
    return _budget(found)
