"""The job contract refuses bad requests naming the field, and accepts both prompt forms."""

from __future__ import annotations

from typing import Any

import pytest

from imagegen.contract import ASPECT_RATIOS, MAX_SEED, GenerationRequest, JobSpec
from imagegen.errors import InvalidRequestError


def refused(data: dict[str, Any], **context: Any) -> dict[str, str]:
    """The field -> message map of the error ``data`` raises."""
    with pytest.raises(InvalidRequestError) as caught:
        JobSpec.parse(data, **context)
    return {error.field: error.message for error in caught.value.errors}


def request(**fields: Any) -> dict[str, Any]:
    return {"request": {"prompt": "a lighthouse", **fields}}


def test_defaults_follow_the_model_documentation() -> None:
    spec = JobSpec.parse({"request": {"prompt": "a lighthouse"}})
    assert spec.request.aspect_ratio == "1:1"
    assert spec.request.output_format == "png"
    assert spec.request.seed == 0
    assert spec.request.mode == "text-to-image"
    assert spec.priority == "interactive"


@pytest.mark.parametrize("prompt", ["", "x" * 10_001])
def test_prompt_length_is_1_to_10000(prompt: str) -> None:
    assert "request.prompt" in refused({"request": {"prompt": prompt}})


def test_prompt_of_exactly_10000_characters_is_accepted() -> None:
    assert len(JobSpec.parse({"request": {"prompt": "x" * 10_000}}).request.prompt) == 10_000


def test_negative_prompt_at_most_10000() -> None:
    assert "request.negative_prompt" in refused(request(negative_prompt="x" * 10_001))
    JobSpec.parse(request(negative_prompt="x" * 10_000))


@pytest.mark.parametrize("ratio", ASPECT_RATIOS)
def test_each_documented_aspect_ratio_is_accepted(ratio: str) -> None:
    assert JobSpec.parse(request(aspect_ratio=ratio)).request.aspect_ratio == ratio


@pytest.mark.parametrize("ratio", ["4:3", "1:2", "", "16x9", 1])
def test_other_aspect_ratios_are_refused(ratio: Any) -> None:
    assert "request.aspect_ratio" in refused(request(aspect_ratio=ratio))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_formats(fmt: str) -> None:
    assert JobSpec.parse(request(output_format=fmt)).request.output_format == fmt


@pytest.mark.parametrize("fmt", ["jpg", "gif", "PNG", ""])
def test_other_output_formats_are_refused(fmt: str) -> None:
    assert "request.output_format" in refused(request(output_format=fmt))


@pytest.mark.parametrize("seed", [0, 1, MAX_SEED])
def test_seed_range(seed: int) -> None:
    assert JobSpec.parse(request(seed=seed)).request.seed == seed


def test_a_whole_number_written_as_a_float_is_a_seed() -> None:
    assert JobSpec.parse(request(seed=42.0)).request.seed == 42


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, "5", 1.5, True])
def test_seed_out_of_range_or_not_an_integer_is_refused(seed: Any) -> None:
    assert "request.seed" in refused(request(seed=seed))


def test_mode_is_text_to_image_only() -> None:
    assert "request.mode" in refused(request(mode="image-to-image"))


def test_unknown_fields_are_refused_by_name() -> None:
    errors = refused(request(aspect_ration="16:9"))
    assert "request.aspect_ration" in errors
    assert "priorityy" in refused({**request(), "priorityy": "batch"})


def test_every_bad_field_is_named_at_once() -> None:
    errors = refused(
        {
            "request": {"prompt": "", "aspect_ratio": "4:3", "seed": -1, "output_format": "gif"},
            "job_id": "../../etc",
            "priority": "urgent",
        }
    )
    assert set(errors) == {
        "request.prompt",
        "request.aspect_ratio",
        "request.seed",
        "request.output_format",
        "job_id",
        "priority",
    }


def test_sdxl_text_prompts_are_normalised() -> None:
    spec = JobSpec.parse(
        {
            "request": {
                "text_prompts": [
                    {"text": "a castle", "weight": 1.0},
                    {"text": "at dusk", "weight": 0.5},
                    {"text": "blurry", "weight": -1.0},
                    {"text": "text", "weight": -0.5},
                ]
            }
        }
    )
    assert spec.request.prompt == "a castle at dusk"
    assert spec.request.negative_prompt == "blurry, text"
    assert "text_prompts" not in spec.request.to_bedrock_body()


def test_text_prompt_weight_defaults_to_positive() -> None:
    spec = JobSpec.parse({"request": {"text_prompts": [{"text": "a castle"}]}})
    assert spec.request.prompt == "a castle"
    assert spec.request.negative_prompt is None


@pytest.mark.parametrize(
    ("text_prompts", "expected"),
    [
        ([], "non-empty list"),
        ("a castle", "non-empty list"),
        ([{"text": ""}], "text_prompts[0].text"),
        ([{"weight": 1}], "text_prompts[0].text"),
        ([{"text": "ok"}, {"text": "x", "weight": "heavy"}], "text_prompts[1].weight"),
        ([{"text": "blurry", "weight": -1}], "weight >= 0"),
    ],
)
def test_bad_text_prompts_are_refused(text_prompts: Any, expected: str) -> None:
    errors = refused({"request": {"text_prompts": text_prompts}})
    assert expected in errors["request"]


def test_prompt_and_text_prompts_together_are_refused() -> None:
    errors = refused({"request": {"prompt": "a", "text_prompts": [{"text": "b"}]}})
    assert "not both" in errors["request"]


def test_job_id_may_be_supplied_but_must_be_key_safe() -> None:
    assert JobSpec.parse({**request(), "job_id": "order-123_a"}).job_id == "order-123_a"
    for bad in ["", "a/b", "a b", "x" * 65, "-leading-dash"]:
        assert "job_id" in refused({**request(), "job_id": bad})


def test_metadata_is_capped_in_bytes() -> None:
    JobSpec.parse({**request(), "metadata": {"order": "x" * 100}}, metadata_max_bytes=200)
    errors = refused({**request(), "metadata": {"order": "x" * 300}}, metadata_max_bytes=200)
    assert "limit is 200" in errors["metadata"]


def test_metadata_must_be_an_object() -> None:
    assert "metadata" in refused({**request(), "metadata": ["a", "list"]})


def test_model_id_must_be_allowed() -> None:
    allowed = ("stability.stable-image-core-v1:0",)
    errors = refused({**request(), "model_id": "amazon.titan-image"}, allowed_model_ids=allowed)
    assert "model_id" in errors
    ok = JobSpec.parse({**request(), "model_id": allowed[0]}, allowed_model_ids=allowed)
    assert ok.model_id == allowed[0]


def test_bedrock_body_leaves_out_random_seed_and_empty_negative_prompt() -> None:
    body = GenerationRequest(prompt="a", aspect_ratio="16:9").to_bedrock_body()
    assert body == {"prompt": "a", "aspect_ratio": "16:9", "output_format": "png"}
    body = GenerationRequest(prompt="a", seed=7, negative_prompt="fog").to_bedrock_body()
    assert body["seed"] == 7
    assert body["negative_prompt"] == "fog"
