"""Every Stability image model besides Core and Ultra: its request rules and a deterministic answer.

The emulator keeps this table itself (it imports nothing of the service), so it stays an
independent check of the bodies the service sends; a test compares it with the service's
registry. Answers are made with Pillow from the inputs, so they can be checked: upscales really
upscale, Remove Background returns PNG (or WebP) with alpha, Inpaint and Erase change only the
masked area, Outpaint grows the canvas, Style Transfer mixes the two inputs' colours.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageChops, ImageFilter, ImageOps, UnidentifiedImageError

from emulator.picture import SIZES, encode, prompt_colour, render
from emulator.validation import MAX_PROMPT_CHARS, MAX_SEED, RequestError

__all__ = ["SERVICES", "ServiceSpec", "parse_service_body", "run_service"]

_PRESETS = (
    "3d-model",
    "analog-film",
    "anime",
    "cinematic",
    "comic-book",
    "digital-art",
    "enhance",
    "fantasy-art",
    "isometric",
    "line-art",
    "low-poly",
    "modeling-compound",
    "neon-punk",
    "origami",
    "photographic",
    "pixel-art",
    "tile-texture",
)
_FORMATS = ("png", "jpeg", "webp")
_TARGET_UPSCALE_PIXELS = 4_194_304
_FAST_UPSCALE_FACTOR = 4
_BACKGROUND_DISTANCE = 48
_MASK_THRESHOLD = 127
_MAX_OUTPAINT = 2000
_MAX_GROW = 20


@dataclass(frozen=True)
class Rule:
    kind: str  # text | image | number | integer | enum
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()


TEXT = Rule("text")
IMAGE = Rule("image")
SEED = Rule("integer", 0, MAX_SEED)
UNIT = Rule("number", 0, 1)
PRESET = Rule("enum", choices=tuple(_PRESETS))
FORMAT = Rule("enum", choices=_FORMATS)
RATIO = Rule("enum", choices=tuple(SIZES))
GROW = Rule("integer", 0, _MAX_GROW)
SIDE = Rule("integer", 0, _MAX_OUTPAINT)


@dataclass(frozen=True)
class ServiceSpec:
    """One model: its fields (name -> rule), which are required, and its input pixel limits."""

    fields: dict[str, Rule]
    required: frozenset[str]
    answer: Callable[[dict[str, Any], dict[str, Image.Image], int], Image.Image]
    formats: tuple[str, ...] = _FORMATS
    min_pixels: int = 4_096
    max_pixels: int = 9_437_184
    min_side: int = 64
    max_side: int = 16_384
    profile_only: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _colour_fill(size: tuple[int, int], colour: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", size, colour)


def _prompt_rgb(body: dict[str, Any]) -> tuple[int, int, int]:
    return prompt_colour(str(body.get("prompt") or body.get("search_prompt") or ""))


def _mean_colour(image: Image.Image) -> tuple[int, int, int]:
    small = image.convert("RGB").resize((1, 1), Image.Resampling.BOX)
    r, g, b = small.getpixel((0, 0))  # type: ignore[misc]
    return int(r), int(g), int(b)


def _mask_of(images: dict[str, Image.Image], body: dict[str, Any]) -> Image.Image:
    """White where the model may change the image: the mask, else the image's transparent
    pixels; grown by ``grow_mask`` pixels."""
    image = images["image"]
    if "mask" in images:
        mask = images["mask"].convert("L").resize(image.size)
    elif image.mode in {"RGBA", "LA"}:
        mask = ImageOps.invert(image.getchannel("A"))
    else:  # parse_service_body made sure there is one
        mask = Image.new("L", image.size, 0)
    mask = mask.point(lambda v: 255 if v > _MASK_THRESHOLD else 0)
    grow = int(body.get("grow_mask", 0) or 0)
    if grow:
        mask = mask.filter(ImageFilter.MaxFilter(2 * grow + 1))
    return mask


def _picture(body: dict[str, Any], seed: int, ratio: str = "1:1") -> Image.Image:
    """The text-to-image picture of the body's prompt, as an RGB image."""
    data = render(str(body.get("prompt") or ""), "", seed, ratio, "png")
    return Image.open(io.BytesIO(data)).convert("RGB")


def _sd35(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    if body.get("mode", "text-to-image") == "text-to-image":
        return _picture(body, seed, body.get("aspect_ratio", "1:1"))
    source = images["image"].convert("RGB")
    width, height = (max(64, round(side / 64) * 64) for side in source.size)
    picture = _picture(body, seed).resize((width, height))
    return Image.blend(source.resize((width, height)), picture, float(body["strength"]))


def _upscale_to_4mp(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    source = images["image"].convert("RGB")
    scale = math.sqrt(_TARGET_UPSCALE_PIXELS / (source.width * source.height))
    size = (round(source.width * scale), round(source.height * scale))
    return source.resize(size, Image.Resampling.LANCZOS)


def _fast_upscale(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    source = images["image"]
    source = source.convert("RGBA" if "A" in source.getbands() else "RGB")
    size = (source.width * _FAST_UPSCALE_FACTOR, source.height * _FAST_UPSCALE_FACTOR)
    return source.resize(size, Image.Resampling.BICUBIC)


def _inpaint(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    source = images["image"].convert("RGB")
    return Image.composite(
        _colour_fill(source.size, _prompt_rgb(body)), source, _mask_of(images, body)
    )


def _erase(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    source = images["image"].convert("RGB")
    mask = _mask_of(images, body)
    kept = Image.composite(_colour_fill(source.size, (0, 0, 0)), source, mask)
    return Image.composite(_colour_fill(source.size, _mean_colour(kept)), source, mask)


def _outpaint(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    source = images["image"].convert("RGB")
    left, right = int(body.get("left", 0)), int(body.get("right", 0))
    up, down = int(body.get("up", 0)), int(body.get("down", 0))
    canvas = source.resize((source.width + left + right, source.height + up + down))
    canvas = canvas.filter(ImageFilter.BoxBlur(8))
    canvas.paste(source, (left, up))
    return canvas


def _remove_background(
    body: dict[str, Any], images: dict[str, Image.Image], seed: int
) -> Image.Image:
    source = images["image"].convert("RGB")
    corner = source.getpixel((0, 0))
    difference = ImageChops.difference(source, _colour_fill(source.size, corner)).convert("L")  # type: ignore[arg-type]
    alpha = difference.point(lambda v: 255 if v > _BACKGROUND_DISTANCE else 0)
    cut = source.convert("RGBA")
    cut.putalpha(alpha)
    return cut


def _centre_mask(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    width, height = size
    mask.paste(255, (width // 3, height // 3, 2 * width // 3, 2 * height // 3))
    return mask


def _search(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    source = images["image"].convert("RGB")
    tint = Image.blend(source, _colour_fill(source.size, _prompt_rgb(body)), 0.7)
    return Image.composite(tint, source, _centre_mask(source.size))


def _control(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    source = images["image"].convert("RGB")
    picture = _picture(body, seed).resize(source.size)
    edges = ImageOps.invert(source.convert("L").filter(ImageFilter.FIND_EDGES)).convert("RGB")
    return ImageChops.multiply(picture, edges)


def _style_guide(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    ratio = body.get("aspect_ratio", "1:1")
    picture = _picture(body, seed, ratio)
    style = _colour_fill(picture.size, _mean_colour(images["image"]))
    return Image.blend(picture, style, 0.4 * float(body.get("fidelity", 0.5)) + 0.1)


def _style_transfer(body: dict[str, Any], images: dict[str, Image.Image], seed: int) -> Image.Image:
    init = images["init_image"].convert("RGB")
    style = _colour_fill(init.size, _mean_colour(images["style_image"]))
    return Image.blend(init, style, float(body.get("style_strength", 0.5)))


def _spec(
    answer: Callable[[dict[str, Any], dict[str, Image.Image], int], Image.Image],
    required: str,
    optional: str = "",
    **options: Any,
) -> ServiceSpec:
    """A spec from field lists: ``"image prompt"``; a rule is looked up by the field's name."""
    names = required.split() + optional.split()
    rules = {name: _RULES_BY_NAME[name] for name in names}
    rules |= options.pop("rules", {})
    return ServiceSpec(rules, frozenset(required.split()), answer, **options)


_RULES_BY_NAME: dict[str, Rule] = {
    "image": IMAGE,
    "mask": IMAGE,
    "init_image": IMAGE,
    "style_image": IMAGE,
    "prompt": TEXT,
    "negative_prompt": TEXT,
    "search_prompt": TEXT,
    "select_prompt": TEXT,
    "seed": SEED,
    "output_format": FORMAT,
    "style_preset": PRESET,
    "grow_mask": GROW,
    "left": SIDE,
    "right": SIDE,
    "up": SIDE,
    "down": SIDE,
    "creativity": UNIT,
    "control_strength": UNIT,
    "fidelity": UNIT,
    "style_strength": UNIT,
    "composition_fidelity": UNIT,
    "change_strength": Rule("number", 0.1, 1),
    "strength": UNIT,
    "aspect_ratio": RATIO,
    "mode": Rule("enum", choices=("text-to-image", "image-to-image")),
}
_COMMON = "negative_prompt seed output_format"
_EDIT = f"{_COMMON} style_preset"

SERVICES: dict[str, ServiceSpec] = {
    "stability.sd3-5-large-v1:0": _spec(
        _sd35,
        "prompt",
        "negative_prompt seed output_format mode aspect_ratio image strength",
        formats=("jpeg", "png"),
        profile_only=False,
    ),
    "stability.stable-creative-upscale-v1:0": _spec(
        _upscale_to_4mp,
        "image prompt",
        f"{_EDIT} creativity",
        rules={"creativity": Rule("number", 0.1, 0.5)},
        max_pixels=1_048_576,
    ),
    "stability.stable-conservative-upscale-v1:0": _spec(
        _upscale_to_4mp,
        "image prompt",
        f"{_COMMON} creativity",
        rules={"creativity": Rule("number", 0.2, 0.5)},
    ),
    "stability.stable-fast-upscale-v1:0": _spec(
        _fast_upscale,
        "image",
        "output_format",
        min_side=32,
        max_side=1536,
        min_pixels=1_024,
        max_pixels=1_048_576,
    ),
    "stability.stable-image-inpaint-v1:0": _spec(
        _inpaint, "image prompt", f"{_EDIT} mask grow_mask"
    ),
    "stability.stable-image-erase-object-v1:0": _spec(
        _erase, "image", "mask grow_mask seed output_format"
    ),
    "stability.stable-outpaint-v1:0": _spec(
        _outpaint,
        "image",
        "left right up down prompt creativity seed output_format style_preset",
    ),
    "stability.stable-image-remove-background-v1:0": _spec(
        _remove_background,
        "image",
        "output_format",
        formats=("png", "webp"),
        max_pixels=4_194_304,
    ),
    "stability.stable-image-search-replace-v1:0": _spec(
        _search, "image prompt search_prompt", f"{_EDIT} grow_mask"
    ),
    "stability.stable-image-search-recolor-v1:0": _spec(
        _search, "image prompt select_prompt", f"{_EDIT} grow_mask"
    ),
    "stability.stable-image-control-sketch-v1:0": _spec(
        _control, "image prompt", f"{_EDIT} control_strength"
    ),
    "stability.stable-image-control-structure-v1:0": _spec(
        _control, "image prompt", f"{_EDIT} control_strength"
    ),
    "stability.stable-image-style-guide-v1:0": _spec(
        _style_guide, "image prompt", f"{_EDIT} aspect_ratio fidelity"
    ),
    "stability.stable-style-transfer-v1:0": _spec(
        _style_transfer,
        "init_image style_image",
        f"{_COMMON} prompt style_strength composition_fidelity change_strength",
    ),
}


def _check(name: str, rule: Rule, value: Any) -> None:
    pointer = f"#/{name}"
    if rule.kind in {"text", "image"}:
        if not isinstance(value, str):
            raise RequestError(pointer, "expected type: String")
        if rule.kind == "text" and len(value) > MAX_PROMPT_CHARS:
            raise RequestError(
                pointer, f"expected maxLength: {MAX_PROMPT_CHARS}, actual: {len(value)}"
            )
    elif rule.kind == "enum":
        if value not in rule.choices:
            raise RequestError(pointer, f"{value} is not a valid enum value")
    else:
        integer = rule.kind == "integer"
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise RequestError(pointer, "expected type: " + ("Integer" if integer else "Number"))
        if not rule.low <= value <= rule.high:
            raise RequestError(
                pointer, f"{value} is not in the range {rule.low:g} to {rule.high:g}"
            )


def _decode(name: str, value: str, spec: ServiceSpec) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(base64.b64decode(value, validate=True)))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError) as e:
        raise RequestError(f"#/{name}", "is not a base64-encoded PNG, JPEG or WebP image") from e
    if image.format not in {"PNG", "JPEG", "WEBP"}:
        raise RequestError(f"#/{name}", f"{image.format} is not a supported image format")
    width, height = image.size
    pixels = width * height
    if not (spec.min_side <= min(width, height) and max(width, height) <= spec.max_side):
        raise RequestError(
            f"#/{name}",
            f"{width}x{height}: each side must be {spec.min_side} to {spec.max_side} px",
        )
    if not spec.min_pixels <= pixels <= spec.max_pixels:
        raise RequestError(
            f"#/{name}", f"{pixels} pixels is outside {spec.min_pixels} to {spec.max_pixels}"
        )
    return image


def parse_service_body(
    spec: ServiceSpec, body: Any
) -> tuple[dict[str, Any], dict[str, Image.Image]]:
    """Check ``body`` against the model's rules (the first broken one raises); the decoded
    input images by field."""
    if not isinstance(body, dict):
        raise RequestError("#", "expected type: JSONObject")
    for key in body:
        if key not in spec.fields:
            raise RequestError("#", f"extraneous key [{key}] is not permitted")
    for name in sorted(spec.required):
        if name not in body:
            raise RequestError("#", f"required key [{name}] not found")
    for name, value in body.items():
        _check(name, spec.fields[name], value)
    if body.get("output_format", "png") not in spec.formats:
        raise RequestError("#/output_format", f"{body['output_format']} is not a valid enum value")
    if body.get("mode") == "image-to-image" and not {"image", "strength"} <= body.keys():
        raise RequestError("#", "required key [image] and [strength] not found for image-to-image")
    images = {
        name: _decode(name, body[name], spec)
        for name, rule in spec.fields.items()
        if rule.kind == "image" and name in body
    }
    source = images.get("image")
    needs_mask = "mask" in spec.fields and "mask" not in images
    if needs_mask and source is not None and source.mode not in {"RGBA", "LA"}:
        raise RequestError("#", "required key [mask] not found (the image has no alpha channel)")
    return body, images


def run_service(
    spec: ServiceSpec, body: dict[str, Any], images: dict[str, Image.Image], seed: int
) -> bytes:
    """The encoded answer image (deterministic for the same body and seed)."""
    result = spec.answer(body, images, seed)
    return encode(result, str(body.get("output_format", "png")))
