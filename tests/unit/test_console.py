"""The web console over HTTP: who may see what, sessions that end with their key, the API's
field-named errors beside the form's inputs."""

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


@dataclass
class Console:
    http: TestClient
    client: Client

    def login(self, tenant: str) -> str:
        _, key = self.client.api_keys.create(tenant)
        answer = self.post("/console/login", data={"key": key}, follow_redirects=False)
        assert answer.status_code == 303, answer.text
        return key

    def token(self) -> str:
        """This browser's form token, as a console page carries it."""
        found = re.search(r'name="csrf" value="([^"]+)"', self.http.get("/console/login").text)
        assert found, "the login form carries no token"
        return found[1]

    def post(self, path: str, data: dict[str, str] | None = None, **kwargs: Any) -> Any:
        """A post from the console's own page: with the form token."""
        return self.http.post(path, data={**(data or {}), "csrf": self.token()}, **kwargs)


@pytest.fixture
def console(settings: Settings) -> Iterator[Console]:
    settings = settings.model_copy(update={"api_admin_token": SecretStr(OPERATOR_TOKEN)})
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        yield Console(http, Client(settings, redis_client=redis))


def alerts(html: str) -> list[str]:
    return re.findall(r'role="alert">([^<]+)<', html)


def test_pages_need_a_login(console: Console) -> None:
    for path in ("/console", "/console/rows", "/console/operator", "/console/events"):
        answer = console.http.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/console/login"


def test_a_bad_key_is_refused_and_the_key_never_reaches_a_url(console: Console) -> None:
    refused = console.post("/console/login", data={"key": "igk_nope_nope"})
    assert refused.status_code == 401
    assert "not a valid API key" in refused.text
    key = console.login("acme")
    cookie = console.http.cookies.get("imagegen_console")
    assert cookie
    assert key not in cookie
    page = console.http.get("/console")
    assert page.status_code == 200
    assert key not in page.text


def test_a_tenant_sees_only_its_own_jobs(console: Console) -> None:
    theirs = console.client.submit("a rival picture", tenant="rival")
    console.login("acme")
    mine = console.post(
        "/console/jobs",
        data={"model_id": CORE, "f.prompt": "a lighthouse at dawn", "f.aspect_ratio": "16:9"},
        follow_redirects=False,
    )
    assert mine.status_code == 303
    job_id = mine.headers["location"].split("submitted=")[1]
    record = console.client.get(job_id)
    assert (record.tenant, record.request.aspect_ratio) == ("acme", "16:9")  # type: ignore[union-attr]
    rows = console.http.get("/console/rows").text
    assert job_id in rows
    assert theirs.job_id not in rows
    assert theirs.job_id not in console.http.get("/console").text
    for path in ("", "/image"):
        assert console.http.get(f"/console/jobs/{theirs.job_id}{path}").status_code == 404
    assert console.post(f"/console/jobs/{theirs.job_id}/cancel").status_code == 404
    assert console.client.get(theirs.job_id).status is JobStatus.QUEUED


def test_errors_are_shown_beside_their_inputs(console: Console) -> None:
    console.login("acme")
    answer = console.post(
        "/console/jobs",
        data={
            "model_id": "us.stability.stable-outpaint-v1:0",
            "f.left": "lots",
            "f.creativity": "2",
        },
    )
    assert answer.status_code == 422
    errors = alerts(answer.text)
    assert "Input should be a valid integer" in errors
    assert "Input should be less than or equal to 1" in errors
    assert "Field required" in errors  # the image
    # Each message sits in the error span of its own input.
    assert re.search(
        r'f\.left" value="lots".*?role="alert">Input should be a valid integer', answer.text, re.S
    )


def test_cancel_from_the_job_page(console: Console) -> None:
    console.login("acme")
    job = console.client.submit("wait for me", tenant="acme", priority="batch")
    page = console.http.get(f"/console/jobs/{job.job_id}")
    assert "Cancel this job" in page.text
    done = console.post(f"/console/jobs/{job.job_id}/cancel", follow_redirects=False)
    assert done.status_code == 303
    assert console.client.get(job.job_id).status is JobStatus.CANCELED


def test_revoking_the_key_ends_the_session(console: Console) -> None:
    key = console.login("acme")
    assert console.http.get("/console", follow_redirects=False).status_code == 200
    [found] = [k for k in console.client.api_keys.list() if k.tenant == "acme"]
    assert key.startswith(f"igk_{found.key_id}_")
    console.client.api_keys.revoke(found.key_id)
    assert console.http.get("/console", follow_redirects=False).status_code == 303


def test_the_operator_view_needs_the_operator_token(console: Console) -> None:
    console.login("acme")
    assert console.http.get("/console/operator", follow_redirects=False).status_code == 303
    answer = console.post("/console/login", data={"key": OPERATOR_TOKEN}, follow_redirects=False)
    assert answer.headers["location"] == "/console/operator"
    page = console.http.get("/console/operator")
    assert page.status_code == 200
    assert 'id="quota-chart"' in page.text
    quota: dict[str, Any] = console.http.get("/console/operator/quota.json").json()
    assert CORE in {m["model_id"] for m in quota["models"]}
    # An operator session is not a tenant's.
    assert console.http.get("/console", follow_redirects=False).status_code == 303


def test_an_input_image_uploaded_through_the_form(settings: Settings) -> None:
    import io

    import boto3
    from moto import mock_aws
    from PIL import Image

    picture = io.BytesIO()
    Image.new("RGB", (256, 192), (20, 120, 200)).save(picture, format="PNG")
    redis = fakeredis.FakeRedis(decode_responses=True)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=settings.s3_bucket)
        with TestClient(create_app(settings, redis_client=redis)) as http:
            console = Console(http, Client(settings, redis_client=redis))
            console.login("acme")
            upscale = "us.stability.stable-fast-upscale-v1:0"
            answer = console.post(
                "/console/jobs",
                data={"model_id": upscale},
                files={"file.image": ("cat.png", picture.getvalue(), "image/png")},
                follow_redirects=False,
            )
            assert answer.status_code == 303, alerts(answer.text)
            job_id = answer.headers["location"].split("submitted=")[1]
            image = console.client.get(job_id).request.image  # type: ignore[union-attr]
            assert image.startswith(f"s3://{settings.s3_bucket}/uploads/acme/")
            refused = console.post(
                "/console/jobs",
                data={"model_id": upscale},
                files={"file.image": ("notes.txt", b"not a picture", "text/plain")},
            )
            assert refused.status_code == 422
            assert "is not a PNG, JPEG or WebP image" in alerts(refused.text)


def test_the_job_page_links_its_trace_when_a_viewer_is_configured(settings: Settings) -> None:
    viewer = "https://traces.example/trace/{trace_id}?from=console"
    caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    for url, expected in (
        (
            viewer,
            '<a href="https://traces.example/trace/4bf92f3577b34da6a3ce929d0e0e4736'
            '?from=console" rel="noopener noreferrer" id="trace">',
        ),
        (None, '<span id="trace">4bf92f3577b34da6a3ce929d0e0e4736</span>'),
    ):
        redis = fakeredis.FakeRedis(decode_responses=True)
        with TestClient(
            create_app(settings.model_copy(update={"console_trace_url": url}), redis_client=redis)
        ) as http:
            console = Console(http, Client(settings, redis_client=redis))
            key = console.login("acme")
            traced = http.post(
                "/v1/jobs",
                json={"request": {"prompt": "a lighthouse"}},
                headers={"Authorization": f"Bearer {key}", "traceparent": caller},
            ).json()
            untraced = console.client.submit("a harbour", tenant="acme")
            assert expected in http.get(f"/console/jobs/{traced['job_id']}").text
            assert 'id="trace"' not in http.get(f"/console/jobs/{untraced.job_id}").text


@pytest.mark.parametrize("url", ["https://traces.example/trace/", "ftp://x/{trace_id}"])
def test_a_trace_viewer_url_without_its_place_for_the_id_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="console_trace_url"):
        Settings(console_trace_url=url, _env_file=None)  # type: ignore[call-arg]


def test_the_operator_view_shows_each_pool_and_its_circuit(settings: Settings) -> None:
    from imagegen.pools import PoolSpec
    from imagegen.store.pool_stats import PoolStats
    from imagegen.store.quota import QuotaStore

    pooled = settings.model_copy(
        update={
            "api_admin_token": SecretStr(OPERATOR_TOKEN),
            "pools": (
                PoolSpec(name="acct-a", region="us-west-2", models=(CORE,), rpm=600),
                PoolSpec(name="acct-b", region="us-east-1", models=(CORE,), rpm=300),
            ),
        }
    )
    redis = fakeredis.FakeRedis(decode_responses=True)
    QuotaStore(redis, pooled).report(CORE, pool="acct-b", denied="AccessDeniedException")
    PoolStats(redis).count("acct-a", CORE, "image", billed_micro=40_000)
    with TestClient(create_app(pooled, redis_client=redis)) as http:
        console = Console(http, Client(pooled, redis_client=redis))
        console.post("/console/login", data={"key": OPERATOR_TOKEN})
        page = console.http.get("/console/operator").text
    assert "Bedrock pools" in page
    rows = re.findall(r"<tr><td>(acct-[ab])</td><td>([^<]+)</td>.*?</tr>", page)
    assert rows == [("acct-a", "us-west-2"), ("acct-b", "us-east-1")]
    assert "<strong>open</strong> after AccessDeniedException" in page
    assert "1 / 1 / $0.04 / 0 / 0" in page  # acct-a's day
