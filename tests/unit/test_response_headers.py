"""Security headers on every response of the console and the API (pages, redirects, errors,
refusals, static files, /docs), and a console that runs no inline script or style: its
Content-Security-Policy names no other origin but S3's, for images only."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from imagegen.settings import Settings
from producer.api import create_app
from producer.api.security_headers import image_origins

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "producer" / "console"
ADMIN_TOKEN = "an-admin-token-of-thirty-two-chars"
INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+\s*=|javascript:", re.IGNORECASE
)


@pytest.fixture
def http(settings: Settings) -> Iterator[TestClient]:
    settings = settings.model_copy(
        update={"api_admin_token": SecretStr(ADMIN_TOKEN), "api_max_body_bytes": 1000}
    )
    with TestClient(create_app(settings, redis_client=fakeredis.FakeRedis())) as client:
        yield client


def answers(http: TestClient) -> dict[str, object]:
    """One response of each kind."""
    get = http.get
    return {
        "login page": get("/console/login"),
        "redirect to login": get("/console", follow_redirects=False),
        "console script": get("/console/static/console.js"),
        "forged post": http.post("/console/logout", headers={"Sec-Fetch-Site": "cross-site"}),
        "post without token": http.post("/console/logout"),
        "api 401": get("/v1/jobs"),
        "admin 401": get("/v1/admin/tenants/acme"),
        "api 404": get("/v1/nothing-here"),
        "api 413": http.post("/v1/jobs", content=b"x" * 2000),
        "health": get("/healthz"),
        "docs": get("/docs"),
        "openapi": get("/openapi.json"),
    }


def test_every_response_carries_the_headers(http: TestClient) -> None:
    for name, answer in answers(http).items():
        headers = answer.headers  # type: ignore[attr-defined]
        assert headers["x-frame-options"] == "DENY", name
        assert headers["x-content-type-options"] == "nosniff", name
        assert headers["referrer-policy"] in {"no-referrer", "same-origin"}, name
        policy = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy, name
        assert "unsafe-inline" not in policy, name
        assert "unsafe-eval" not in policy, name
        assert "strict-transport-security" not in headers, name  # plain http here


def test_the_console_policy_allows_its_own_files_and_s3_images_only(
    http: TestClient, settings: Settings
) -> None:
    policy = http.get("/console/login").headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == " ".join(["'self'", *image_origins(settings)])
    assert directives["form-action"] == "'self'"
    others = re.findall(r"https?://[^\s;]+", policy)
    assert set(others) <= set(image_origins(settings))


def test_image_origins_are_where_presigned_urls_point(settings: Settings) -> None:
    assert image_origins(settings) == (
        f"https://{settings.s3_bucket}.s3.amazonaws.com",
        f"https://{settings.s3_bucket}.s3.{settings.aws_region}.amazonaws.com",
    )
    local = settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:4566"})
    assert image_origins(local) == ("http://127.0.0.1:4566",)


def test_docs_allow_swaggers_one_inline_script_by_hash(http: TestClient) -> None:
    page = http.get("/docs")
    [script] = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = page.headers["content-security-policy"]
    assert f"script-src 'self' 'sha256-{digest}';" in policy
    assert "http" not in policy


def test_the_console_has_no_inline_script_style_or_handler() -> None:
    files = [*(CONSOLE / "templates").glob("*.html"), *(CONSOLE / "static").glob("*")]
    assert len(files) > 5
    for file in files:
        if file.suffix in {".html", ".js"}:
            found = INLINE.findall(file.read_text())
            assert not found, (file.name, found)


def test_https_through_a_trusted_proxy_gets_hsts(settings: Settings) -> None:
    settings = settings.model_copy(update={"api_trusted_proxies": ("10.0.0.0/8",)})
    app = create_app(settings, redis_client=fakeredis.FakeRedis())
    proxied = {"X-Forwarded-Proto": "https"}
    with TestClient(app, client=("10.1.2.3", 40000)) as via_proxy:
        hsts = via_proxy.get("/healthz", headers=proxied).headers["strict-transport-security"]
        assert hsts.startswith("max-age=")
    with TestClient(app, client=("192.0.2.9", 40000)) as direct:
        assert "strict-transport-security" not in direct.get("/healthz", headers=proxied).headers
