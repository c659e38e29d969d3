"""What each Stability image model on Bedrock accepts: one pydantic model per request shape.

Every class is the InvokeModel body of its models with their documented rules, checked before
anything is queued. Input images are never carried here as bytes: a request names each one by
reference (``imagegen.inputs``), and the worker fetches and encodes it at call time, so no image
travels through Redis. Fields a caller leaves out are left out of the body too, so Bedrock applies
its own defaults.

``GenerationRequest`` (Stable Image Core and Ultra) also accepts the older SDXL form
``text_prompts: [{"text", "weight"}]`` (the Core documentation lists it as required while its own
examples send ``prompt``) and normalises it: positive weights make the prompt, negative weights
the negative prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Self, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from imagegen.errors import FieldError
from imagegen.inputs import ImageInput
from imagegen.storable import storable_text

__all__ = [
    "ASPECT_RATIOS",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "OUTPUT_FORMATS",
    "STYLE_PRESETS",
    "AnyModelRequest",
    "ConservativeUpscaleRequest",
    "ControlRequest",
    "CreativeUpscaleRequest",
    "EraseObjectRequest",
    "FastUpscaleRequest",
    "GenerationRequest",
    "InpaintRequest",
    "ModelRequest",
    "OutpaintRequest",
    "RemoveBackgroundRequest",
    "SD35Request",
    "SearchRecolorRequest",
    "SearchReplaceRequest",
    "StyleGuideRequest",
    "StyleTransferRequest",
    "TextPrompt",
    "validation_errors",
]

MAX_PROMPT_CHARS = 10_000
MAX_SEED = 4_294_967_295
MAX_OUTPAINT_PX = 2000
MAX_GROW_MASK_PX = 20

AspectRatio = Literal["16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21"]
OutputFormat = Literal["png", "jpeg", "webp"]
StylePreset = Literal[
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
]
ASPECT_RATIOS: tuple[str, ...] = get_args(AspectRatio)
OUTPUT_FORMATS: tuple[str, ...] = get_args(OutputFormat)
STYLE_PRESETS: tuple[str, ...] = get_args(StylePreset)


def _whole_number(value: Any) -> Any:
    """JSON has one number type: 42.0 is the integer 42 (but true is not 1, nor "42" 42)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Text a record can hold: UTF-8 can carry it (JSON lets lone surrogates through).
StorableText = Annotated[str, AfterValidator(storable_text)]
PromptText = Annotated[StorableText, StringConstraints(min_length=1, max_length=MAX_PROMPT_CHARS)]
OptionalText = Annotated[StorableText, StringConstraints(max_length=MAX_PROMPT_CHARS)] | None
Seed = Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=MAX_SEED, strict=True)]
Pixels = Annotated[
    int, BeforeValidator(_whole_number), Field(ge=0, le=MAX_OUTPAINT_PX, strict=True)
]
GrowMask = Annotated[
    int, BeforeValidator(_whole_number), Field(ge=0, le=MAX_GROW_MASK_PX, strict=True)
]


Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
CreativeUpscaleCreativity = Annotated[float, Field(ge=0.1, le=0.5, allow_inf_nan=False)]
ConservativeUpscaleCreativity = Annotated[float, Field(ge=0.2, le=0.5, allow_inf_nan=False)]
ChangeStrength = Annotated[float, Field(ge=0.1, le=1.0, allow_inf_nan=False)]


class ModelRequest(BaseModel):
    """The body of one InvokeModel call, with its input images named, not carried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The fields that name an input image, in the order the body lists them.
    IMAGE_FIELDS: ClassVar[tuple[str, ...]] = ()
    # Output formats this model can return (its ``output_format`` field says which one).
    FORMATS: ClassVar[tuple[str, ...]] = OUTPUT_FORMATS

    @property
    def prompt_text(self) -> str:
        """The prompt, for logs and the emulator's pictures ('' for models without one)."""
        return str(getattr(self, "prompt", None) or "")

    @property
    def image_format(self) -> str:
        """The format the image comes back in."""
        return str(getattr(self, "output_format", None) or "png")

    @property
    def fixed_seed(self) -> int:
        """The seed asked for (0: Bedrock picks one, so the image is new every time)."""
        return int(getattr(self, "seed", 0) or 0)

    def image_inputs(self) -> dict[str, str]:
        """The input images this request names, by field."""
        found = {name: getattr(self, name) for name in self.IMAGE_FIELDS}
        return {name: ref for name, ref in found.items() if ref}

    @model_validator(mode="after")
    def _format_allowed(self) -> Self:
        formats = type(self).FORMATS
        if self.image_format not in formats:
            msg = f"output_format must be one of {', '.join(formats)} for this model"
            raise ValueError(msg)
        return self

    def to_bedrock_body(self, images: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The InvokeModel JSON body; ``images`` holds each input image as base64 by field. Seed 0
        is left out: Bedrock then picks one and reports it."""
        body = self.model_dump(mode="json", exclude_none=True)
        if not body.get("seed"):
            body.pop("seed", None)
        for name in self.image_inputs():
            if images is None or name not in images:
                msg = f"the input image {name!r} was not fetched"
                raise ValueError(msg)
            body[name] = images[name]
        return body


class TextPrompt(BaseModel):
    """One entry of the SDXL-style ``text_prompts`` list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: PromptText
    weight: float = 1.0


class GenerationRequest(ModelRequest):
    """Stable Image Core and Ultra: text to image."""

    prompt: PromptText
    negative_prompt: OptionalText = None
    aspect_ratio: AspectRatio = "1:1"
    output_format: OutputFormat = "png"
    seed: Seed = 0
    mode: Literal["text-to-image"] = "text-to-image"

    @model_validator(mode="before")
    @classmethod
    def _normalise_text_prompts(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "text_prompts" not in data:
            return data
        data = dict(data)
        raw = data.pop("text_prompts")
        if "prompt" in data:
            msg = "give either prompt or text_prompts, not both"
            raise ValueError(msg)
        if not isinstance(raw, list) or not raw:
            msg = "text_prompts must be a non-empty list of {text, weight} objects"
            raise ValueError(msg)
        prompts = [_text_prompt(index, item) for index, item in enumerate(raw)]
        positive = [p.text for p in prompts if p.weight >= 0]
        negative = [p.text for p in prompts if p.weight < 0]
        if not positive:
            msg = "text_prompts needs at least one entry with a weight >= 0"
            raise ValueError(msg)
        if negative and data.get("negative_prompt"):
            msg = "give negative_prompt or negative-weight text_prompts, not both"
            raise ValueError(msg)
        data["prompt"] = " ".join(positive)
        if negative:
            data["negative_prompt"] = ", ".join(negative)
        return data

    def to_bedrock_body(self, images: Mapping[str, str] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": self.prompt,
            "aspect_ratio": self.aspect_ratio,
            "output_format": self.output_format,
        }
        if self.negative_prompt:
            body["negative_prompt"] = self.negative_prompt
        if self.seed:
            body["seed"] = self.seed
        return body


class SD35Request(ModelRequest):
    """Stable Diffusion 3.5 Large: text to image, or image to image (``image`` + ``strength``)."""

    IMAGE_FIELDS: ClassVar[tuple[str, ...]] = ("image",)
    FORMATS: ClassVar[tuple[str, ...]] = ("jpeg", "png")

    prompt: PromptText
    negative_prompt: OptionalText = None
    mode: Literal["text-to-image", "image-to-image"] = "text-to-image"
    aspect_ratio: AspectRatio | None = None
    image: ImageInput | None = None
    strength: Unit | None = None
    output_format: OutputFormat = "png"
    seed: Seed = 0

    @model_validator(mode="after")
    def _mode_fields(self) -> Self:
        if self.mode == "image-to-image":
            if self.image is None or self.strength is None:
                msg = "image-to-image needs image and strength"
                raise ValueError(msg)
            if self.aspect_ratio is not None:
                msg = "aspect_ratio is for text-to-image (image-to-image keeps the image's)"
                raise ValueError(msg)
        elif self.image is not None or self.strength is not None:
            msg = 'image and strength need mode "image-to-image"'
            raise ValueError(msg)
        return self


class _EditBase(ModelRequest):
    IMAGE_FIELDS: ClassVar[tuple[str, ...]] = ("image",)

    image: ImageInput
    output_format: OutputFormat = "png"


class CreativeUpscaleRequest(_EditBase):
    """Creative Upscale: a small image re-imagined at about 4 megapixels."""

    prompt: PromptText
    negative_prompt: OptionalText = None
    creativity: CreativeUpscaleCreativity | None = None
    style_preset: StylePreset | None = None
    seed: Seed = 0


class ConservativeUpscaleRequest(_EditBase):
    """Conservative Upscale: the same image at about 4 megapixels, details kept."""

    prompt: PromptText
    negative_prompt: OptionalText = None
    creativity: ConservativeUpscaleCreativity | None = None
    seed: Seed = 0


class FastUpscaleRequest(_EditBase):
    """Fast Upscale: four times the width and height, no prompt."""


class InpaintRequest(_EditBase):
    """Inpaint: the masked area (white in ``mask``, or the image's transparent pixels) redrawn."""

    IMAGE_FIELDS = ("image", "mask")

    prompt: PromptText
    mask: ImageInput | None = None
    grow_mask: GrowMask | None = None
    negative_prompt: OptionalText = None
    style_preset: StylePreset | None = None
    seed: Seed = 0


class EraseObjectRequest(_EditBase):
    """Erase Object: the masked area filled from its surroundings."""

    IMAGE_FIELDS = ("image", "mask")

    mask: ImageInput | None = None
    grow_mask: GrowMask | None = None
    seed: Seed = 0


class OutpaintRequest(_EditBase):
    """Outpaint: the image extended by up to 2,000 pixels on each side."""

    left: Pixels = 0
    right: Pixels = 0
    up: Pixels = 0
    down: Pixels = 0
    prompt: OptionalText = None
    creativity: Unit | None = None
    style_preset: StylePreset | None = None
    seed: Seed = 0

    @model_validator(mode="after")
    def _some_direction(self) -> Self:
        if not (self.left or self.right or self.up or self.down):
            msg = "give at least one of left, right, up, down above 0"
            raise ValueError(msg)
        return self


class RemoveBackgroundRequest(_EditBase):
    """Remove Background: the subject on a transparent background (PNG or WebP)."""

    FORMATS = ("png", "webp")


class SearchReplaceRequest(_EditBase):
    """Search and Replace: what ``search_prompt`` names becomes what ``prompt`` says."""

    prompt: PromptText
    search_prompt: PromptText
    negative_prompt: OptionalText = None
    grow_mask: GrowMask | None = None
    style_preset: StylePreset | None = None
    seed: Seed = 0


class SearchRecolorRequest(_EditBase):
    """Search and Recolor: what ``select_prompt`` names is recoloured as ``prompt`` says."""

    prompt: PromptText
    select_prompt: PromptText
    negative_prompt: OptionalText = None
    grow_mask: GrowMask | None = None
    style_preset: StylePreset | None = None
    seed: Seed = 0


class ControlRequest(_EditBase):
    """Control Sketch and Control Structure: a new image that follows the input's lines."""

    prompt: PromptText
    control_strength: Unit | None = None
    negative_prompt: OptionalText = None
    style_preset: StylePreset | None = None
    seed: Seed = 0


class StyleGuideRequest(_EditBase):
    """Style Guide: a new image in the style of the input image."""

    prompt: PromptText
    aspect_ratio: AspectRatio | None = None
    fidelity: Unit | None = None
    negative_prompt: OptionalText = None
    style_preset: StylePreset | None = None
    seed: Seed = 0


class StyleTransferRequest(ModelRequest):
    """Style Transfer: ``init_image`` restyled after ``style_image``."""

    IMAGE_FIELDS = ("init_image", "style_image")

    init_image: ImageInput
    style_image: ImageInput
    prompt: OptionalText = None
    negative_prompt: OptionalText = None
    style_strength: Unit | None = None
    composition_fidelity: Unit | None = None
    change_strength: ChangeStrength | None = None
    output_format: OutputFormat = "png"
    seed: Seed = 0


# Any model's request, as records and the API's schema hold it (each validated by its own model's
# class first: a union member's instance is taken as it is).
AnyModelRequest = (
    GenerationRequest
    | SD35Request
    | CreativeUpscaleRequest
    | ConservativeUpscaleRequest
    | FastUpscaleRequest
    | InpaintRequest
    | EraseObjectRequest
    | OutpaintRequest
    | RemoveBackgroundRequest
    | SearchReplaceRequest
    | SearchRecolorRequest
    | ControlRequest
    | StyleGuideRequest
    | StyleTransferRequest
)


def _text_prompt(index: int, item: Any) -> TextPrompt:
    try:
        return TextPrompt.model_validate(item)
    except ValidationError as e:
        first = validation_errors(e)[0]
        msg = f"text_prompts[{index}].{first.field}: {first.message}"
        raise ValueError(msg) from None


def validation_errors(error: ValidationError) -> list[FieldError]:
    """pydantic's errors as (dotted field path, message) pairs."""
    found = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"]) or "body"
        message = item["msg"].removeprefix("Value error, ")
        found.append(FieldError(field=path, message=message))
    return found
