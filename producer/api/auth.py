"""Who is calling: ``Authorization: Bearer <API key>`` names the tenant.

A valid key is always accepted. Bad keys are counted per real client address (behind the
proxies ``api_trusted_proxies`` names, from ``X-Forwarded-For``; otherwise the peer's) and per
key id, atomically: past ``api_auth_failures_per_minute`` in either, a bad key is answered 429
instead of 401 until the window ends. So a shared proxy address never locks out valid keys, a
spoofed ``X-Forwarded-For`` from an untrusted peer changes nothing, and no burst gets past the
limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from producer.api.problems import ProblemError
from producer.api.proxies import is_trusted_proxy
from producer.api.state import State

__all__ = ["API_KEY_SCHEME", "AUTH_WINDOW_S", "Tenant", "client_address", "current_tenant"]

AUTH_WINDOW_S = 60
# The OpenAPI security scheme (and /docs' Authorize button); the header is read below.
API_KEY_SCHEME = HTTPBearer(
    scheme_name="apiKey",
    bearerFormat="igk_...",
    description="An API key (`imagegen keys create --tenant acme`): it names your tenant.",
    auto_error=False,
)
_MAX_AUTHORIZATION_CHARS = 512
_KEY_ID = re.compile(r"^igk_([0-9a-f]{12})_")


def client_address(request: Request, trusted_proxies: Sequence[str]) -> str:
    """The caller's address: the peer's, or behind trusted proxies the last address in
    ``X-Forwarded-For`` that is not one of them."""
    peer = request.client.host if request.client else "unknown"
    if not trusted_proxies or not is_trusted_proxy(peer, trusted_proxies):
        return peer
    forwarded = [
        hop.strip() for hop in request.headers.get("x-forwarded-for", "").split(",") if hop.strip()
    ]
    for hop in reversed(forwarded):
        if not is_trusted_proxy(hop, trusted_proxies):
            return hop[:64]
    return forwarded[0][:64] if forwarded else peer


def current_tenant(
    request: Request,
    state: State,
    _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(API_KEY_SCHEME)],
) -> str:
    """The caller's tenant. A missing or bad key answers 401, or 429 past the brake."""
    authorization = request.headers.get("authorization")
    if authorization is not None and len(authorization) > _MAX_AUTHORIZATION_CHARS:
        authorization = "Bearer oversized"
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    found = state.api_keys.authenticate(token) if scheme.lower() == "bearer" else None
    if found is not None:
        return found.tenant
    client = client_address(request, state.settings.api_trusted_proxies)
    key_id = _KEY_ID.match(token)
    failures, retry_after_s = state.auth_failures.add(client, key_id[1] if key_id else "malformed")
    if failures > state.settings.api_auth_failures_per_minute:
        raise ProblemError(
            429,
            "Too many failed authentications",
            "too many bad API keys from this client or for this key in the last minute",
            headers={"Retry-After": str(retry_after_s)},
        )
    detail = "send Authorization: Bearer <API key>" if not authorization else "unknown key"
    raise ProblemError(
        401, "Unauthorized", detail, headers={"WWW-Authenticate": 'Bearer realm="imagegen"'}
    )


Tenant = Annotated[str, Depends(current_tenant)]
