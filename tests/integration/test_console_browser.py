"""The console and /docs in a real browser (Debian's chromium, driven by Playwright) against a
real stack, with every request to another host blocked: log in with a key, submit through the
form, see the job succeed with its thumbnail, open it, cancel a waiting job, see another
tenant's job nowhere; the operator's quota chart. Screenshots go to out/console-*.png."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus
from producer.client import Client
from tests.conftest import require_service
from tests.integration.conftest import FAST_RETRIES, start_stack, wait_all

CONSOLE_STACK_DB = 11
OPERATOR_TOKEN = "console-operator-token-0123456789"
OUT = Path(__file__).resolve().parents[2] / "out"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    # One call every 6 s: the first job starts at once, the next one waits its turn.
    running = start_stack(
        tmp_path_factory.mktemp("console"),
        CONSOLE_STACK_DB,
        quota_rpm=10,
        quota_burst=1,
        extra_env=FAST_RETRIES,
    )
    url = running.start_api(extra_env={"IMAGEGEN_API_ADMIN_TOKEN": OPERATOR_TOKEN})
    yield running, url
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        require_service("Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require_service("playwright (pip install playwright)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh context where any request to another host is refused (and noted)."""
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
    opened.outside_requests = outside
    yield opened
    context.close()
    assert outside == [], f"the page asked another host: {outside}"


def shot(page: Any, name: str) -> None:
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / f"console-{name}.png"), full_page=True)


def log_in(page: Any, url: str, key: str) -> None:
    page.goto(f"{url}/console")
    page.fill("#key", key)
    page.click("button[type=submit]")


def test_docs_render_without_internet(console_stack: tuple[Stack, str], page: Any) -> None:
    _, url = console_stack
    page.goto(f"{url}/docs")
    page.wait_for_selector(".swagger-ui .info .title")
    assert "bedrock-imagegen" in page.inner_text(".swagger-ui .info .title")
    page.wait_for_selector("[data-path='/v1/jobs']")
    shot(page, "docs")


def test_a_tenant_submits_follows_opens_and_cancels(
    console_stack: tuple[Stack, str], page: Any
) -> None:
    stack, url = console_stack
    with Client(stack.settings()) as client:
        _, key = client.api_keys.create("acme")
        rival = client.submit("a rival tenant's picture", tenant="rival")
        log_in(page, url, key)
        page.wait_for_selector("#submit-form")
        core = 'fieldset[data-model="stability.stable-image-core-v1:0"]'
        page.fill(f"{core} textarea[name='f.prompt']", "A lighthouse on a rocky coast at sunset")
        page.select_option(f"{core} select[name='f.aspect_ratio']", "16:9")
        page.click("#submit-form button[type=submit]")
        page.wait_for_selector("p.notice")
        job_id = page.inner_text("p.notice").split()[1]
        row = f"#job-{job_id}"
        # Live: the row turns succeeded over server-sent events, with its thumbnail from S3.
        page.wait_for_selector(f"{row}[data-status=succeeded] img.thumb")
        page.wait_for_function(f"() => document.querySelector('{row} img.thumb').naturalWidth > 0")
        assert rival.job_id not in page.content()
        shot(page, "jobs")

        page.click(f"{row} a")
        page.wait_for_selector("img.full")
        page.wait_for_function("() => document.querySelector('img.full').naturalWidth > 0")
        assert page.inner_text("#job-status") == "succeeded"
        shot(page, "job")

        # A waiting job (the quota allows one call every 6 s) is canceled from its page.
        waiting = client.submit("a job that waits its turn", tenant="acme")
        page.goto(f"{url}/console/jobs/{waiting.job_id}")
        page.click("#cancel")
        page.wait_for_selector("#job-status")
        assert page.inner_text("#job-status") == "canceled"
        assert client.get(waiting.job_id).status is JobStatus.CANCELED
        shot(page, "canceled")

        answer = page.goto(f"{url}/console/jobs/{rival.job_id}")
        assert answer.status == 404
        wait_all(client, [rival.job_id])


def test_errors_appear_beside_the_field(console_stack: tuple[Stack, str], page: Any) -> None:
    stack, url = console_stack
    with Client(stack.settings()) as client:
        _, key = client.api_keys.create("acme")
    log_in(page, url, key)
    page.select_option("#model_id", "us.stability.stable-outpaint-v1:0")
    outpaint = 'fieldset[data-model="us.stability.stable-outpaint-v1:0"]'
    page.fill(f"{outpaint} input[name='f.creativity']", "2")
    page.click("#submit-form button[type=submit]")
    message = page.locator(f"{outpaint} input[name='f.creativity'] ~ .error")
    assert message.inner_text() == "Input should be less than or equal to 1"
    shot(page, "errors")


def test_the_operator_sees_the_quota_chart(console_stack: tuple[Stack, str], page: Any) -> None:
    _, url = console_stack
    log_in(page, url, OPERATOR_TOKEN)
    page.wait_for_selector("#quota-chart")
    # A function, not a string: the console's policy forbids evaluating strings as script.
    page.wait_for_function(
        "() => Number(document.getElementById('quota-chart').dataset.samples) >= 4"
    )
    lines = page.locator("#quota-chart polyline").count()
    assert lines >= 1
    assert "stability.stable-image-core-v1:0" in page.text_content("#quota-chart")
    shot(page, "operator")
