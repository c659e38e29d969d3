"""Decompression bombs: a header claiming 100,000 x 100,000 pixels is refused from the claim,
before any decoder reads it, as a 422 naming the field (uploads, the console's form, a job
naming an S3 object) and as a permanent InputImageInvalid in the worker; no header, however
mangled, gets anything but that refusal."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator

import boto3
import fakeredis
import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from imagegen.errors import InputImageError
from imagegen.image_header import claimed_size
from imagegen.inputs import MAX_INPUT_PIXELS, MAX_INPUT_SIDE, UnusableImageError, image_facts
from imagegen.models import MODELS
from imagegen.requests import FastUpscaleRequest
from imagegen.settings import Settings
from imagegen.store.job_reads import JobReads
from producer.api import create_app
from producer.client import Client
from tests.bombs import jpeg_bomb, picture, png_bomb, webp_bomb
from worker.inputs import fetch_inputs

UPSCALE = "us.stability.stable-fast-upscale-v1:0"
BOMBS: dict[str, Callable[[], bytes]] = {
    "png": png_bomb,
    "jpeg": jpeg_bomb,
    "webp": webp_bomb,
}
REFUSED = re.compile(r"is [\d,]+x[\d,]+ \([\d,]+ pixels\); no model takes more")


@pytest.mark.parametrize(
    ("image_format", "options"),
    [
        ("PNG", {}),
        ("JPEG", {}),
        ("JPEG", {"progressive": True}),
        ("WEBP", {}),
        ("WEBP", {"lossless": True}),
    ],
)
def test_the_claimed_size_is_read_as_pillow_reads_it(
    image_format: str, options: dict[str, object]
) -> None:
    assert claimed_size(picture(image_format, (321, 123), **options)) == (321, 123)


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_bomb_is_refused_from_its_header(kind: str) -> None:
    with pytest.raises(UnusableImageError, match=REFUSED):
        image_facts(BOMBS[kind]())


def test_a_claim_above_every_model_but_below_pillows_own_guard_is_refused_too() -> None:
    # 12,000 x 12,000 is under Pillow's error threshold (a warning at most): our bound holds.
    with pytest.raises(UnusableImageError, match="12,000x12,000"):
        image_facts(png_bomb(12_000, 12_000))


def test_every_model_takes_inputs_within_the_header_bound() -> None:
    for model in MODELS.values():
        if model.input_limits is not None:
            assert model.input_limits.max_pixels <= MAX_INPUT_PIXELS, model.model_id
            assert model.input_limits.max_side <= MAX_INPUT_SIDE, model.model_id


def test_no_mangled_header_gets_anything_but_a_refusal() -> None:
    rng = random.Random(23)
    seeds = [picture("PNG"), picture("JPEG"), picture("WEBP"), picture("WEBP", lossless=True)]
    seeds += [bomb() for bomb in BOMBS.values()]
    for _ in range(3000):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(min(len(data), 64))
            data[at] = rng.randrange(256)
        cut = rng.choice([len(data), rng.randrange(1, len(data))])
        try:
            facts = image_facts(bytes(data[:cut]))
        except UnusableImageError:
            continue
        assert facts.width * facts.height <= MAX_INPUT_PIXELS


@pytest.fixture
def api(settings: Settings) -> Iterator[tuple[TestClient, Client]]:
    redis = fakeredis.FakeRedis(decode_responses=True)
    with mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=settings.s3_bucket)
        with TestClient(create_app(settings, redis_client=redis)) as http:
            yield http, Client(settings, redis_client=redis)


def bearer(client: Client, tenant: str) -> dict[str, str]:
    _, key = client.api_keys.create(tenant)
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_an_uploaded_bomb_is_a_422_naming_the_body(
    api: tuple[TestClient, Client], kind: str
) -> None:
    http, client = api
    answer = http.post(
        "/v1/uploads",
        content=BOMBS[kind](),
        headers={**bearer(client, "acme"), "Content-Type": f"image/{kind}"},
    )
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["field"] == "body"
    assert REFUSED.search(error["message"])


def test_a_job_naming_a_bomb_in_s3_is_a_422_naming_its_field(
    api: tuple[TestClient, Client], settings: Settings
) -> None:
    http, client = api
    key = "uploads/acme/bomb.png"
    client.s3().put_object(Bucket=settings.s3_bucket, Key=key, Body=png_bomb())
    job = {"model_id": UPSCALE, "request": {"image": f"s3://{settings.s3_bucket}/{key}"}}
    answer = http.post("/v1/jobs", json=job, headers=bearer(client, "acme"))
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["field"] == "request.image"
    assert REFUSED.search(error["message"])


def test_a_bomb_swapped_in_after_the_check_is_a_permanent_input_error(
    settings: Settings,
) -> None:
    redis = fakeredis.FakeRedis(decode_responses=True)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=settings.s3_bucket)
        s3.put_object(Bucket=settings.s3_bucket, Key="uploads/acme/swap.png", Body=png_bomb())
        request = FastUpscaleRequest(image=f"s3://{settings.s3_bucket}/uploads/acme/swap.png")
        with pytest.raises(InputImageError, match=REFUSED) as caught:
            fetch_inputs(s3, JobReads(redis), UPSCALE, request, tenant="acme", max_bytes=10_000_000)
    assert caught.value.code == "InputImageInvalid"
