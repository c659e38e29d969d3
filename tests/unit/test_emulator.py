"""The Bedrock emulator, driven by an unmodified boto3 client over HTTP."""

from __future__ import annotations

import base64
import io
import json
import socket
import struct
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError
from PIL import Image

from imagegen.contract import IMAGE_SIZES
from tests.support import emulator_stats

MODEL = "stability.stable-image-core-v1:0"


def bedrock(url: str, **config: Any) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-west-2",
        endpoint_url=url,
        config=Config(retries={"total_max_attempts": 1}, **config),
    )


def invoke(url: str, body: dict[str, Any], model: str = MODEL, **config: Any) -> dict[str, Any]:
    response = bedrock(url, **config).invoke_model(modelId=model, body=json.dumps(body))
    return json.loads(response["body"].read())  # type: ignore[no-any-return]


def error_of(url: str, body: dict[str, Any], model: str = MODEL, **config: Any) -> ClientError:
    with pytest.raises(ClientError) as caught:
        invoke(url, body, model, **config)
    return caught.value


def decoded(payload: dict[str, Any]) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(payload["images"][0])))


def test_the_model_documentations_python_example_works_unchanged(emulator_url: str) -> None:
    # From the model documentation, with only endpoint_url added.
    bedrock = boto3.client("bedrock-runtime", region_name="us-west-2", endpoint_url=emulator_url)

    def generate_image(prompt: str, aspect_ratio: str = "1:1", seed: int | None = None) -> Any:
        request_body: dict[str, Any] = {
            "prompt": prompt,
            "aspect_ratio": aspect_ratio,
            "mode": "text-to-image",
            "output_format": "png",
        }
        if seed:
            request_body["seed"] = seed
        response = bedrock.invoke_model(
            modelId="stability.stable-image-core-v1:0", body=json.dumps(request_body)
        )
        output_body = json.loads(response["body"].read().decode("utf-8"))
        base64_image = output_body["images"][0]
        image_data = base64.b64decode(base64_image)
        image = Image.open(io.BytesIO(image_data))
        return image, output_body["seeds"][0]

    prompt = "A modern minimalist workspace with natural lighting and plants"
    image, seed_used = generate_image(prompt, aspect_ratio="16:9")
    assert image.size == (1344, 768)
    assert isinstance(seed_used, int)
    assert seed_used > 0


@pytest.mark.parametrize(("ratio", "size"), sorted(IMAGE_SIZES.items()))
def test_each_aspect_ratio_has_its_documented_size(
    emulator_url: str, ratio: str, size: tuple[int, int]
) -> None:
    assert decoded(invoke(emulator_url, {"prompt": "a", "aspect_ratio": ratio})).size == size


@pytest.mark.parametrize(("fmt", "pil"), [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_each_output_format(emulator_url: str, fmt: str, pil: str) -> None:
    assert decoded(invoke(emulator_url, {"prompt": "a", "output_format": fmt})).format == pil


def test_a_fixed_seed_gives_the_same_picture(emulator_url: str) -> None:
    body = {"prompt": "a lighthouse", "seed": 42}
    first, second = invoke(emulator_url, body), invoke(emulator_url, body)
    assert first == second
    assert first["seeds"] == [42]
    other = invoke(emulator_url, {**body, "seed": 43})
    assert other["images"] != first["images"]


def test_seed_zero_or_absent_picks_and_reports_a_random_seed(emulator_url: str) -> None:
    seeds = {invoke(emulator_url, {"prompt": "a", "seed": 0})["seeds"][0] for _ in range(3)}
    seeds |= {invoke(emulator_url, {"prompt": "a"})["seeds"][0] for _ in range(3)}
    assert len(seeds) == 6
    assert all(0 < s <= 4_294_967_295 for s in seeds)


def test_sdxl_text_prompts_are_accepted(emulator_url: str) -> None:
    payload = invoke(
        emulator_url,
        {"text_prompts": [{"text": "a castle", "weight": 1}, {"text": "fog", "weight": -1}]},
    )
    assert payload["finish_reasons"] == [None]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "prompt"),
        ({"prompt": ""}, "#/prompt"),
        ({"prompt": "x" * 10_001}, "#/prompt"),
        ({"prompt": "a", "negative_prompt": "x" * 10_001}, "#/negative_prompt"),
        ({"prompt": "a", "aspect_ratio": "4:3"}, "#/aspect_ratio"),
        ({"prompt": "a", "output_format": "gif"}, "#/output_format"),
        ({"prompt": "a", "seed": 4_294_967_296}, "#/seed"),
        ({"prompt": "a", "seed": "7"}, "#/seed"),
        ({"prompt": "a", "mode": "image-to-image"}, "#/mode"),
        ({"prompt": "a", "style": "anime"}, "style"),
        ({"text_prompts": [{"text": "a", "weight": "x"}]}, "#/text_prompts/0/weight"),
    ],
)
def test_bad_bodies_are_validation_exceptions_naming_the_field(
    emulator_url: str, body: dict[str, Any], field: str
) -> None:
    error = error_of(emulator_url, body)
    assert error.response["Error"]["Code"] == "ValidationException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert field in error.response["Error"]["Message"]


def test_unknown_model_is_resource_not_found(emulator_url: str) -> None:
    error = error_of(emulator_url, {"prompt": "a"}, model="amazon.titan-image-generator-v2:0")
    assert error.response["Error"]["Code"] == "ResourceNotFoundException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_cross_region_profile_ids_are_known(emulator_url: str) -> None:
    assert invoke(emulator_url, {"prompt": "a"}, model="us.stability.stable-image-core-v1:1")


def test_an_unsigned_request_is_access_denied(emulator_url: str) -> None:
    error = error_of(emulator_url, {"prompt": "a"}, signature_version=UNSIGNED)
    assert error.response["Error"]["Code"] == "AccessDeniedException"
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.parametrize(
    ("kind", "code", "status"),
    [
        ("internal", "InternalServerException", 500),
        ("unavailable", "ServiceUnavailableException", 503),
        ("model_timeout", "ModelTimeoutException", 408),
        ("not_ready", "ModelNotReadyException", 429),
    ],
)
def test_injected_faults_arrive_as_their_aws_error(
    start_emulator: Any, kind: str, code: str, status: int
) -> None:
    url = start_emulator(fault_rates={kind: 1.0})
    error = error_of(url, {"prompt": "a"})
    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("inference_error", "Inference error"), ("output_filter", "Filter reason: output image")],
)
def test_injected_finish_reasons(start_emulator: Any, kind: str, reason: str) -> None:
    url = start_emulator(fault_rates={kind: 1.0})
    payload = invoke(url, {"prompt": "a", "seed": 3})
    assert payload["finish_reasons"] == [reason]
    assert payload["seeds"] == [3]
    assert payload["images"] == []


def test_filter_words_give_a_prompt_filter(start_emulator: Any) -> None:
    url = start_emulator(filter_words=("volcano",))
    assert invoke(url, {"prompt": "A Volcano erupting"})["finish_reasons"] == [
        "Filter reason: prompt"
    ]
    assert invoke(url, {"prompt": "A calm lake"})["finish_reasons"] == [None]


def test_fault_rates_hold_and_repeat_with_the_same_seed(start_emulator: Any) -> None:
    def codes(url: str) -> list[str]:
        found = []
        for _ in range(200):
            try:
                invoke(url, {"prompt": "a", "aspect_ratio": "21:9"})
                found.append("ok")
            except ClientError as e:
                found.append(e.response["Error"]["Code"])
        return found

    first = codes(start_emulator(fault_rates={"internal": 0.3}, fault_seed=11))
    second = codes(start_emulator(fault_rates={"internal": 0.3}, fault_seed=11))
    assert first == second
    assert 40 <= first.count("InternalServerException") <= 80  # 60 expected


def test_the_quota_throttles_beyond_its_rate(start_emulator: Any) -> None:
    url = start_emulator(quota_rpm=60, quota_burst=5)
    client = bedrock(url)  # made once: the ten calls take well under a second
    outcomes = []
    for _ in range(10):
        try:
            client.invoke_model(modelId=MODEL, body=json.dumps({"prompt": "a"}))
            outcomes.append("ok")
        except ClientError as e:
            outcomes.append(e.response["Error"]["Code"])
    assert outcomes.count("ok") in {5, 6}  # the burst, plus at most one refilled token
    assert outcomes.count("ThrottlingException") == 10 - outcomes.count("ok")
    stats = emulator_stats(url)
    assert stats["throttled"] == outcomes.count("ThrottlingException")


def test_the_concurrency_cap_throttles_calls_beyond_it(start_emulator: Any) -> None:
    url = start_emulator(max_concurrency=2, latency_ms=2000)
    # Clients made first, and the four calls sent together: all four arrive while the first
    # two are still being answered.
    clients = [bedrock(url) for _ in range(4)]
    together = threading.Barrier(4)

    def call(client: Any) -> str:
        together.wait()
        try:
            client.invoke_model(modelId=MODEL, body=json.dumps({"prompt": "a"}))
        except ClientError as e:
            return str(e.response["Error"]["Code"])
        return "ok"

    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(call, clients))
    assert sorted(outcomes) == ["ThrottlingException"] * 2 + ["ok"] * 2


def test_stats_count_outcomes_and_reset_clears_them(start_emulator: Any) -> None:
    url = start_emulator()
    invoke(url, {"prompt": "a"})
    error_of(url, {"prompt": ""})
    stats = emulator_stats(url)
    assert stats["requests"] == 2
    assert stats["outcomes"] == {"ok": 1, "ValidationException": 1}
    request = urllib.request.Request(url + "/_emulator/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=5).close()
    assert emulator_stats(url)["requests"] == 0


def test_a_caller_that_hangs_up_mid_request_is_no_traceback(
    start_emulator: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    # A worker whose read timed out, or that was killed, resets its connection mid-request.
    url = start_emulator()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(
            b"POST /model/stability.stable-image-core-v1:1/invoke HTTP/1.1\r\n"
            b'Host: x\r\nContent-Length: 100000\r\n\r\n{"prompt": '
        )
        time.sleep(0.2)  # the handler is reading the body
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.5)
    invoke(url, {"prompt": "still serving"})
    assert "Traceback" not in capfd.readouterr().err
