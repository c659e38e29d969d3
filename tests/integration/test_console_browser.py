"""The console and /docs in a real browser (Debian's chromium, driven by Playwright) against a
real stack, with every request to another host blocked: log in with a key, submit through the
form, see the job succeed with its thumbnail, open it, cancel a waiting job, see another
tenant's job nowhere; a waiting job's page turning succeeded with its image without a reload;
six tabs of one session live on one event stream (with Web Locks, and without); the gallery and
a search by a word of the prompt; a page saying its session ended; the operator's quota chart.
Screenshots go to out/console-*.png."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus
from imagegen.store.quota_history import SAMPLE_EVERY_S, QuotaHistory
from imagegen.store.spend import Budget
from producer.client import Client
from tests.integration.conftest import FAST_RETRIES, start_stack, wait_all

CONSOLE_STACK_DB = 11
OPERATOR_TOKEN = "console-operator-token-0123456789"
CORE = "stability.stable-image-core-v1:0"
OUT = Path(__file__).resolve().parents[2] / "out"
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
TIMEOUT_MS = 30_000
CUTOUT = "us.stability.stable-image-remove-background-v1:0"


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

        # A waiting job (its tenant's daily budget is used up) is canceled from its page.
        client.set_budget(Budget("acme", daily_hard=0.0))
        waiting = client.submit("a job that waits its turn", tenant="acme")
        page.goto(f"{url}/console/jobs/{waiting.job_id}")
        page.click("#cancel")
        page.wait_for_selector("#job-status")
        assert page.inner_text("#job-status") == "canceled"
        assert client.get(waiting.job_id).status is JobStatus.CANCELED
        client.set_budget(Budget("acme"))
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


def test_a_waiting_jobs_page_turns_succeeded_with_its_image_without_a_reload(
    console_stack: tuple[Stack, str], page: Any
) -> None:
    stack, url = console_stack
    with Client(stack.settings()) as client:
        _, key = client.api_keys.create("waiter")
        log_in(page, url, key)
        page.wait_for_selector("#live-state[data-state=live]")
        # It waits until its tenant's daily budget, used up, is raised.
        client.set_budget(Budget("waiter", daily_hard=0.0))
        job = client.submit("A lighthouse keeper waiting for the dawn", tenant="waiter")
        page.goto(f"{url}/console/jobs/{job.job_id}")
        assert page.inner_text("#job-status") == "queued"
        assert page.query_selector("img.full") is None
        page.wait_for_selector("#live-state[data-state=live]")
        shot(page, "job-waiting")
        page.evaluate("() => { window.loadedOnce = true; }")
        client.set_budget(Budget("waiter"))
        page.wait_for_selector("#job-status:text-is('succeeded')", timeout=60_000)
        page.wait_for_function("() => document.querySelector('img.full').naturalWidth > 0")
        assert page.evaluate("() => window.loadedOnce === true")  # the same page: no reload
        assert page.query_selector("#cancel") is None
        shot(page, "job-live")


def test_a_chains_page_shows_its_steps_as_they_finish(
    console_stack: tuple[Stack, str], page: Any
) -> None:
    stack, url = console_stack
    with Client(stack.settings()) as client:
        _, key = client.api_keys.create("chainer")
        log_in(page, url, key)
        client.set_budget(Budget("chainer", daily_hard=0.0))  # the chain waits until raised
        _, steps = client.submit_chain(
            [
                {"request": {"prompt": "A red apple on a wooden table"}},
                {"model_id": CUTOUT, "request": {"image": {"step": 0}}},
            ],
            tenant="chainer",
        )
        first, last = (step.job_id for step in steps)
        page.goto(f"{url}/console/jobs/{last}")  # the last step waits for the first
        assert page.inner_text("#job-status") == "queued"
        assert page.get_attribute(f"#step-{first}", "data-status") == "queued"
        page.wait_for_selector("#live-state[data-state=live]")
        page.evaluate("() => { window.loadedOnce = true; }")
        client.set_budget(Budget("chainer"))
        page.wait_for_selector(f"#step-{first}[data-status=succeeded] img.thumb", timeout=60_000)
        page.wait_for_selector("#job-status:text-is('succeeded')", timeout=60_000)
        page.wait_for_function("() => document.querySelector('img.full').naturalWidth > 0")
        assert page.get_attribute("#job-live", "data-final") == "1"
        assert page.evaluate("() => window.loadedOnce === true")
        shot(page, "chain")


@pytest.mark.parametrize("web_locks", [True, False], ids=["web-locks", "no-web-locks"])
def test_six_tabs_of_one_session_stay_live_on_one_stream(
    console_stack: tuple[Stack, str], page: Any, web_locks: bool
) -> None:
    stack, url = console_stack
    context = page.context
    if not web_locks:  # as over plain http to another host: no secure context, no Web Locks
        context.add_init_script("delete Navigator.prototype.locks;")
    streams: list[str] = []
    context.on(
        "request", lambda r: streams.append(r.url) if r.url.endswith("/console/events") else None
    )
    tenant = f"tabs-{web_locks}".lower()
    with Client(stack.settings()) as client:
        _, key = client.api_keys.create(tenant)
        log_in(page, url, key)
        # The first tab is on the console and leads before the others open (the log-in's
        # redirect can otherwise land after them, and another tab would hold the stream).
        page.wait_for_selector("#live-state[data-state=live]")
        assert page.get_attribute("#live-state", "title") == ""
        tabs = [page]
        for _ in range(5):
            tab = context.new_page()
            tab.set_default_timeout(TIMEOUT_MS)
            tab.goto(f"{url}/console")
            tabs.append(tab)
        for tab in tabs:
            tab.wait_for_selector("#live-state[data-state=live]")
        job = client.submit("six tabs watch a kettle boil", tenant=tenant)
        for tab in tabs:
            tab.wait_for_selector(f"#job-{job.job_id}[data-status=succeeded] img.thumb")
        for tab in tabs:
            assert tab.inner_text("#live-state") == "live"
        # With Web Locks, the first tab holds the one stream; without, each new tab took it
        # over from the one before (the server ended the older stream: no 429, no failure).
        assert len(streams) == (1 if web_locks else 6)
        shot(tabs[-1], f"six-tabs-{'locks' if web_locks else 'no-locks'}")
        # The leading tab goes away: another takes the stream over, and the rest stay live.
        leader = tabs[0] if web_locks else tabs[-1]
        assert leader.get_attribute("#live-state", "title") == ""  # it holds the stream
        leader.close()
        tabs.remove(leader)
        # A closed tab's renderer can outlive close() for a moment (and still pass on an event):
        # the take-over is the new stream, so wait for it before the next job.
        taken_over = 2 if web_locks else 7
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while len(streams) < taken_over and time.monotonic() < deadline:
            tabs[0].wait_for_timeout(100)
        assert len(streams) >= taken_over
        again = client.submit("the kettle boils again", tenant=tenant)
        for tab in tabs:
            tab.wait_for_selector(f"#job-{again.job_id}[data-status=succeeded] img.thumb")
        for tab in tabs:
            assert tab.inner_text("#live-state") == "live"
        if web_locks:
            assert len(streams) == 2
        else:
            # One of the five takes over; two that draw close times both do, and the newer
            # supersedes the other (a loaded machine hears the first one late): at most once each.
            assert 7 <= len(streams) <= 11


def test_the_gallery_and_a_search_by_a_word_of_the_prompt(
    console_stack: tuple[Stack, str], page: Any
) -> None:
    stack, url = console_stack
    prompts = [
        "A red barn in a snowy field",
        "A lighthouse keeper's cat asleep on the stairs",
        "Neon koi fish circling at night",
    ]
    with Client(stack.settings()) as client:
        _, key = client.api_keys.create("painter")
        ids = []
        for prompt in prompts:
            ids.append(client.submit(prompt, tenant="painter").job_id)
            time.sleep(0.005)  # newest first is by creation time: jobs of one ms have no order
        failed = client.submit("A forbidden koi, filtered: no image", tenant="painter")
        wait_all(client, [*ids, failed.job_id])
    log_in(page, url, key)
    page.click("#gallery-view")
    page.wait_for_selector("#gallery figure.tile img.thumb")
    shown = [el.get_attribute("id") for el in page.query_selector_all("#gallery figure.tile")]
    assert shown == [f"tile-{job_id}" for job_id in reversed(ids)]  # newest first, images only
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery img.thumb')]"
        ".every((img) => img.complete && img.naturalWidth > 0)"
    )
    shot(page, "gallery")

    page.fill("#q", "koi")
    page.click("#find")
    page.wait_for_url("**q=koi**")
    shown = [el.get_attribute("id") for el in page.query_selector_all("#gallery figure.tile")]
    assert shown == [f"tile-{ids[2]}"]
    shot(page, "gallery-search")

    page.click("#table-view")
    page.wait_for_selector("#job-rows")
    page.fill("#q", "")
    page.fill("#q", "Lighthouse")
    page.click("#find")
    page.wait_for_url("**q=Lighthouse**")
    rows = [el.get_attribute("id") for el in page.query_selector_all("#job-rows tr")]
    assert rows == [f"job-{ids[1]}"]
    assert "A lighthouse keeper's cat asleep" in page.inner_text(f"#job-{ids[1]} td.prompt")
    shot(page, "search")


def test_a_page_says_when_its_session_ended(console_stack: tuple[Stack, str], page: Any) -> None:
    stack, url = console_stack
    with Client(stack.settings()) as client:
        record, key = client.api_keys.create("leaving")
        log_in(page, url, key)
        page.wait_for_selector("#live-state[data-state=live]")
        client.api_keys.revoke(record.key_id)
    page.wait_for_selector("#live-state[data-state=ended]", timeout=15_000)
    assert page.inner_text("#live-state") == "Your session ended: log in again"
    shot(page, "session-ended")


def test_the_operator_sees_the_quota_chart(console_stack: tuple[Stack, str], page: Any) -> None:
    stack, url = console_stack
    with Client(stack.settings()) as client:
        history = QuotaHistory(client.dispatch.redis)
        # The workers keep a sample every 10 s on their own...
        deadline = time.monotonic() + 3 * SAMPLE_EVERY_S
        while not history.read([CORE]).get(CORE):
            assert time.monotonic() < deadline, "no worker recorded the quota's history"
            time.sleep(0.5)
        # ... and the chart opens with the last half hour of them (here, 40 more made up).
        status = client.operator.quota_store.status(CORE)
        start_ms = int(time.time() * 1000) - 40 * SAMPLE_EVERY_S * 1000
        for i in range(40):
            history.record([status], [], now_ms=start_ms + i * SAMPLE_EVERY_S * 1000)
    log_in(page, url, OPERATOR_TOKEN)
    page.wait_for_selector("#quota-chart")
    # A function, not a string: the console's policy forbids evaluating strings as script.
    page.wait_for_function(
        "() => Number(document.getElementById('quota-chart').dataset.samples) >= 1"
    )
    # Open full: the first draw has the kept samples, before the page sampled again.
    points = page.get_attribute(f'#quota-chart polyline[data-model="{CORE}"]', "data-points")
    assert points is not None
    assert int(points) >= 40
    page.wait_for_function(
        "() => Number(document.getElementById('quota-chart').dataset.samples) >= 3"
    )
    assert page.locator("#quota-chart polyline").count() >= 1
    assert CORE in (page.text_content("#quota-chart") or "")
    shot(page, "operator")
