"""Cross-site request forgery: a post to the console must come from the console's own page.

Two checks, each enough against a page on another site; together they also stop a page on
another port or subdomain of the same site, which SameSite cookies let through:

1. Where the post comes from, before its body is read (``ConsoleCsrfMiddleware``): browsers
   name it in ``Sec-Fetch-Site`` and ``Origin``. Anything but ``same-origin``, or an ``Origin``
   other than the console's own (``public_origin``: behind a trusted proxy, the scheme and host
   the browser used), is refused with 403. A client that sends neither header is judged by the
   token alone.
2. A token in every state-changing form (``csrf``), checked for every post
   (``require_csrf_token``, compared in constant time). It is an HMAC of a secret only this
   browser holds, in an HttpOnly cookie: the session's own token once logged in, so each
   session has its own; before that, a pre-session secret (``LOGIN_COOKIE``), so the login form
   cannot be posted from elsewhere either (login CSRF).

The templates never spell the token out: ``render`` adds it to every ``<form method="post">``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from contextvars import ContextVar

from fastapi import Request
from markupsafe import Markup
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imagegen.settings import Settings
from producer.api.proxies import public_origin
from producer.console.cookies import LOGIN_COOKIE, SESSION_COOKIE, cookie_header, secure_cookies

__all__ = [
    "CSRF_FIELD",
    "ConsoleCsrfMiddleware",
    "CsrfRefusedError",
    "cross_origin_reason",
    "csrf_input",
    "csrf_token",
    "page_tag",
    "require_csrf_token",
]

CSRF_FIELD = "csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONSOLE_PREFIX = "/console"
STATIC_PREFIX = "/console/static/"
_TOKEN_CONTEXT = b"imagegen console form token v1"
_SECRET_BYTES = 32

# What answers a refused post, given the reason.
RefusalPage = Callable[[str], ASGIApp]

# The token of the request being served, for the forms its page renders.
_current_token: ContextVar[str] = ContextVar("console_csrf_token", default="")


class CsrfRefusedError(Exception):
    """A post that may not come from the console's own page; the message says why."""


def csrf_token(secret: str) -> str:
    """The form token of the browser holding ``secret`` (its session token, or its pre-session
    secret). Knowing the token tells nothing of the secret."""
    digest = hmac.new(secret.encode(), _TOKEN_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _secret(connection: HTTPConnection) -> str:
    return connection.cookies.get(SESSION_COOKIE) or connection.cookies.get(LOGIN_COOKIE) or ""


def csrf_input() -> Markup:
    """The hidden input a state-changing form carries."""
    token = _current_token.get()
    return Markup('<input type="hidden" name="{}" value="{}">').format(CSRF_FIELD, token)


def page_tag() -> str:
    """A short public name of this browser's session, for its pages: the tabs of one session
    share one live stream under it. It leads to neither the session's token nor its form token."""
    token = _current_token.get()
    return hashlib.sha256(f"live:{token}".encode()).hexdigest()[:16] if token else ""


def cross_origin_reason(connection: HTTPConnection, settings: Settings) -> str | None:
    """Why the browser says this request does not come from the console's own origin, or None
    (it does, or it says nothing)."""
    site = connection.headers.get("sec-fetch-site")
    if site is not None and site.lower() != "same-origin":
        return f"it was sent from another page than the console's own (Sec-Fetch-Site: {site})"
    origin = connection.headers.get("origin")
    if origin is not None and origin.lower() != public_origin(connection, settings):
        return "it was sent from another origin than the console's own"
    return None


async def require_csrf_token(request: Request) -> None:
    """Dependency of every console route: a post must carry this browser's form token."""
    if request.method in SAFE_METHODS:
        return
    secret = _secret(request)
    sent = (await request.form()).get(CSRF_FIELD)
    if not secret or not isinstance(sent, str):
        msg = "it carries no form token: reload the page and try again"
        raise CsrfRefusedError(msg)
    if not hmac.compare_digest(sent.encode(), csrf_token(secret).encode()):
        msg = "its form token is not this browser's: reload the page and try again"
        raise CsrfRefusedError(msg)


class ConsoleCsrfMiddleware:
    """Refuses a console post from another origin before its body is read; gives a browser
    without one a pre-session secret; makes the request's form token available to its page."""

    def __init__(self, app: ASGIApp, *, settings: Settings, refuse: RefusalPage) -> None:
        self.app = app
        self.settings = settings
        self.refuse = refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not (path == CONSOLE_PREFIX or path.startswith(f"{CONSOLE_PREFIX}/"))
            or path.startswith(STATIC_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        if scope["method"] not in SAFE_METHODS:
            reason = cross_origin_reason(connection, self.settings)
            if reason is not None:
                await self.refuse(reason)(scope, receive, send)
                return
        secret = _secret(connection)
        new_secret = "" if secret else secrets.token_urlsafe(_SECRET_BYTES)
        reset = _current_token.set(csrf_token(secret or new_secret))
        try:
            if not new_secret:
                await self.app(scope, receive, send)
                return
            issued = cookie_header(
                LOGIN_COOKIE, new_secret, secure=secure_cookies(connection, self.settings)
            )

            async def send_with_cookie(message: Message) -> None:
                if message["type"] == "http.response.start":
                    MutableHeaders(scope=message).append("set-cookie", issued.decode("latin-1"))
                await send(message)

            await self.app(scope, receive, send_with_cookie)
        finally:
            _current_token.reset(reset)
