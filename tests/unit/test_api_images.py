"""Images over HTTP, in process against moto's S3 server over real HTTP: a finished job's
``/image`` redirects to a presigned URL that downloads its bytes with no credentials, records,
chains and uploads carry a fresh ``image_url`` with its expiry, another tenant gets 404, a job
without an image a clear 409, and where images are streamed the API sends the bytes itself."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import fakeredis
import httpx2 as httpx
import pytest
from botocore.exceptions import NoCredentialsError
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from imagegen.records import JobStatus
from imagegen.settings import Settings
from imagegen.store.jobs import ClaimState
from producer.api import create_app
from producer.client import Client
from tests.support import image_bytes

JOB = {"request": {"prompt": "a lighthouse", "output_format": "png"}}
CUTOUT = "us.stability.stable-image-remove-background-v1:0"
LEASE_MS = 60_000
TTL_S = 600


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    """moto's S3 as a real HTTP server: presigned URLs are fetched the way a caller would."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Api:
    http: TestClient
    client: Client
    s3: Any
    settings: Settings

    def key(self, tenant: str) -> dict[str, str]:
        _, key = self.client.api_keys.create(tenant)
        return {"Authorization": f"Bearer {key}"}

    def submit(self, headers: dict[str, str], body: dict[str, Any] | None = None) -> str:
        response = self.http.post("/v1/jobs", json=body or JOB, headers=headers)
        assert response.status_code == 202, response.text
        job_id: str = response.json()["job_id"]
        return job_id

    def succeed(self, job_id: str, data: bytes) -> str:
        """Finish the job as a worker would: its image in S3, its record final."""
        record = self.client.get(job_id)
        self.client.dispatch.release(record.model_id)
        key = f"images/2026/11/25/{job_id}.png"
        bucket = self.settings.s3_bucket
        self.s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="image/png")
        claim = self.client.jobs.claim(job_id, "worker-1", LEASE_MS)
        assert claim.state is ClaimState.CLAIMED, claim
        self.client.jobs.finish(
            job_id,
            "worker-1",
            JobStatus.SUCCEEDED,
            {
                "s3_bucket": bucket,
                "s3_key": key,
                "s3_uri": f"s3://{bucket}/{key}",
                "content_type": "image/png",
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "width": 64,
                "height": 48,
            },
        )
        return key


def make_api(settings: Settings, s3_url: str, **updates: Any) -> Iterator[Api]:
    settings = settings.model_copy(
        update={
            "s3_endpoint_url": s3_url,
            "s3_bucket": f"images-{time.monotonic_ns()}",
            "image_url_ttl_s": TTL_S,
            "api_max_body_bytes": 2_000_000,
            **updates,
        }
    )
    s3 = boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1")
    s3.create_bucket(Bucket=settings.s3_bucket)
    redis = fakeredis.FakeRedis(decode_responses=True)
    with TestClient(create_app(settings, redis_client=redis)) as http:
        yield Api(http, Client(settings, redis_client=redis), s3, settings)


@pytest.fixture
def api(settings: Settings, s3_url: str) -> Iterator[Api]:
    yield from make_api(settings, s3_url)


@pytest.fixture
def streaming(settings: Settings, s3_url: str) -> Iterator[Api]:
    yield from make_api(settings, s3_url, api_image_delivery="stream")


def download(url: str) -> httpx.Response:
    """A plain GET, as a caller with no AWS credentials makes it."""
    return httpx.get(url, timeout=10)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    return body


def test_the_image_redirects_to_a_url_that_downloads_it(api: Api) -> None:
    acme = api.key("acme")
    job_id = api.submit(acme)
    data = image_bytes("png", (64, 48))
    api.succeed(job_id, data)
    answer = api.http.get(f"/v1/jobs/{job_id}/image", headers=acme, follow_redirects=False)
    assert answer.status_code == 302
    assert answer.headers["cache-control"] == "no-store"
    location = answer.headers["location"]
    assert parse_qs(urlparse(location).query)["X-Amz-Expires"] == [str(TTL_S)]
    fetched = download(location)
    assert fetched.status_code == 200
    assert fetched.content == data
    # The id the tenant sees in its records finds it too, and the chosen id's short form.
    own = api.submit(acme, {**JOB, "job_id": "order-7"})
    api.succeed(own, data)
    short = api.http.get("/v1/jobs/order-7/image", headers=acme, follow_redirects=False)
    assert short.status_code == 302


def test_another_tenant_gets_404_for_the_image(api: Api) -> None:
    job_id = api.submit(api.key("acme"))
    api.succeed(job_id, image_bytes())
    found = problem(api.http.get(f"/v1/jobs/{job_id}/image", headers=api.key("globex")), 404)
    assert found["title"] == "Job not found"
    problem(api.http.get(f"/v1/jobs/{job_id}/image"), 401)


def test_records_carry_a_fresh_image_url_with_its_expiry(api: Api) -> None:
    acme = api.key("acme")
    job_id = api.submit(acme)
    queued = api.http.get(f"/v1/jobs/{job_id}", headers=acme).json()
    assert (queued["image_url"], queued["image_url_expires_at"]) == (None, None)
    data = image_bytes("png", (80, 60))
    api.succeed(job_id, data)
    before = datetime.now(UTC).replace(microsecond=0)
    job = api.http.get(f"/v1/jobs/{job_id}", headers=acme).json()
    after = datetime.now(UTC)
    expires = datetime.fromisoformat(job["image_url_expires_at"])
    assert before.timestamp() + TTL_S <= expires.timestamp() <= after.timestamp() + TTL_S
    assert download(job["image_url"]).content == data
    # Every read signs its own: a second later the URL is a new one that works as well.
    time.sleep(1.1)
    again = api.http.get(f"/v1/jobs/{job_id}", headers=acme).json()
    assert again["image_url"] != job["image_url"]
    assert again["image_url_expires_at"] > job["image_url_expires_at"]
    assert download(again["image_url"]).content == data
    listed = api.http.get("/v1/jobs", headers=acme).json()["jobs"]
    assert download(listed[0]["image_url"]).content == data
    # The event stream's final event carries one too.
    with api.http.stream("GET", f"/v1/jobs/{job_id}/events", headers=acme) as stream:
        events = [
            json.loads(line.removeprefix("data: "))
            for line in stream.iter_lines()
            if line.startswith("data: {")
        ]
    assert download(events[-1]["image_url"]).content == data


def test_a_job_without_an_image_is_a_clear_409(api: Api) -> None:
    acme = api.key("acme")
    waiting = api.submit(acme)
    found = problem(api.http.get(f"/v1/jobs/{waiting}/image", headers=acme), 409)
    assert found["title"] == "Image not ready"
    assert "queued" in found["detail"]
    api.http.post(f"/v1/jobs/{waiting}/cancel", headers=acme)
    found = problem(api.http.get(f"/v1/jobs/{waiting}/image", headers=acme), 409)
    assert found["title"] == "No image"
    assert "canceled" in found["detail"]
    record = api.http.get(f"/v1/jobs/{waiting}", headers=acme).json()
    assert record["image_url"] is None


def test_a_chain_links_each_steps_image_and_its_final_one(api: Api) -> None:
    acme = api.key("acme")
    steps = [JOB, {"model_id": CUTOUT, "request": {"image": {"step": 0}}}]
    created = api.http.post("/v1/chains", json={"steps": steps}, headers=acme).json()
    chain_url = created["url"]
    problem(api.http.get(f"{chain_url}/image", headers=acme), 409)
    first, last = image_bytes("png", (64, 64)), image_bytes("png", (32, 32))
    api.succeed(created["job_ids"][0], first)
    running = api.http.get(chain_url, headers=acme).json()
    assert running["output_image_url"] is None
    assert download(running["steps"][0]["image_url"]).content == first
    assert running["steps"][1]["image_url"] is None
    api.succeed(created["job_ids"][1], last)
    chain = api.http.get(chain_url, headers=acme).json()
    assert chain["status"] == "succeeded"
    assert chain["output_image_url_expires_at"] is not None
    assert download(chain["output_image_url"]).content == last
    assert chain["steps"][1]["url"] == f"/v1/jobs/{created['job_ids'][1]}"
    redirect = api.http.get(f"{chain_url}/image", headers=acme, follow_redirects=False)
    assert redirect.status_code == 302
    assert download(redirect.headers["location"]).content == last
    problem(api.http.get(f"{chain_url}/image", headers=api.key("globex")), 404)
    problem(api.http.get(chain_url, headers=api.key("globex")), 404)


def test_an_upload_carries_a_link_to_itself(api: Api) -> None:
    data = image_bytes("png", (256, 192))
    answer = api.http.post(
        "/v1/uploads", content=data, headers={**api.key("acme"), "Content-Type": "image/png"}
    )
    assert answer.status_code == 201, answer.text
    uploaded = answer.json()
    assert datetime.fromisoformat(uploaded["image_url_expires_at"]) > datetime.now(UTC)
    assert download(uploaded["image_url"]).content == data


def test_when_urls_cannot_be_signed_records_still_answer_and_image_says_why(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme = api.key("acme")
    job_id = api.submit(acme)
    api.succeed(job_id, image_bytes())

    class Unsigned:
        def generate_presigned_url(self, *_: Any, **__: Any) -> str:
            raise NoCredentialsError

    images = api.http.app.state.api.images  # type: ignore[attr-defined]
    monkeypatch.setattr(images, "_s3", Unsigned)
    record = api.http.get(f"/v1/jobs/{job_id}", headers=acme)
    assert record.status_code == 200
    assert record.json()["image_url"] is None
    answer = api.http.get(f"/v1/jobs/{job_id}/image", headers=acme)
    found = problem(answer, 503)
    assert found["title"] == "Storage unavailable"
    assert answer.headers["retry-after"] == "5"


def test_streamed_images_come_from_the_api_itself(streaming: Api) -> None:
    api = streaming
    acme = api.key("acme")
    job_id = api.submit(acme)
    data = image_bytes("png", (64, 48))
    key = api.succeed(job_id, data)
    job = api.http.get(f"/v1/jobs/{job_id}", headers=acme).json()
    assert job["image_url"] == f"/v1/jobs/{job_id}/image"
    assert job["image_url_expires_at"] is None
    answer = api.http.get(job["image_url"], headers=acme)
    assert answer.status_code == 200
    assert answer.content == data
    assert answer.headers["content-type"] == "image/png"
    etag = answer.headers["etag"]
    assert etag == f'"{hashlib.sha256(data).hexdigest()}"'
    unchanged = api.http.get(job["image_url"], headers={**acme, "If-None-Match": etag})
    assert unchanged.status_code == 304
    assert unchanged.content == b""
    problem(api.http.get(job["image_url"], headers=api.key("globex")), 404)
    # An upload has no link then: the caller cannot reach S3, and has the bytes anyway.
    upload = api.http.post(
        "/v1/uploads", content=data, headers={**acme, "Content-Type": "image/png"}
    ).json()
    assert upload["image_url"] is None
    # An image gone from the bucket (a lifecycle rule) is said to be gone.
    api.s3.delete_object(Bucket=api.settings.s3_bucket, Key=key)
    gone = problem(api.http.get(job["image_url"], headers=acme), 404)
    assert gone["title"] == "Image not found"
