"""The brake on the service's shared tokens, the same as on API keys: the admin token
(``/v1/admin/*``) and the metrics token (``/metrics``). Each wrong token (a 401 there) is counted
against the client, and past ``api_auth_failures_per_minute`` it is answered 429. A client past
the limit is refused before its token is even compared, the right one included, until its
window ends (``producer.api.brake``)."""

from __future__ import annotations

import anyio.to_thread
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.api.brake import Braked, admin_failure, braked
from producer.api.problems import Problem, problem_response
from producer.api.state import ApiState

__all__ = ["TOKEN_PATHS", "TokenBrakeMiddleware"]

# Where the shared tokens are checked: the admin routes, and /metrics.
TOKEN_PATHS = ("/v1/admin/", "/metrics")


def _too_many(found: Braked) -> ASGIApp:
    problem = Problem(
        title="Too many failed authentications",
        status=429,
        detail="too many wrong tokens or API keys from this client in the last minute",
    )
    return problem_response(problem, {"Retry-After": str(found.retry_after_s)})


class TokenBrakeMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(TOKEN_PATHS):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        state: ApiState = request.app.state.api
        found = await anyio.to_thread.run_sync(braked, request, state)
        if found is not None:
            await _too_many(found)(scope, receive, send)
            return
        replaced = False

        async def counting_send(message: Message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start" and message["status"] == 401:
                over = await anyio.to_thread.run_sync(admin_failure, request, state)
                if over is not None:
                    replaced = True
                    await _too_many(over)(scope, receive, send)
                    return
            if not replaced:
                await send(message)

        await self.app(scope, receive, counting_send)
