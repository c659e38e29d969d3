"""The console's cookies: the session's token, and before a login the secret its form's token
is made from. Both HttpOnly, SameSite=Strict, scoped to ``/console``, and ``Secure`` whenever
the browser reached the console over https (directly, through a trusted proxy, or always with
``console_secure_cookies``)."""

from __future__ import annotations

from http.cookies import SimpleCookie

from starlette.requests import HTTPConnection
from starlette.responses import Response

from imagegen.settings import Settings
from producer.api.proxies import public_scheme

__all__ = [
    "COOKIE_PATH",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "cookie_header",
    "secure_cookies",
    "set_console_cookie",
]

SESSION_COOKIE = "imagegen_console"
LOGIN_COOKIE = "imagegen_console_login"
COOKIE_PATH = "/console"


def secure_cookies(connection: HTTPConnection, settings: Settings) -> bool:
    """Whether the console's cookies must be ``Secure`` on this response."""
    return public_scheme(connection, settings) == "https"


def set_console_cookie(
    response: Response, connection: HTTPConnection, settings: Settings, name: str, value: str
) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(connection, settings),
        path=COOKIE_PATH,
    )


def cookie_header(name: str, value: str, *, secure: bool) -> bytes:
    """A ``Set-Cookie`` value for a console cookie, for code below the response classes."""
    cookie: SimpleCookie = SimpleCookie()
    cookie[name] = value
    morsel = cookie[name]
    morsel["path"] = COOKIE_PATH
    morsel["httponly"] = True
    morsel["samesite"] = "Strict"
    if secure:
        morsel["secure"] = True
    return morsel.OutputString().encode("latin-1")
