"""S3: the deterministic key scheme, content type and metadata, and finding an earlier upload."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from moto import mock_aws

from imagegen.errors import StorageError
from imagegen.image_facts import JobFacts
from tests.support import image_bytes
from worker.images import inspect_image
from worker.storage import find_stored_image, image_key, upload_image

BUCKET = "test-bucket"


def facts(job_id: str = "J1", model_id: str = "m") -> JobFacts:
    return JobFacts(job_id, model_id, "acme", 1_700_000_000_000, "batch", "ab" * 32, "cd" * 32)


@pytest.fixture
def s3() -> Iterator[object]:
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_key_is_prefix_date_job_and_extension() -> None:
    created = datetime(2026, 3, 7, 23, 59, tzinfo=UTC)
    assert image_key("images", "J1", created, "png") == "images/2026/03/07/J1.png"
    assert image_key("images/", "J1", created, "jpeg") == "images/2026/03/07/J1.jpg"
    assert image_key("", "J1", created, "webp") == "2026/03/07/J1.webp"
    assert image_key("a/b", "J1", created, "png") == "a/b/2026/03/07/J1.png"


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_upload_sets_content_type_and_metadata(s3: object, fmt: str) -> None:
    data = image_bytes(fmt, (40, 20))
    info = inspect_image(data, fmt)
    upload_image(
        s3,
        BUCKET,
        "k",
        data,
        info=info,
        facts=facts(model_id="stability.stable-image-core-v1:0"),
        seed=77,
        attempts=1,
    )
    head = s3.head_object(Bucket=BUCKET, Key="k")  # type: ignore[attr-defined]
    assert head["ContentType"] == f"image/{fmt}"
    assert head["Metadata"]["job-id"] == "J1"
    assert head["Metadata"]["seed"] == "77"
    assert head["Metadata"]["model-id"] == "stability.stable-image-core-v1:0"
    # The job's facts, for matching the image back to its job after Redis lost its record;
    # the webhook's URL only as a digest (metadata travels with every presigned GET).
    assert head["Metadata"]["tenant"] == "acme"
    assert head["Metadata"]["created-ms"] == "1700000000000"
    assert head["Metadata"]["webhook-sha256"] == "cd" * 32
    body = s3.get_object(Bucket=BUCKET, Key="k")["Body"].read()  # type: ignore[attr-defined]
    assert body == data


def test_an_earlier_upload_is_found_with_its_seed_and_size(s3: object) -> None:
    data = image_bytes("png", (40, 20))
    info = inspect_image(data, "png")
    assert find_stored_image(s3, BUCKET, "k", "J1") is None  # type: ignore[arg-type]
    upload_image(
        s3,
        BUCKET,
        "k",
        data,
        info=info,
        facts=facts(),
        seed=77,
        attempts=1,
    )
    stored = find_stored_image(s3, BUCKET, "k", "J1")  # type: ignore[arg-type]
    assert stored is not None
    assert stored.seed == 77
    assert stored.info == info
    assert stored.facts == facts()
    # An object under the key that another job wrote is not ours to adopt.
    assert find_stored_image(s3, BUCKET, "k", "J2") is None  # type: ignore[arg-type]


def test_upload_failure_is_a_storage_error_after_its_attempts(s3: object) -> None:
    data = image_bytes("png")
    info = inspect_image(data, "png")
    with pytest.raises(StorageError, match="failed 2 times"):
        upload_image(
            s3,
            "no-such-bucket",
            "k",
            data,
            info=info,
            facts=facts(),
            seed=1,
            attempts=2,
        )
