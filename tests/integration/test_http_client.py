"""``imagegen_client`` against the real stack (uvicorn, a worker, the Bedrock emulator, S3 over
HTTP): a backend holding nothing but an API key runs jobs, follows them, downloads their images,
uploads inputs, runs batches and chains; sync and async alike."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from devstack.stack import Stack
from imagegen_client import (
    AsyncImagegenClient,
    ConflictError,
    ImagegenClient,
    JobFailedError,
    JobStatus,
)
from producer.operator import OperatorClient
from tests.support import image_bytes

pytestmark = pytest.mark.integration

CUTOUT = "us.stability.stable-image-remove-background-v1:0"


@pytest.fixture(scope="module")
def api_url(stack: Stack) -> str:
    return stack.urls.get("api") or stack.start_api()


@pytest.fixture(scope="module")
def api_key(stack: Stack) -> str:
    with OperatorClient(stack.settings()) as operator:
        _, key = operator.api_keys.create("http-client")
    return key


@pytest.fixture
def client(api_url: str, api_key: str) -> Iterator[ImagegenClient]:
    with ImagegenClient(api_url, api_key, timeout_s=10) as opened:
        yield opened


def test_a_backend_with_only_a_key_runs_a_job_and_downloads_its_image(
    client: ImagegenClient, tmp_path: Path
) -> None:
    job = client.run("a lighthouse", aspect_ratio="16:9", metadata={"order": 1}, timeout_s=60)
    assert (job.status, job.width, job.height) == (JobStatus.SUCCEEDED, 1344, 768)
    assert job.metadata == {"order": 1}
    image = client.download(job, tmp_path / "lighthouse.png")
    assert hashlib.sha256(image).hexdigest() == job.sha256
    assert (tmp_path / "lighthouse.png").read_bytes() == image
    # The record's own link needs no key.
    assert job.image_url is not None
    assert httpx.get(job.image_url, timeout=10).content == image


def test_stream_follows_a_job_until_it_succeeds(client: ImagegenClient) -> None:
    job = client.submit("a harbour at night")
    statuses = [seen.status for seen in client.stream(job.job_id)]
    assert statuses[-1] is JobStatus.SUCCEEDED
    assert statuses == sorted(set(statuses), key=statuses.index)
    assert client.wait(job.job_id, timeout_s=5).succeeded


def test_a_job_without_an_image_raises_with_the_job(client: ImagegenClient) -> None:
    with pytest.raises(JobFailedError) as found:
        client.run("a forbidden picture", timeout_s=60)
    assert found.value.job.status is JobStatus.FILTERED
    with pytest.raises(ConflictError, match="No image"):
        client.download(found.value.job)


def test_uploads_batches_and_chains(client: ImagegenClient) -> None:
    upload = client.upload(image_bytes("png", (256, 256)))
    assert upload.image.startswith("s3://")
    cut_out = client.run({"image": upload.image}, model_id=CUTOUT, timeout_s=60)
    assert (cut_out.width, cut_out.height) == (256, 256)
    presigned = client.create_presigned_upload("png")
    assert presigned.upload_url is not None
    put = httpx.put(
        presigned.upload_url,
        content=image_bytes("png", (320, 192)),
        headers={"Content-Type": presigned.upload_content_type or ""},
        timeout=10,
    )
    assert put.status_code == 200, put.text
    cut_out = client.run({"image": presigned.image}, model_id=CUTOUT, timeout_s=60)
    assert (cut_out.width, cut_out.height) == (320, 192)

    batch = client.submit_batch([{"request": {"prompt": f"picture {i}"}} for i in range(4)])
    assert client.wait_batch(batch.batch_id, timeout_s=60).counts == {"succeeded": 4}
    listed = {job.job_id for job in client.iter_jobs(batch_id=batch.batch_id, page_size=3)}
    assert listed == set(batch.job_ids)

    chain = client.submit_chain(
        [
            {"request": {"prompt": "a red apple"}},
            {"model_id": CUTOUT, "request": {"image": {"step": 0}}},
        ]
    )
    done = client.wait_chain(chain.chain_id, timeout_s=60)
    assert [step.status for step in done.steps] == [JobStatus.SUCCEEDED] * 2
    final = client.download_chain(chain.chain_id)
    assert final == client.download(done.steps[-1].job_id)


def test_the_async_client_against_the_stack(api_url: str, api_key: str) -> None:
    async def main() -> None:
        async with AsyncImagegenClient(api_url, api_key, timeout_s=10) as client:
            jobs = await asyncio.gather(
                *(client.run(f"an async picture {i}", timeout_s=60) for i in range(3))
            )
            images = await asyncio.gather(*(client.download(job) for job in jobs))
            assert [hashlib.sha256(i).hexdigest() for i in images] == [j.sha256 for j in jobs]
            submitted = await client.submit("a streamed picture")
            seen = [job.status async for job in client.stream(submitted.job_id)]
            assert seen[-1] is JobStatus.SUCCEEDED
            with pytest.raises(ConflictError):
                await client.cancel(submitted.job_id)
            with pytest.raises(JobFailedError):
                await client.run("another forbidden picture", timeout_s=60)
            upload = await client.upload(image_bytes("webp", (128, 128)))
            assert upload.format == "webp"
            batch = await client.submit_batch([{"request": {"prompt": "a"}}] * 2)
            assert (await client.wait_batch(batch.batch_id, timeout_s=60)).counts == {
                "succeeded": 2
            }
            assert len((await client.list(batch_id=batch.batch_id)).jobs) == 2
            chain = await client.submit_chain(
                [
                    {"request": {"prompt": "an async apple"}},
                    {"model_id": CUTOUT, "request": {"image": {"step": 0}}},
                ]
            )
            done = await client.wait_chain(chain.chain_id, timeout_s=60)
            assert (await client.get_chain(chain.chain_id)).status == done.status == "succeeded"
            final = await client.download_chain(chain.chain_id)
            assert hashlib.sha256(final).hexdigest() == (await client.get(chain.job_ids[-1])).sha256

    asyncio.run(main())
