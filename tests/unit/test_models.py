"""Every model in the registry: its request is validated with named errors, its body is what
Bedrock takes (the emulator, which keeps its own table, answers it), its price is what a job
reserves, and docs/models.md and the IAM policy list it."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from emulator.services import SERVICES
from imagegen.contract import JobSpec
from imagegen.errors import InvalidRequestError
from imagegen.models import MODELS, ImageModel
from imagegen.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SOURCE = "s3://inputs-bucket/photos/cat.png"

# One valid request per model, naming its input images by reference.
SAMPLES: dict[str, dict[str, Any]] = {
    "generate": {"prompt": "a red apple", "seed": 7},
    "stability.sd3-5-large-v1:0": {
        "prompt": "a red apple",
        "mode": "image-to-image",
        "image": SOURCE,
        "strength": 0.6,
    },
    "stable-creative-upscale-v1:0": {"image": SOURCE, "prompt": "crisp", "creativity": 0.3},
    "stable-conservative-upscale-v1:0": {"image": SOURCE, "prompt": "crisp"},
    "stable-fast-upscale-v1:0": {"image": SOURCE},
    "stable-image-inpaint-v1:0": {"image": SOURCE, "mask": SOURCE, "prompt": "a red hat"},
    "stable-image-erase-object-v1:0": {"image": SOURCE, "mask": SOURCE, "grow_mask": 3},
    "stable-outpaint-v1:0": {"image": SOURCE, "left": 64, "down": 32},
    "stable-image-remove-background-v1:0": {"image": SOURCE},
    "stable-image-search-replace-v1:0": {
        "image": SOURCE,
        "prompt": "a dog",
        "search_prompt": "cat",
    },
    "stable-image-search-recolor-v1:0": {
        "image": SOURCE,
        "prompt": "green",
        "select_prompt": "cat",
    },
    "stable-image-control-sketch-v1:0": {"image": SOURCE, "prompt": "a castle"},
    "stable-image-control-structure-v1:0": {"image": SOURCE, "prompt": "a castle"},
    "stable-image-style-guide-v1:0": {"image": SOURCE, "prompt": "a castle", "fidelity": 0.5},
    "stable-style-transfer-v1:0": {"init_image": SOURCE, "style_image": SOURCE},
}
# One field each model refuses, and the value it refuses.
BAD_FIELD: dict[str, tuple[str, Any]] = {
    "generate": ("aspect_ratio", "7:5"),
    "stability.sd3-5-large-v1:0": ("strength", 1.5),
    "stable-creative-upscale-v1:0": ("creativity", 0.9),
    "stable-conservative-upscale-v1:0": ("creativity", 0.1),
    "stable-fast-upscale-v1:0": ("image", "https://example.com/cat.png"),
    "stable-image-inpaint-v1:0": ("grow_mask", 50),
    "stable-image-erase-object-v1:0": ("mask", {"job": "no/such"}),
    "stable-outpaint-v1:0": ("left", 2001),
    "stable-image-remove-background-v1:0": ("output_format", "jpeg"),
    "stable-image-search-replace-v1:0": ("search_prompt", ""),
    "stable-image-search-recolor-v1:0": ("style_preset", "watercolour"),
    "stable-image-control-sketch-v1:0": ("control_strength", -0.1),
    "stable-image-control-structure-v1:0": ("seed", 2**32),
    "stable-image-style-guide-v1:0": ("fidelity", "high"),
    "stable-style-transfer-v1:0": ("change_strength", 0.05),
}


def sample_key(model: ImageModel) -> str:
    if model.kind == "generate" and model.request_type.__name__ == "GenerationRequest":
        return "generate"
    return model.model_id.removeprefix("us.stability.")


def picture(size: tuple[int, int] = (256, 192), mode: str = "RGB") -> str:
    image = Image.new(mode, size, (250, 250, 250) if mode == "RGB" else (250, 250, 250, 255))
    image.paste((200, 30, 30), (96, 64, 160, 128))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def mask(size: tuple[int, int] = (256, 192)) -> str:
    image = Image.new("L", size, 0)
    image.paste(255, (0, 0, 64, 64))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def body_of(model: ImageModel) -> dict[str, Any]:
    spec = JobSpec.parse({"model_id": model.model_id, "request": SAMPLES[sample_key(model)]})
    images = {name: mask() if name == "mask" else picture() for name in spec.request.image_inputs()}
    return spec.request.to_bedrock_body(images)


def decoded(payload: dict[str, Any]) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(payload["images"][0])))


@pytest.fixture
def bedrock(emulator_url: str) -> Any:
    return boto3.client("bedrock-runtime", endpoint_url=emulator_url, region_name="us-west-2")


def invoke(bedrock: Any, model_id: str, body: dict[str, Any]) -> dict[str, Any]:
    response = bedrock.invoke_model(modelId=model_id, body=json.dumps(body))
    return json.loads(response["body"].read())  # type: ignore[no-any-return]


def test_the_registry_has_every_stability_image_model() -> None:
    assert len(MODELS) == 18
    services = [m for m in MODELS.values() if m.access == "inference-profile"]
    assert len(services) == 13
    assert all(m.model_id.startswith("us.stability.") for m in services)
    assert {sample_key(m) for m in MODELS.values()} == set(SAMPLES) == set(BAD_FIELD)


@pytest.mark.parametrize("model", MODELS.values(), ids=lambda m: m.model_id)
def test_each_model_refuses_a_bad_field_by_name(model: ImageModel) -> None:
    key = sample_key(model)
    field, value = BAD_FIELD[key]
    with pytest.raises(InvalidRequestError) as caught:
        JobSpec.parse({"model_id": model.model_id, "request": {**SAMPLES[key], field: value}})
    fields = [error.field for error in caught.value.errors]
    assert fields in (
        [f"request.{field}"],
        ["request"],  # a rule across fields (output_format for the model) names the request
    ), fields


@pytest.mark.parametrize("model", MODELS.values(), ids=lambda m: m.model_id)
def test_each_model_has_its_price_in_the_settings(model: ImageModel) -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert model.model_id in settings.allowed_model_ids
    assert settings.price_usd(model.model_id) == model.price_usd > 0


@pytest.mark.parametrize("model", MODELS.values(), ids=lambda m: m.model_id)
def test_the_emulator_answers_each_models_body(bedrock: Any, model: ImageModel) -> None:
    payload = invoke(bedrock, model.model_id, body_of(model))
    assert payload["finish_reasons"] == [None]
    image = decoded(payload)
    assert image.format == "PNG"
    assert image.width * image.height >= 256 * 192


def test_a_request_without_a_model_field_is_refused_naming_it() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        JobSpec.parse(
            {"model_id": "us.stability.stable-fast-upscale-v1:0", "request": {"prompt": "x"}}
        )
    assert {e.field for e in caught.value.errors} == {"request.image", "request.prompt"}


def test_the_emulators_table_matches_the_registry() -> None:
    for model in MODELS.values():
        fields = set(model.request_type.model_fields)
        if model.request_type.__name__ == "GenerationRequest":
            continue  # Core and Ultra: emulator.validation
        spec = SERVICES[model.base_model_id]
        assert fields == set(spec.fields), model.model_id
        required = {n for n, f in model.request_type.model_fields.items() if f.is_required()}
        assert required == set(spec.required), model.model_id
        assert spec.profile_only == (model.access == "inference-profile")


def test_upscales_really_upscale(bedrock: Any) -> None:
    fast = decoded(invoke(bedrock, "us.stability.stable-fast-upscale-v1:0", {"image": picture()}))
    assert fast.size == (1024, 768)
    conservative = decoded(
        invoke(
            bedrock,
            "us.stability.stable-conservative-upscale-v1:0",
            {"image": picture(), "prompt": "crisp"},
        )
    )
    assert 4_000_000 < conservative.width * conservative.height < 4_400_000
    assert abs(conservative.width / conservative.height - 256 / 192) < 0.01


def test_remove_background_returns_alpha(bedrock: Any) -> None:
    cut = decoded(
        invoke(bedrock, "us.stability.stable-image-remove-background-v1:0", {"image": picture()})
    )
    assert cut.mode == "RGBA"
    alpha = cut.getchannel("A")
    assert alpha.getpixel((0, 0)) == 0  # the background
    assert alpha.getpixel((128, 96)) == 255  # the subject


def test_inpaint_and_erase_change_only_the_masked_area(bedrock: Any) -> None:
    source = Image.open(io.BytesIO(base64.b64decode(picture()))).convert("RGB")
    for model_id, extra in (
        ("us.stability.stable-image-inpaint-v1:0", {"prompt": "green forest"}),
        ("us.stability.stable-image-erase-object-v1:0", {}),
    ):
        out = decoded(invoke(bedrock, model_id, {"image": picture(), "mask": mask(), **extra}))
        out = out.convert("RGB")
        assert out.getpixel((10, 10)) != source.getpixel((10, 10)), model_id  # masked
        assert out.getpixel((200, 150)) == source.getpixel((200, 150)), model_id  # not masked


def test_outpaint_grows_the_canvas_and_style_transfer_mixes_colours(bedrock: Any) -> None:
    grown = decoded(
        invoke(
            bedrock, "us.stability.stable-outpaint-v1:0", {"image": picture(), "left": 100, "up": 8}
        )
    )
    assert grown.size == (356, 200)
    blue = io.BytesIO()
    Image.new("RGB", (128, 128), (0, 0, 255)).save(blue, format="PNG")
    mixed = decoded(
        invoke(
            bedrock,
            "us.stability.stable-style-transfer-v1:0",
            {"init_image": picture(), "style_image": base64.b64encode(blue.getvalue()).decode()},
        )
    ).convert("RGB")
    red, _, blue = mixed.getpixel((10, 10))  # type: ignore[misc]
    assert blue > red  # white pulled towards blue
    assert blue > 100


def test_image_services_answer_only_through_their_profile(bedrock: Any) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(bedrock, "stability.stable-fast-upscale-v1:0", {"image": picture()})
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "inference profile" in caught.value.response["Error"]["Message"]


def test_the_emulator_refuses_a_bad_field_as_bedrock_does(bedrock: Any) -> None:
    with pytest.raises(ClientError) as caught:
        invoke(
            bedrock,
            "us.stability.stable-image-control-sketch-v1:0",
            {"image": picture(), "prompt": "x", "control_strength": 2},
        )
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "#/control_strength" in caught.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as too_big:
        invoke(bedrock, "us.stability.stable-fast-upscale-v1:0", {"image": picture((1600, 700))})
    assert "#/image" in too_big.value.response["Error"]["Message"]


def test_the_docs_list_every_model_with_its_price() -> None:
    page = (ROOT / "docs" / "models.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z.0-9:-]+)` \|[^|]+\|[^|]+\| \$(\d+\.\d+)", page, re.M))
    assert {model_id: float(price) for model_id, price in rows.items()} == {
        m.model_id: m.price_usd for m in MODELS.values()
    }


def test_the_iam_policy_covers_every_model_and_profile() -> None:
    policy = json.loads((ROOT / "ops" / "iam-policy.json").read_text())
    resources = [
        resource
        for statement in policy["Statement"]
        if "bedrock:InvokeModel" in statement["Action"]
        for resource in statement["Resource"]
    ]
    profiles = [arn.rsplit("/", 1)[1] for arn in resources if ":inference-profile/" in arn]
    for model in MODELS.values():
        # A profile's call runs in any of its regions: the model is allowed in each.
        for region in model.regions or ("us-west-2",):
            assert f"arn:aws:bedrock:{region}::foundation-model/{model.base_model_id}" in resources
        assert (model.model_id in profiles) == (model.access == "inference-profile")
