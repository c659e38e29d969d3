"""What every route shares, built once per app: the settings, the Redis client and the stores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from imagegen.settings import Settings
from imagegen.store.tenants import ApiKeys, AuthFailures
from producer.api.images import ImageLinks
from producer.api.limits import HeldLimits
from producer.client import Client

__all__ = ["ApiState", "State", "api_state"]


@dataclass(frozen=True)
class ApiState:
    settings: Settings
    redis: Any
    client: Client
    api_keys: ApiKeys
    auth_failures: AuthFailures
    held: HeldLimits
    images: ImageLinks


async def api_state(request: Request) -> ApiState:
    """Async: a sync dependency would cost every request a trip through the thread pool."""
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(api_state)]
