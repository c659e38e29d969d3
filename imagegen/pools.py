"""Bedrock pools: the accounts and Regions that serve each model, each with its own quota.

A pool is one way to call Bedrock: credentials (a named AWS profile, or an IAM role assumed
through STS, or the standard chain), a Region, an optional endpoint URL (the emulator), the
model ids it serves, its own quota (``rpm`` and ``burst``, its own token bucket and AIMD) and,
where it differs, its own price. ``IMAGEGEN_POOLS`` lists them (JSON). A model no pool names is
served as before: by one implicit pool (``default``) of the service's Region, endpoint and
credentials, with the model's quota (``limit_for``). Long-lived keys never go in the settings: a
profile or a role only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "CIRCUIT_CODES",
    "DEFAULT_POOL",
    "POOL_CHOICES",
    "Pool",
    "PoolSpec",
    "opens_circuit",
]

# The implicit pool of a model no configured pool serves.
DEFAULT_POOL = "default"
# How the dispatcher picks among the pools with a token: the one with the fewest calls over
# the last minute for its quota, or the cheapest.
POOL_CHOICES = ("least_used", "cheapest")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
# Errors that say a pool cannot serve a model at all, for a while: its circuit opens.
CIRCUIT_CODES = frozenset({"AccessDeniedException", "ResourceNotFoundException"})
_NOT_ALLOWED = "operation not allowed"


class PoolSpec(BaseModel):
    """One pool as ``IMAGEGEN_POOLS`` describes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="a-z, 0-9, - and _; unique")
    region: str = Field(min_length=1, description="the Region it calls")
    models: tuple[str, ...] = Field(min_length=1, description="model or profile ids it serves")
    rpm: float = Field(gt=0, description="its quota: requests per minute, per model")
    burst: float = Field(default=1.0, ge=1, description="calls that may start at once")
    profile: str | None = Field(
        default=None, description="named AWS profile for its credentials (or for the STS call)"
    )
    role_arn: str | None = Field(
        default=None, description="IAM role assumed through STS (sessions cached and refreshed)"
    )
    external_id: str | None = Field(default=None, description="the role's external id")
    endpoint_url: str | None = Field(default=None, description="bedrock-runtime endpoint")
    price_usd: float | None = Field(
        default=None, ge=0, description="one image here, when it differs from the model's price"
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _NAME.match(name):
            msg = "a pool name is 1-40 of a-z, 0-9, - and _, starting with a letter or digit"
            raise ValueError(msg)
        if name == DEFAULT_POOL:
            msg = f"{DEFAULT_POOL!r} is the implicit pool's name"
            raise ValueError(msg)
        return name

    @field_validator("role_arn")
    @classmethod
    def _check_role(cls, arn: str | None) -> str | None:
        if arn is not None and not _ROLE_ARN.match(arn):
            msg = "role_arn must be an IAM role ARN (arn:aws:iam::123456789012:role/name)"
            raise ValueError(msg)
        return arn


@dataclass(frozen=True)
class Pool:
    """A pool as the service uses it for one model: the configured ones, or the implicit one."""

    name: str
    region: str
    rpm: float
    burst: float
    endpoint_url: str | None = None
    profile: str | None = None
    role_arn: str | None = None
    external_id: str | None = None
    # None: the model's price.
    price_usd: float | None = None

    @property
    def implicit(self) -> bool:
        return self.name == DEFAULT_POOL

    @classmethod
    def of(cls, spec: PoolSpec) -> Pool:
        return cls(
            name=spec.name,
            region=spec.region,
            rpm=spec.rpm,
            burst=spec.burst,
            endpoint_url=spec.endpoint_url,
            profile=spec.profile,
            role_arn=spec.role_arn,
            external_id=spec.external_id,
            price_usd=spec.price_usd,
        )


def opens_circuit(code: str, message: str) -> bool:
    """Whether a call's error says the pool cannot serve the model for a while: access denied,
    no Marketplace subscription ("Operation not allowed"), or the model not in its Region."""
    return code in CIRCUIT_CODES or _NOT_ALLOWED in message.lower()
