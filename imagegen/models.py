"""The model registry: every Stability image model on Bedrock the service runs, in one table.

One entry per model id drives the request schema (``imagegen.requests``), the Bedrock body, the
input-image checks, the price a job reserves and books, the default allowed models, the metrics
labels, ``ops/iam-policy.json`` and the model table in docs/models.md (the tests check both
against this table). Adding a model is one entry here plus its tests; the emulator keeps its own
table, so it stays an independent check of what we send (a test compares the two).

Where the facts come from: AWS's Bedrock pages for Stability (model ids, the inference profiles,
the request fields) and the Bedrock price list for Core, Ultra and SD3.5. The Image Services'
prices and the input-image limits come from the table in our issue tracker and Stability's own
API reference; docs/models.md marks them as not confirmed on an AWS page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from imagegen.inputs import InputLimits
from imagegen.requests import (
    ConservativeUpscaleRequest,
    ControlRequest,
    CreativeUpscaleRequest,
    EraseObjectRequest,
    FastUpscaleRequest,
    GenerationRequest,
    InpaintRequest,
    ModelRequest,
    OutpaintRequest,
    RemoveBackgroundRequest,
    SD35Request,
    SearchRecolorRequest,
    SearchReplaceRequest,
    StyleGuideRequest,
    StyleTransferRequest,
)

__all__ = [
    "DEFAULT_MODEL_ID",
    "MODELS",
    "ImageModel",
    "model_for",
    "request_type_for",
]

ModelKind = Literal["generate", "upscale", "edit", "control"]
# How a model is reached: on demand in its region, or only through a cross-region inference
# profile (the ``us.`` prefix), which needs IAM on the profile and on the model in every region
# the profile routes to.
Access = Literal["on-demand", "inference-profile"]
PROFILE_REGIONS_US = ("us-east-1", "us-east-2", "us-west-2")


@dataclass(frozen=True)
class ImageModel:
    """One model as the service knows it."""

    model_id: str
    name: str
    kind: ModelKind
    request_type: type[ModelRequest]
    price_usd: float
    access: Access
    # What the output size is, in words (docs/models.md's table); the worker reads the real size.
    output_size: str
    input_limits: InputLimits | None = None
    price_confirmed: bool = True

    @property
    def base_model_id(self) -> str:
        """The foundation model behind a profile id (``us.stability.x`` -> ``stability.x``)."""
        return (
            self.model_id.split(".", 1)[1] if self.access == "inference-profile" else self.model_id
        )

    @property
    def regions(self) -> tuple[str, ...]:
        """Where a call may run: the profile's destinations (empty: the configured region)."""
        return PROFILE_REGIONS_US if self.access == "inference-profile" else ()

    def describe(self) -> dict[str, Any]:
        """The entry as plain data (``imagegen models --json``, the table in docs/models.md)."""
        fields = self.request_type.model_fields
        return {
            "model_id": self.model_id,
            "name": self.name,
            "kind": self.kind,
            "access": self.access,
            "price_usd": self.price_usd,
            "price_confirmed": self.price_confirmed,
            "fields": list(fields),
            "required": [name for name, info in fields.items() if info.is_required()],
            "input_images": list(self.request_type.IMAGE_FIELDS),
            "output_formats": list(self.request_type.FORMATS),
            "output_size": self.output_size,
        }


# Stability's limits for edit and control inputs: 64 px per side, 4,096 to 9,437,184 pixels.
EDIT_INPUT = InputLimits()
CREATIVE_UPSCALE_INPUT = InputLimits(min_side=64, max_pixels=1_048_576)
FAST_UPSCALE_INPUT = InputLimits(min_side=32, max_side=1536, min_pixels=1_024, max_pixels=1_048_576)
REMOVE_BACKGROUND_INPUT = InputLimits(max_pixels=4_194_304)
SIZE_BY_RATIO = "about 1 MP by aspect_ratio (1:1 is 1024x1024)"
SAME_SIZE = "the input image's size"
PROFILE: Access = "inference-profile"


def _service(
    suffix: str,
    name: str,
    kind: ModelKind,
    request_type: type[ModelRequest],
    price_usd: float,
    *,
    output_size: str = SAME_SIZE,
    limits: InputLimits = EDIT_INPUT,
) -> ImageModel:
    return ImageModel(
        f"us.stability.{suffix}",
        name,
        kind,
        request_type,
        price_usd,
        PROFILE,
        output_size,
        limits,
        price_confirmed=False,
    )


MODELS: dict[str, ImageModel] = {
    m.model_id: m
    for m in (
        ImageModel(
            "stability.stable-image-core-v1:0",
            "Stable Image Core 1.0",
            "generate",
            GenerationRequest,
            0.04,
            "on-demand",
            SIZE_BY_RATIO,
        ),
        ImageModel(
            "stability.stable-image-core-v1:1",
            "Stable Image Core 1.1",
            "generate",
            GenerationRequest,
            0.04,
            "on-demand",
            SIZE_BY_RATIO,
        ),
        ImageModel(
            "stability.stable-image-ultra-v1:0",
            "Stable Image Ultra 1.0",
            "generate",
            GenerationRequest,
            0.14,
            "on-demand",
            SIZE_BY_RATIO,
        ),
        ImageModel(
            "stability.stable-image-ultra-v1:1",
            "Stable Image Ultra 1.1",
            "generate",
            GenerationRequest,
            0.14,
            "on-demand",
            SIZE_BY_RATIO,
        ),
        ImageModel(
            "stability.sd3-5-large-v1:0",
            "Stable Diffusion 3.5 Large",
            "generate",
            SD35Request,
            0.08,
            "on-demand",
            "about 1 MP by aspect_ratio; image-to-image keeps the input's shape",
            EDIT_INPUT,
        ),
        _service(
            "stable-creative-upscale-v1:0",
            "Creative Upscale",
            "upscale",
            CreativeUpscaleRequest,
            0.60,
            output_size="about 4 MP, the input's shape",
            limits=CREATIVE_UPSCALE_INPUT,
        ),
        _service(
            "stable-conservative-upscale-v1:0",
            "Conservative Upscale",
            "upscale",
            ConservativeUpscaleRequest,
            0.40,
            output_size="about 4 MP, the input's shape",
        ),
        _service(
            "stable-fast-upscale-v1:0",
            "Fast Upscale",
            "upscale",
            FastUpscaleRequest,
            0.03,
            output_size="4x the input's width and height",
            limits=FAST_UPSCALE_INPUT,
        ),
        _service("stable-image-inpaint-v1:0", "Inpaint", "edit", InpaintRequest, 0.07),
        _service(
            "stable-image-erase-object-v1:0", "Erase Object", "edit", EraseObjectRequest, 0.07
        ),
        _service(
            "stable-outpaint-v1:0",
            "Outpaint",
            "edit",
            OutpaintRequest,
            0.06,
            output_size="the input plus left/right/up/down",
        ),
        _service(
            "stable-image-remove-background-v1:0",
            "Remove Background",
            "edit",
            RemoveBackgroundRequest,
            0.07,
            limits=REMOVE_BACKGROUND_INPUT,
        ),
        _service(
            "stable-image-search-replace-v1:0",
            "Search and Replace",
            "edit",
            SearchReplaceRequest,
            0.07,
        ),
        _service(
            "stable-image-search-recolor-v1:0",
            "Search and Recolor",
            "edit",
            SearchRecolorRequest,
            0.07,
        ),
        _service(
            "stable-image-control-sketch-v1:0", "Control Sketch", "control", ControlRequest, 0.07
        ),
        _service(
            "stable-image-control-structure-v1:0",
            "Control Structure",
            "control",
            ControlRequest,
            0.07,
        ),
        _service(
            "stable-image-style-guide-v1:0",
            "Style Guide",
            "control",
            StyleGuideRequest,
            0.07,
            output_size=SIZE_BY_RATIO,
        ),
        _service(
            "stable-style-transfer-v1:0",
            "Style Transfer",
            "control",
            StyleTransferRequest,
            0.08,
            output_size="the init_image's size",
        ),
    )
}
DEFAULT_MODEL_ID = "stability.stable-image-core-v1:0"


def model_for(model_id: str) -> ImageModel | None:
    """The registry's entry for ``model_id`` (None for a model it does not know)."""
    return MODELS.get(model_id)


def request_type_for(model_id: str | None) -> type[ModelRequest]:
    """The request schema of ``model_id``; a model the registry does not know (an operator's
    own id in ``allowed_model_ids``) takes the text-to-image request of Core."""
    found = MODELS.get(model_id or DEFAULT_MODEL_ID)
    return found.request_type if found else GenerationRequest
