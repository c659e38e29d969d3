"""Reading Bedrock's answer: image, filter verdicts, inference errors, corrupt or wrong images."""

from __future__ import annotations

import pytest

from imagegen.errors import BedrockCallError, InvalidModelOutputError
from tests.support import bedrock_payload, image_bytes
from worker.bedrock import Filtered, Generated, interpret
from worker.images import inspect_image
from worker.retry import Disposition, disposition_of


def test_success_gives_the_image_and_its_seed() -> None:
    result = interpret(bedrock_payload("png", seed=99))
    assert isinstance(result, Generated)
    assert result.seed == 99
    assert result.image == image_bytes("png")


@pytest.mark.parametrize("reason", ["Filter reason: prompt", "Filter reason: output image"])
def test_filter_reasons_are_final_and_keep_the_seed(reason: str) -> None:
    payload = {"seeds": [5], "finish_reasons": [reason], "images": ["aGVsbG8="]}
    result = interpret(payload)
    assert result == Filtered(reason=reason, seed=5)


def test_inference_error_is_a_retryable_failure() -> None:
    payload = {"seeds": [5], "finish_reasons": ["Inference error"], "images": []}
    with pytest.raises(BedrockCallError) as caught:
        interpret(payload)
    assert caught.value.code == "InferenceError"
    assert disposition_of(caught.value) is Disposition.RETRY


@pytest.mark.parametrize(
    "images",
    [["not base64 at all!"], [], [""], None, [123]],
)
def test_missing_or_corrupt_base64_is_invalid_output(images: object) -> None:
    payload = {"seeds": [1], "finish_reasons": [None], "images": images}
    with pytest.raises(InvalidModelOutputError):
        interpret(payload)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_inspect_reads_the_real_size_and_checks_the_format(fmt: str) -> None:
    info = inspect_image(image_bytes(fmt, (80, 30)), fmt)
    assert (info.format, info.width, info.height) == (fmt, 80, 30)
    assert info.content_type == f"image/{fmt}"
    assert len(info.sha256) == 64


def test_an_image_in_the_wrong_format_is_refused() -> None:
    with pytest.raises(InvalidModelOutputError, match="png, but jpeg was requested"):
        inspect_image(image_bytes("png"), "jpeg")


def test_a_truncated_image_is_refused() -> None:
    data = image_bytes("png", (300, 300))
    with pytest.raises(InvalidModelOutputError, match="does not decode"):
        inspect_image(data[: len(data) // 2], "png")


def test_bytes_that_are_no_image_are_refused() -> None:
    with pytest.raises(InvalidModelOutputError, match="does not decode"):
        inspect_image(b"<html>not an image</html>", "png")
