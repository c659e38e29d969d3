"""Attack: decompression bombs, images whose headers claim 100,000 x 100,000 pixels. Uploaded
(over the API and through the console's form) they are a 422 naming the field; swapped into S3
after a job's check, the worker ends the job InputImageInvalid at its first attempt, with no
retries (it used to be a 500 at upload, and five InternalError retries in the worker)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import boto3
import httpx2 as httpx
import pytest

from devstack.stack import Stack
from imagegen.records import JobStatus
from imagegen.store.spend import Budget
from producer.client import Client
from tests.bombs import jpeg_bomb, picture, png_bomb, webp_bomb
from tests.integration.conftest import wait_all
from tests.security.console_visitor import ConsoleVisitor

pytestmark = pytest.mark.integration

UPSCALE = "us.stability.stable-fast-upscale-v1:0"
BOMBS = {"png": png_bomb, "jpeg": jpeg_bomb, "webp": webp_bomb}


@pytest.fixture
def api(secure_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secure_stack.urls["api"], timeout=30) as client:
        yield client


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_an_uploaded_bomb_is_a_422_naming_the_body(
    api: httpx.Client, tenant_keys: dict[str, str], kind: str
) -> None:
    answer = api.post(
        "/v1/uploads",
        content=BOMBS[kind](),
        headers={
            "Authorization": f"Bearer {tenant_keys['mallory']}",
            "Content-Type": f"image/{kind}",
        },
    )
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["field"] == "body"
    assert "100,000x100,000" in error["message"] or "65,000x65,000" in error["message"]


def test_a_bomb_through_the_consoles_form_is_shown_beside_its_input(
    secure_stack: Stack, tenant_keys: dict[str, str]
) -> None:
    visitor = ConsoleVisitor(secure_stack.urls["api"])
    try:
        visitor.log_in(tenant_keys["mallory"])
        answer = visitor.post(
            "/console/jobs",
            {"model_id": UPSCALE},
            files={"file.image": ("bomb.png", png_bomb(), "image/png")},
        )
        assert answer.status_code == 422, answer.text
        assert "100,000x100,000" in answer.text
    finally:
        visitor.close()


def test_a_bomb_swapped_in_after_the_check_fails_the_job_at_once(
    api: httpx.Client, secure_stack: Stack, tenant_keys: dict[str, str]
) -> None:
    mallory = {"Authorization": f"Bearer {tenant_keys['mallory']}"}
    upload = api.post(
        "/v1/uploads",
        content=picture("PNG", (512, 512)),
        headers={**mallory, "Content-Type": "image/png"},
    ).json()
    with Client(secure_stack.settings()) as client:
        # Mallory's jobs wait (no budget) while the checked upload is replaced with a bomb.
        client.set_budget(Budget("mallory", daily_hard=0.0))
        try:
            job = api.post(
                "/v1/jobs",
                json={"model_id": UPSCALE, "request": {"image": upload["image"]}},
                headers=mallory,
            ).json()
            s3 = boto3.client(
                "s3",
                endpoint_url=secure_stack.env["IMAGEGEN_S3_ENDPOINT_URL"],
                region_name=secure_stack.env["IMAGEGEN_AWS_REGION"],
            )
            s3.put_object(Bucket=upload["s3_bucket"], Key=upload["s3_key"], Body=png_bomb())
        finally:
            client.set_budget(Budget("mallory"))
        started = time.monotonic()
        [record] = wait_all(client, [job["job_id"]], timeout_s=30)
    assert record.status is JobStatus.FAILED
    assert record.error_code == "InputImageInvalid"
    assert "100,000x100,000" in (record.error_message or "")
    assert record.attempts == 1
    assert record.attempt_log == [] or all(a.retry_in_s is None for a in record.attempt_log)
    assert time.monotonic() - started < 20
