"""``/v1/webhook-secrets``: a tenant reads and rotates the secrets that sign its webhooks, and
only its own."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from imagegen.errors import SigningSecretMissingError
from producer.api.auth import Tenant
from producer.api.problems import problem_responses
from producer.api.state import ApiState, State

__all__ = ["SigningSecretsResource", "router"]

router = APIRouter(tags=["webhooks"])


class SigningSecretsResource(BaseModel):
    """The secrets signing this tenant's webhooks now, newest first: verify with all of them."""

    secrets: list[str] = Field(
        description="Newest first. Empty when none is stored (one is made with the tenant's "
        "first API key; Redis may have lost it): deliveries wait until one exists, and a "
        "rotation makes one"
    )
    overlap_s: int


@router.get(
    "/v1/webhook-secrets",
    operation_id="getWebhookSecrets",
    response_model=SigningSecretsResource,
    responses=problem_responses(401, 429),
    summary="The secrets that sign your webhooks",
)
def get_secrets(tenant_id: Tenant, state: State) -> SigningSecretsResource:
    return _resource(state, tenant_id)


@router.post(
    "/v1/webhook-secrets/rotate",
    operation_id="rotateWebhookSecrets",
    response_model=SigningSecretsResource,
    responses=problem_responses(401, 429),
    summary="A new primary secret; the old one keeps signing for the overlap",
)
def rotate_secrets(tenant_id: Tenant, state: State) -> SigningSecretsResource:
    state.client.operator.signing_secrets_for(tenant_id).rotate()
    return _resource(state, tenant_id)


def _resource(state: ApiState, tenant_id: str) -> SigningSecretsResource:
    try:
        secrets = state.client.operator.signing_secrets_for(tenant_id).active()
    except SigningSecretMissingError:
        secrets = []  # never made on a read: a receiver could not know a secret made here
    return SigningSecretsResource(
        secrets=secrets, overlap_s=state.settings.webhook_secret_overlap_s
    )
