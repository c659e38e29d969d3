"""The console behind a TLS-terminating proxy: its cookies are Secure when a trusted proxy says
the browser used https (X-Forwarded-Proto), or always when configured, and never because an
untrusted client says so; the origin check compares with the address the browser used."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

import fakeredis
from fastapi.testclient import TestClient

from imagegen.settings import Settings
from producer.api import create_app
from producer.client import Client

PROXY = ("10.0.0.7", 40000)
STRANGER = ("198.51.100.20", 40000)
PUBLIC = "https://console.example.com"
FROM_PROXY = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "console.example.com",
    "X-Forwarded-For": "203.0.113.5",
}


def cookies_set(answer: object) -> dict[str, bool]:
    """Each cookie the response sets, and whether it is Secure."""
    found: dict[str, bool] = {}
    for header in answer.headers.get_list("set-cookie"):  # type: ignore[attr-defined]
        cookie: SimpleCookie = SimpleCookie(header)
        for name, morsel in cookie.items():
            found[name] = bool(morsel["secure"])
    return found


def log_in(http: TestClient, key: str, headers: dict[str, str]) -> object:
    """Log in as the browser would over https: its cookie sent back whether Secure or not (the
    test client would keep a Secure cookie from plain http)."""
    http.cookies.clear()
    page = http.get("/console/login", headers=headers)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token is not None
    secret = SimpleCookie(page.headers["set-cookie"])["imagegen_console_login"].value
    http.cookies.clear()
    return http.post(
        "/console/login",
        data={"key": key, "csrf": token[1]},
        headers={
            **headers,
            "Origin": PUBLIC,
            "Sec-Fetch-Site": "same-origin",
            "Cookie": f"imagegen_console_login={secret}",
        },
        follow_redirects=False,
    )


def make(settings: Settings, **changes: object) -> tuple[object, Client]:
    settings = settings.model_copy(update={"api_trusted_proxies": ("10.0.0.0/8",), **changes})
    redis = fakeredis.FakeRedis(decode_responses=True)
    return create_app(settings, redis_client=redis), Client(settings, redis_client=redis)


def test_cookies_are_secure_behind_a_trusted_tls_proxy(settings: Settings) -> None:
    app, client = make(settings)
    _, key = client.api_keys.create("acme")
    with TestClient(app, client=PROXY, base_url="http://api.internal:8000") as http:
        assert cookies_set(http.get("/console/login", headers=FROM_PROXY)) == {
            "imagegen_console_login": True
        }
        answer = log_in(http, key, FROM_PROXY)
        assert answer.status_code == 303  # type: ignore[attr-defined]
        assert cookies_set(answer) == {"imagegen_console": True}


def test_an_untrusted_client_cannot_claim_https(settings: Settings) -> None:
    app, client = make(settings)
    _, key = client.api_keys.create("acme")
    with TestClient(app, client=STRANGER, base_url="http://console.example.com") as http:
        assert cookies_set(http.get("/console/login", headers=FROM_PROXY)) == {
            "imagegen_console_login": False
        }
        # It claims https, so its Origin (https://...) is not this plain-http origin: refused.
        assert log_in(http, key, FROM_PROXY).status_code == 403  # type: ignore[attr-defined]


def test_secure_cookies_can_be_required_outright(settings: Settings) -> None:
    app, client = make(settings, api_trusted_proxies=(), console_secure_cookies=True)
    _, key = client.api_keys.create("acme")
    with TestClient(app, client=STRANGER, base_url="http://console.example.com") as http:
        answer = log_in(http, key, {})
        assert answer.status_code == 303  # type: ignore[attr-defined]
        assert cookies_set(answer) == {"imagegen_console": True}


def test_plain_http_without_a_proxy_keeps_cookies_usable(settings: Settings) -> None:
    app, client = make(settings, api_trusted_proxies=())
    _, key = client.api_keys.create("acme")
    with TestClient(app, client=STRANGER, base_url="http://127.0.0.1:8000") as http:
        page = http.get("/console/login")
        assert cookies_set(page) == {"imagegen_console_login": False}
        token = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert token is not None
        answer = http.post(
            "/console/login",
            data={"key": key, "csrf": token[1]},
            headers={"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-origin"},
            follow_redirects=False,
        )
        assert answer.status_code == 303
        assert cookies_set(answer) == {"imagegen_console": False}
