"""The console attacked in a real browser (Debian's chromium, driven by Playwright), with every
request to another host refused: a page on another port of the same host (same-site) and one on
another site frame the console, and post its forms with the logged-in victim's cookies. The
framed console does not render; the forged posts are refused and change nothing. The console's
own pages and /docs run under their Content-Security-Policy without a single violation.
Screenshots go to out/console-{framed,forged-same-site,forged-cross-site}.png."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus
from imagegen.store.spend import Budget
from producer.client import Client
from tests.integration.conftest import wait_all
from tests.security.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.integration

OUT = Path(__file__).resolve().parents[2] / "out"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 30_000


class AttackerSite:
    """A web server on another port of this host, serving the attacker's pages."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path, "not here").encode()
                self.send_response(200 if self.path in pages else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, host: str, path: str) -> str:
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def attacker() -> Iterator[AttackerSite]:
    site = AttackerSite()
    yield site
    site.stop()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A page in a fresh context: requests to other hosts refused, and every message about a
    Content-Security-Policy violation noted."""
    context = browser.new_context(viewport={"width": 1100, "height": 800})
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
    violations: list[str] = []
    opened.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    opened.csp_violations = violations
    yield opened
    context.close()
    assert outside == [], f"the page asked another host: {outside}"


def shot(page: Any, name: str) -> None:
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / f"console-{name}.png"), full_page=True)


def log_in(page: Any, api: str, secret: str) -> None:
    """Through the console's own login form, as a person would."""
    page.goto(f"{api}/console/login")
    page.fill("#key", secret)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "/console/login" not in page.url, page.inner_text("main")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_framed_console_does_not_render(
    secure_stack: Stack, attacker: AttackerSite, page: Any, host: str, tenant_keys: dict[str, str]
) -> None:
    api = secure_stack.urls["api"]
    log_in(page, api, tenant_keys["alice"])
    attacker.pages["/frame"] = (
        "<!doctype html><title>A prize for you</title><h1>Click the button to win</h1>"
        f'<iframe id="victim" src="{api}/console" width="900" height="500"></iframe>'
    )
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text))
    page.goto(attacker.url(host, "/frame"))
    page.wait_for_timeout(1500)
    [framed] = [frame for frame in page.frames if frame != page.main_frame]
    assert not framed.url.startswith(api)  # chromium replaced it with its error page
    assert framed.query_selector("#job-rows") is None
    assert framed.query_selector("form") is None
    assert any("frame-ancestors" in text or "X-Frame-Options" in text for text in blocked)
    if host == "127.0.0.1":
        shot(page, "framed")


@pytest.mark.parametrize(
    ("host", "name"), [("127.0.0.1", "same-site"), ("localhost", "cross-site")]
)
def test_a_forged_form_post_is_refused_and_changes_nothing(
    secure_stack: Stack, attacker: AttackerSite, page: Any, host: str, name: str
) -> None:
    api = secure_stack.urls["api"]
    with Client(secure_stack.settings()) as client:
        _, key = client.api_keys.create("browsing")
        client.set_budget(Budget("browsing", daily_hard=0.0))  # its jobs wait
        try:
            waiting = client.submit("a job the attacker wants canceled", tenant="browsing")
            log_in(page, api, key)
            attacker.pages[f"/{name}"] = (
                "<!doctype html><title>Loading</title>"
                f'<form id="f" method="post" action="{api}/console/jobs/{waiting.job_id}/cancel">'
                '<button id="go">Continue</button></form>'
                "<script>document.getElementById('f').submit()</script>"
            )
            with page.expect_response(lambda r: r.request.method == "POST") as posted:
                page.goto(attacker.url(host, f"/{name}"))
            assert posted.value.status == 403
            page.wait_for_selector("#refused-reason")
            shot(page, f"forged-{name}")
            assert client.get(waiting.job_id).status is JobStatus.QUEUED
        finally:
            client.set_budget(Budget("browsing"))
            client.cancel(waiting.job_id)


@pytest.mark.usefixtures("fresh_brake")  # the operator logs in from 127.0.0.1 like the attacks
def test_the_consoles_pages_and_docs_run_under_their_policy(
    secure_stack: Stack, page: Any, tenant_keys: dict[str, str]
) -> None:
    api = secure_stack.urls["api"]
    with Client(secure_stack.settings()) as client:
        done = client.submit("a lighthouse under its policy", tenant="alice")
        wait_all(client, [done.job_id])
    log_in(page, api, tenant_keys["alice"])
    page.wait_for_selector(f"#job-{done.job_id} img.thumb")
    page.wait_for_function(
        f"() => document.querySelector('#job-{done.job_id} img.thumb').naturalWidth > 0"
    )
    page.wait_for_selector("#live-state:text('live')")
    page.goto(f"{api}/console/jobs/{done.job_id}")
    page.wait_for_function("() => document.querySelector('img.full').naturalWidth > 0")
    page.click("nav button[type=submit]")  # log out, through the page's own form
    page.wait_for_selector("#key")
    log_in(page, api, ADMIN_TOKEN)
    page.wait_for_function(
        "() => Number(document.getElementById('quota-chart').dataset.samples) >= 2"
    )
    page.goto(f"{api}/docs")
    page.wait_for_selector("[data-path='/v1/jobs']")
    assert page.csp_violations == []
