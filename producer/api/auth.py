"""Who is calling: ``Authorization: Bearer <API key>`` names the tenant; a client that keeps
presenting bad keys is answered 429 until its window is over."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from producer.api.problems import ProblemError
from producer.api.state import State

__all__ = ["AUTH_WINDOW_S", "Tenant", "current_tenant"]

AUTH_WINDOW_S = 60


def current_tenant(
    request: Request,
    state: State,
    authorization: Annotated[
        str | None, Header(max_length=512, description="Bearer <API key>")
    ] = None,
) -> str:
    """The caller's tenant. Bad or missing keys answer 401."""
    client = request.client.host if request.client else "unknown"
    failures, retry_after_s = state.auth_failures.count(client)
    if failures >= state.settings.api_auth_failures_per_minute:
        raise ProblemError(
            429,
            "Too many failed authentications",
            f"{failures} bad API keys from {client} in the last minute",
            headers={"Retry-After": str(retry_after_s)},
        )
    scheme, _, token = (authorization or "").partition(" ")
    found = state.api_keys.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        state.auth_failures.add(client)
        detail = "send Authorization: Bearer <API key>" if not authorization else "unknown key"
        raise ProblemError(
            401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="imagegen"'}
        )
    return found.tenant


Tenant = Annotated[str, Depends(current_tenant)]
