"""The brake on guessed credentials, one for all of them: API keys, the admin token and the
console's logins.

Failures are counted per real client address (``client_address``), in a rolling window
(``imagegen.store.tenants.AuthFailures``); past ``api_auth_failures_per_minute`` a bad
credential is answered 429 instead of 401. A tenant's valid API key is always accepted (key ids
are public, so a stranger could otherwise lock a tenant out). The admin token is different: it
is one secret for the whole service, so a client past the limit is refused even the right token
until its window ends, and a guesser learns nothing from its last tries.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from imagegen.failed_auth import client_failures
from producer.api.auth import client_address
from producer.api.state import ApiState

__all__ = ["ADMIN_KEY_ID", "Braked", "admin_failure", "braked"]

# The "key id" admin-token failures are counted under, besides the client.
ADMIN_KEY_ID = "admin-token"


@dataclass(frozen=True)
class Braked:
    """A client past the limit, and how long until its window ends."""

    retry_after_s: int


def _client(request: Request, state: ApiState) -> str:
    return client_address(request, state.settings.api_trusted_proxies)


def braked(request: Request, state: ApiState) -> Braked | None:
    """Whether the calling client is past the limit now (read only: nothing is counted)."""
    failures, retry_after_s = client_failures(state.redis, _client(request, state))
    if failures <= state.settings.api_auth_failures_per_minute:
        return None
    return Braked(retry_after_s)


def admin_failure(request: Request, state: ApiState, key_id: str = ADMIN_KEY_ID) -> Braked | None:
    """Count one wrong admin token (or console login) from the calling client, and under
    ``key_id``; the brake when that puts either past the limit."""
    failures, retry_after_s = state.auth_failures.add(_client(request, state), key_id)
    if failures > state.settings.api_auth_failures_per_minute:
        return Braked(retry_after_s)
    return None
