"""Jobs go from the client through Redis and a real worker to the emulator, S3 and the record."""

from __future__ import annotations

import io
import itertools
import time
from typing import Any

import pytest
from PIL import Image

from imagegen.contract import ASPECT_RATIOS, IMAGE_SIZES
from imagegen.records import JobRecord, JobStatus
from producer.client import Client
from tests.integration.conftest import wait_all

pytestmark = pytest.mark.integration

PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def test_twenty_jobs_across_ratios_and_formats_all_land_in_s3(client: Client, s3: Any) -> None:
    combos = list(
        itertools.islice(zip(itertools.cycle(ASPECT_RATIOS), itertools.cycle(PIL_FORMATS)), 20)
    )
    submitted = client.submit_many(
        client.spec(
            f"test picture {i}", aspect_ratio=ratio, output_format=fmt, metadata={"index": i}
        )
        for i, (ratio, fmt) in enumerate(combos)
    )
    records = wait_all(client, [job.job_id for job in submitted])

    for index, (record, (ratio, fmt)) in enumerate(zip(records, combos, strict=True)):
        assert record.status is JobStatus.SUCCEEDED, record.error_message
        assert record.seed is not None
        assert record.seed > 0
        assert (record.width, record.height) == IMAGE_SIZES[ratio]
        assert record.s3_key is not None
        assert record.s3_bucket is not None
        obj = s3.get_object(Bucket=record.s3_bucket, Key=record.s3_key)
        assert obj["ContentType"] == f"image/{fmt}"
        assert obj["Metadata"]["seed"] == str(record.seed)
        image = Image.open(io.BytesIO(obj["Body"].read()))
        assert image.format == PIL_FORMATS[fmt]
        assert image.size == IMAGE_SIZES[ratio]
        assert record.metadata == {"index": index}


def test_a_fixed_seed_gives_the_same_bytes_twice(client: Client, s3: Any) -> None:
    # Two tenants (each has its own cache), so Bedrock is called twice.
    jobs = [
        client.submit("a lighthouse at dawn", seed=42, aspect_ratio="2:3", tenant=tenant)
        for tenant in ("same-bytes-a", "same-bytes-b")
    ]
    first, second = wait_all(client, [job.job_id for job in jobs])
    assert first.seed == second.seed == 42
    assert (first.cached, second.cached) == (False, False)
    assert first.sha256 == second.sha256
    assert first.s3_key != second.s3_key

    def body(record: JobRecord) -> bytes:
        return s3.get_object(Bucket=record.s3_bucket, Key=record.s3_key)[  # type: ignore[no-any-return]
            "Body"
        ].read()

    assert body(first) == body(second)


def test_the_emulator_filter_ends_a_job_filtered(client: Client) -> None:
    job = client.submit("a forbidden picture")
    record = client.wait(job.job_id, timeout_s=30)
    assert record.status is JobStatus.FILTERED
    assert record.finish_reason == "Filter reason: prompt"
    assert record.s3_key is None


def test_wait_returns_as_soon_as_the_job_is_final(client: Client) -> None:
    job = client.submit("a quick one")
    started = time.monotonic()
    record = client.wait(job.job_id, timeout_s=30)
    assert record.status is JobStatus.SUCCEEDED
    assert time.monotonic() - started < 5
