"""Cross-site request forgery against the console, over HTTP (the app in process): a post
from another origin, or from another port of the same site (which SameSite=Strict lets through
with the victim's cookie), is refused before anything changes; so is a post without this
browser's form token, the login form's included. The console's own forms still work."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from imagegen.records import JobStatus
from imagegen.settings import Settings
from producer.api import create_app
from producer.client import Client

OPERATOR_TOKEN = "an-operator-token-of-30-chars!"
CORE = "stability.stable-image-core-v1:0"
OWN = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
SAME_SITE = {"Origin": "http://testserver:8001", "Sec-Fetch-Site": "same-site"}
CROSS_SITE = {"Origin": "https://attacker.example", "Sec-Fetch-Site": "cross-site"}
OLD_BROWSER_SAME_SITE = {"Origin": "http://testserver:8001"}
FORGED = [SAME_SITE, CROSS_SITE, OLD_BROWSER_SAME_SITE, {"Origin": "null"}]
TOKEN = re.compile(r'name="csrf" value="([^"]+)"')
FIELD = re.compile(r'<input type="hidden" name="csrf" value="[\w-]{43}">')


@dataclass
class Browser:
    http: TestClient
    client: Client

    def token(self, path: str = "/console/login") -> str:
        found = TOKEN.search(self.http.get(path).text)
        assert found, f"no form token on {path}"
        return found[1]

    def post(
        self, path: str, data: dict[str, str] | None = None, headers: Any = None, **kw: Any
    ) -> Any:
        return self.http.post(path, data=data, headers=headers, follow_redirects=False, **kw)

    def log_in(self, secret: str) -> None:
        answer = self.post("/console/login", {"key": secret, "csrf": self.token()}, OWN)
        assert answer.status_code == 303, answer.text


@pytest.fixture
def browser(settings: Settings) -> Iterator[Browser]:
    settings = settings.model_copy(update={"api_admin_token": SecretStr(OPERATOR_TOKEN)})
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        yield Browser(http, Client(settings, redis_client=redis))


def tenant(browser: Browser, name: str = "acme") -> str:
    _, key = browser.client.api_keys.create(name)
    browser.log_in(key)
    return key


@pytest.mark.parametrize("origin", FORGED)
def test_a_forged_cancel_is_refused_and_the_job_keeps_waiting(
    browser: Browser, origin: dict[str, str]
) -> None:
    tenant(browser)
    job = browser.client.submit("wait for me", tenant="acme", priority="batch")
    # The attacker's page cannot read the token, but even with it the origin is refused.
    for data in ({}, {"csrf": browser.token("/console")}):
        answer = browser.post(f"/console/jobs/{job.job_id}/cancel", data, origin)
        assert answer.status_code == 403, answer.text
        assert "refused" in answer.text
    assert browser.client.get(job.job_id).status is JobStatus.QUEUED


@pytest.mark.parametrize("origin", FORGED)
def test_a_forged_submit_bills_nothing(browser: Browser, origin: dict[str, str]) -> None:
    tenant(browser)
    form = {"model_id": CORE, "f.prompt": "the attacker's prompt", "csrf": browser.token()}
    answer = browser.post("/console/jobs", form, origin)
    assert answer.status_code == 403
    assert browser.client.list_jobs(tenant="acme").jobs == []


@pytest.mark.parametrize("origin", FORGED)
def test_a_forged_redeliver_and_logout_are_refused(
    browser: Browser, origin: dict[str, str]
) -> None:
    tenant(browser)
    job = browser.client.submit("a job", tenant="acme")
    assert browser.post(f"/console/jobs/{job.job_id}/redeliver", {}, origin).status_code == 403
    assert browser.post("/console/logout", {}, origin).status_code == 403
    assert browser.http.get("/console", follow_redirects=False).status_code == 200


@pytest.mark.parametrize("origin", FORGED)
def test_a_forged_replay_is_refused(browser: Browser, origin: dict[str, str]) -> None:
    browser.log_in(OPERATOR_TOKEN)
    answer = browser.post("/console/operator/replay", {"job_id": "x"}, origin)
    assert answer.status_code == 403


@pytest.mark.parametrize("origin", FORGED)
def test_login_csrf_is_refused(browser: Browser, origin: dict[str, str]) -> None:
    """The attacker's page posts the attacker's own key: the victim would be logged in as the
    attacker's tenant, and upload there."""
    _, attackers_key = browser.client.api_keys.create("mallory")
    answer = browser.post("/console/login", {"key": attackers_key}, origin)
    assert answer.status_code == 403
    assert "imagegen_console=" not in answer.headers.get("set-cookie", "")
    assert browser.http.get("/console", follow_redirects=False).status_code == 303


def test_a_post_without_this_browsers_token_is_refused(browser: Browser) -> None:
    _, key = browser.client.api_keys.create("acme")
    # No token, and a token of another browser: refused even from the console's own origin.
    assert browser.post("/console/login", {"key": key}, OWN).status_code == 403
    other = TOKEN.search(
        TestClient(browser.http.app).get("/console/login").text  # another browser's page
    )
    assert other is not None
    assert browser.post("/console/login", {"key": key, "csrf": other[1]}, OWN).status_code == 403
    browser.log_in(key)
    job = browser.client.submit("wait for me", tenant="acme", priority="batch")
    assert browser.post(f"/console/jobs/{job.job_id}/cancel", {}, OWN).status_code == 403
    assert browser.client.get(job.job_id).status is JobStatus.QUEUED


def test_each_session_has_its_own_token(browser: Browser) -> None:
    before_login = browser.token()
    tenant(browser)
    first = browser.token()
    browser.post("/console/logout", {"csrf": first}, OWN)
    tenant(browser)
    assert len({before_login, first, browser.token()}) == 3
    job = browser.client.submit("wait for me", tenant="acme", priority="batch")
    stale = browser.post(f"/console/jobs/{job.job_id}/cancel", {"csrf": first}, OWN)
    assert stale.status_code == 403


def test_the_consoles_own_forms_still_work(browser: Browser) -> None:
    tenant(browser)
    form = {"model_id": CORE, "f.prompt": "a lighthouse", "csrf": browser.token("/console")}
    submitted = browser.post("/console/jobs", form, OWN)
    assert submitted.status_code == 303, submitted.text
    job = browser.client.submit("wait for me", tenant="acme", priority="batch")
    page = browser.http.get(f"/console/jobs/{job.job_id}").text
    [cancel_token] = re.findall(
        r'action="/console/jobs/[^"]+/cancel"[^>]*><input type="hidden" name="csrf" '
        r'value="([^"]+)"',
        page,
    )
    canceled = browser.post(f"/console/jobs/{job.job_id}/cancel", {"csrf": cancel_token}, OWN)
    assert canceled.status_code == 303
    assert browser.client.get(job.job_id).status is JobStatus.CANCELED
    # A client that names no origin at all (no Origin, no Sec-Fetch-Site) is judged by the token.
    logout = browser.post("/console/logout", {"csrf": browser.token()})
    assert logout.status_code == 303


def test_every_posting_form_carries_the_token(browser: Browser) -> None:
    tenant(browser)
    job = browser.client.submit("a job", tenant="acme")
    for path in ("/console/login", "/console", f"/console/jobs/{job.job_id}"):
        html = browser.http.get(path).text
        forms = re.findall(r"<form\b[^>]*method=\"post\"[^>]*>(.{0,120})", html, re.S)
        assert forms, path
        assert all(FIELD.match(body) for body in forms), (path, forms)
