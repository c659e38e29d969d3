"""Input images through the API: uploaded into the tenant's own prefix, checked from their header
before a job is queued, and fetched whole by the worker at call time (moto's S3)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import boto3
import fakeredis
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws
from PIL import Image

from imagegen.errors import InputImageError
from imagegen.records import JobStatus
from imagegen.requests import FastUpscaleRequest
from imagegen.settings import Settings
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import ClaimState
from producer.api import create_app
from producer.client import Client
from worker.inputs import fetch_inputs

UPSCALE = "us.stability.stable-fast-upscale-v1:0"


def png(size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[TestClient, Client]]:
    settings = settings.model_copy(update={"api_max_body_bytes": 2_000_000})
    redis = fakeredis.FakeRedis(decode_responses=True)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=settings.s3_bucket)
        with TestClient(create_app(settings, redis_client=redis)) as http:
            yield http, Client(settings, redis_client=redis)


def auth(client: Client, tenant: str) -> dict[str, str]:
    _, key = client.api_keys.create(tenant)
    return {"Authorization": f"Bearer {key}"}


def upload(http: TestClient, headers: dict[str, str], data: bytes) -> Any:
    return http.post("/v1/uploads", content=data, headers={**headers, "Content-Type": "image/png"})


def test_an_upload_becomes_a_jobs_input(api: tuple[TestClient, Client]) -> None:
    http, client = api
    acme = auth(client, "acme")
    answer = upload(http, acme, png((256, 192)))
    assert answer.status_code == 201, answer.text
    uploaded = answer.json()
    assert uploaded["image"].startswith("s3://test-bucket/uploads/acme/")
    assert (uploaded["width"], uploaded["height"], uploaded["format"]) == (256, 192, "png")
    job = http.post(
        "/v1/jobs",
        json={"model_id": UPSCALE, "request": {"image": uploaded["image"]}},
        headers=acme,
    )
    assert job.status_code == 202, job.text
    assert job.json()["request"]["image"] == uploaded["image"]
    # Another tenant cannot name it.
    theirs = http.post(
        "/v1/jobs",
        json={"model_id": UPSCALE, "request": {"image": uploaded["image"]}},
        headers=auth(client, "rival"),
    )
    assert theirs.status_code == 422
    assert [e["field"] for e in theirs.json()["errors"]] == ["request.image"]


def test_inputs_are_checked_before_queueing(api: tuple[TestClient, Client]) -> None:
    http, client = api
    acme = auth(client, "acme")
    not_an_image = upload(http, acme, b"hello, not a picture")
    assert not_an_image.status_code == 422
    assert not_an_image.json()["errors"][0]["field"] == "body"
    too_wide = upload(http, acme, png((1600, 200))).json()["image"]
    job = http.post(
        "/v1/jobs", json={"model_id": UPSCALE, "request": {"image": too_wide}}, headers=acme
    )
    assert job.status_code == 422
    [error] = job.json()["errors"]
    assert error["field"] == "request.image"
    assert "1536" in error["message"]
    missing = http.post(
        "/v1/jobs",
        json={"model_id": UPSCALE, "request": {"image": "s3://test-bucket/uploads/acme/gone.png"}},
        headers=acme,
    )
    assert missing.status_code == 422
    assert "cannot be read" in missing.json()["errors"][0]["message"]


def test_a_presigned_upload_names_the_tenants_prefix(api: tuple[TestClient, Client]) -> None:
    http, client = api
    answer = http.post(
        "/v1/uploads/presigned", json={"format": "webp"}, headers=auth(client, "acme")
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["s3_key"].startswith("uploads/acme/")
    assert body["s3_key"].endswith(".webp")
    assert body["upload_url"].startswith("http")
    assert body["upload_content_type"] == "image/webp"


def test_the_worker_fetches_the_whole_image_and_checks_it(settings: Settings) -> None:
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="test-bucket")
        data = png((256, 192))
        s3.put_object(Bucket="test-bucket", Key="uploads/acme/a.png", Body=data)
        s3.put_object(Bucket="test-bucket", Key="uploads/acme/big.png", Body=png((1600, 200)))
        reads = JobReads(fakeredis.FakeRedis(decode_responses=True))
        request = FastUpscaleRequest(image="s3://test-bucket/uploads/acme/a.png")
        images = fetch_inputs(s3, reads, UPSCALE, request, tenant="acme", max_bytes=10**6)
        assert base64.b64decode(images["image"]) == data
        with pytest.raises(InputImageError, match="1536"):
            fetch_inputs(
                s3,
                reads,
                UPSCALE,
                FastUpscaleRequest(image="s3://test-bucket/uploads/acme/big.png"),
                tenant="acme",
                max_bytes=10**6,
            )
        with pytest.raises(InputImageError, match="no longer exists"):
            fetch_inputs(
                s3,
                reads,
                UPSCALE,
                FastUpscaleRequest(image="job:01GONE"),
                tenant="acme",
                max_bytes=10**6,
            )


def test_the_worker_reads_no_other_tenants_job_output(settings: Settings) -> None:
    """A record naming another tenant's job as its input (however it got there) never reads
    that job's image: to the worker, as to the API, the job is not there."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="test-bucket")
        data = png((256, 192))
        s3.put_object(Bucket="test-bucket", Key="images/theirs.png", Body=data)
        client = Client(settings, redis_client=fakeredis.FakeRedis(decode_responses=True))
        theirs = client.submit("a secret picture", tenant="rival").job_id
        assert client.jobs.claim(theirs, "w", 60_000).state is ClaimState.CLAIMED
        image = {"s3_bucket": "test-bucket", "s3_key": "images/theirs.png", "sha256": "x"}
        client.jobs.finish(theirs, "w", JobStatus.SUCCEEDED, image)
        request = FastUpscaleRequest(image=f"job:{theirs}")
        with pytest.raises(InputImageError, match="no longer exists"):
            fetch_inputs(s3, client.reads, UPSCALE, request, tenant="acme", max_bytes=10**6)
        own = fetch_inputs(s3, client.reads, UPSCALE, request, tenant="rival", max_bytes=10**6)
        assert base64.b64decode(own["image"]) == data
