"""Logging in to the console: a tenant with an API key, an operator with the admin token.

The session lives in Redis (``imagegen.store.sessions``); the browser holds only its token, in
an HttpOnly, SameSite=Strict cookie scoped to ``/console`` (``cookies``). Bad keys and tokens
count against the same brake as the API's (``producer.api.brake``): a tenant's valid key is
always accepted, but a client past the limit is refused even the right operator token until its
window ends.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from imagegen.store.sessions import ConsoleSession, ConsoleSessions
from producer.api.brake import admin_failure, braked
from producer.api.state import ApiState, State
from producer.console.cookies import COOKIE_PATH, SESSION_COOKIE, set_console_cookie
from producer.console.render import page

__all__ = ["COOKIE", "Operator", "TenantLogin", "router"]

COOKIE = SESSION_COOKIE
LOGIN_PATH = "/console/login"
# The key id console logins are counted under, besides the client.
LOGIN_KEY_ID = "console"

router = APIRouter(include_in_schema=False)


def sessions(state: ApiState) -> ConsoleSessions:
    return ConsoleSessions(state.redis, state.settings.console_session_ttl_s)


def current_session(request: Request, state: State) -> ConsoleSession | None:
    return sessions(state).get(request.cookies.get(COOKIE, ""))


def _to_login() -> HTTPException:
    return HTTPException(status_code=303, headers={"Location": LOGIN_PATH})


def tenant_session(
    session: Annotated[ConsoleSession | None, Depends(current_session)],
) -> ConsoleSession:
    if session is None or session.role != "tenant" or session.tenant is None:
        raise _to_login()
    return session


def operator_session(
    session: Annotated[ConsoleSession | None, Depends(current_session)],
) -> ConsoleSession:
    if session is None or session.role != "operator":
        raise _to_login()
    return session


TenantLogin = Annotated[ConsoleSession, Depends(tenant_session)]
Operator = Annotated[ConsoleSession, Depends(operator_session)]


@router.get("/console/login")
def login_page(state: State) -> HTMLResponse:
    return page("login.html", operator=state.settings.api_admin_token is not None)


@router.post("/console/login")
def login(request: Request, state: State, key: Annotated[str, Form(max_length=512)]) -> Response:
    key = key.strip()
    found = state.api_keys.authenticate(key)
    if found is not None:
        token = sessions(state).create("tenant", tenant=found.tenant, key_id=found.key_id)
        return _logged_in(request, state, token, "/console")
    admin = state.settings.api_admin_token
    held = braked(request, state)
    if (
        held is None
        and admin is not None
        and hmac.compare_digest(key.encode(), admin.get_secret_value().encode())
    ):
        return _logged_in(request, state, sessions(state).create("operator"), "/console/operator")
    held = held or admin_failure(request, state, LOGIN_KEY_ID)
    if held is not None:
        return _login_refused(
            state,
            429,
            f"Too many failed logins; try again in {held.retry_after_s} s.",
            headers={"Retry-After": str(held.retry_after_s)},
        )
    return _login_refused(state, 401, "That is not a valid API key or operator token.")


def _login_refused(
    state: ApiState, status_code: int, message: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    refused = page(
        "login.html",
        status_code=status_code,
        error=message,
        operator=state.settings.api_admin_token is not None,
    )
    refused.headers.update(headers or {})
    return refused


@router.post("/console/logout")
def logout(request: Request, state: State) -> Response:
    sessions(state).end(request.cookies.get(COOKIE, ""))
    response = RedirectResponse(LOGIN_PATH, status_code=303)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


def _logged_in(request: Request, state: ApiState, token: str, target: str) -> Response:
    response = RedirectResponse(target, status_code=303)
    set_console_cookie(response, request, state.settings, COOKIE, token)
    return response
