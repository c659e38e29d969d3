"""/docs in a real browser (Debian's chromium, driven by Playwright) against the real API, with
every request to another host blocked: Swagger UI reads the document without a resolver error,
Authorize takes an API key, and "Try it out" calls the API with it. A screenshot goes to
out/docs-authorized.png."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from devstack.stack import Stack
from producer.client import Client

pytestmark = pytest.mark.integration

OUT = Path(__file__).resolve().parents[2] / "out"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def api_url(stack: Stack) -> str:
    return stack.urls.get("api") or stack.start_api()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page where any request to another host is refused (and noted)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    outside: list[str] = []

    def closed_network(route: Any) -> None:
        if urlparse(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", closed_network)
    opened = context.new_page()
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    context.close()
    assert outside == [], f"the page asked another host: {outside}"


def test_authorize_takes_a_key_and_try_it_out_uses_it(
    stack: Stack, api_url: str, page: Any
) -> None:
    with Client(stack.settings()) as client:
        _, key = client.api_keys.create("docs-browser")
    sent: list[str | None] = []
    page.on(
        "request",
        lambda request: (
            sent.append(request.headers.get("authorization"))
            if request.url.endswith("/v1/models")
            else None
        ),
    )
    page.goto(f"{api_url}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    page.wait_for_selector("#operations-jobs-submitJob")
    assert page.locator(".errors-wrapper").count() == 0  # no resolver error
    page.click("button.authorize")
    scheme = page.locator(".auth-container", has_text="apiKey")
    scheme.locator("input").fill(key)
    scheme.locator("button.authorize").click()
    page.click("button.btn-done")
    operation = page.locator("#operations-models-listModels")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table tr.response .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith("200")
    assert sent == [f"Bearer {key}"]
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "docs-authorized.png"), full_page=True)
