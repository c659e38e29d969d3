"""Input images: how a job names one, where it may come from, and what it must be.

A request never carries an image's bytes (they would travel through Redis). It names each input:

- ``"s3://bucket/key"``: an object in a bucket and prefix the settings allow
  (``input_s3_prefixes``), or one of the tenant's own uploads (``{s3_bucket}/{uploads
  prefix}/{tenant}/``, where ``POST /v1/uploads`` puts them);
- ``{"job": "<id>"}``: the output of another job of the same tenant. If that job is not final
  yet, the new job waits for it (a chain); if it ends without an image, so does the new job;
- ``{"step": n}``: inside a chain submission only, the output of its step ``n`` (0-based); the
  submitter turns it into ``{"job": "<that step's id>"}``.

Stored canonically as a string: the S3 URI, ``job:<id>`` or ``step:<n>``. The submitter reads
each S3 object's header (format and dimensions, without decoding the image) before the job is
queued; the worker fetches and encodes the whole image at call time and checks it again. Either
way the size a header claims is bounded before Pillow reads it (``image_header``): a header
claiming more pixels than any model takes is refused as unusable, never decoded.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from PIL import Image
from pydantic import BeforeValidator, WithJsonSchema

from imagegen.ids import STORED_JOB_ID_PATTERN
from imagegen.image_header import claimed_size

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "INPUT_FORMATS",
    "MAX_INPUT_PIXELS",
    "MAX_INPUT_SIDE",
    "ImageFacts",
    "ImageInput",
    "ImageRef",
    "InputLimits",
    "UnusableImageError",
    "image_facts",
    "parse_image_ref",
    "probe_s3_image",
]

# Pillow's format names of the images Bedrock's Stability models take.
INPUT_FORMATS: dict[str, str] = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
# How much of an object the submitter reads to learn its format and size.
HEADER_BYTES = 64 * 1024
# No model takes a larger input image (tests/unit/test_models.py holds every model to these).
MAX_INPUT_SIDE = 16_384
MAX_INPUT_PIXELS = 9_437_184
_S3_URI = re.compile(
    r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>[^\x00]{1,1024})$"
)
_JOB_ID = re.compile(STORED_JOB_ID_PATTERN)
_MAX_STEPS = 100


class UnusableImageError(ValueError):
    """An input image cannot be used; the message says why (the caller names the field)."""


RefKind = Literal["s3", "job", "step"]


@dataclass(frozen=True)
class ImageRef:
    """One input image, by reference."""

    kind: RefKind
    bucket: str = ""
    key: str = ""
    job_id: str = ""
    step: int = -1

    @property
    def canonical(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.key}"
        if self.kind == "job":
            return f"job:{self.job_id}"
        return f"step:{self.step}"


def parse_image_ref(value: str) -> ImageRef:
    """The reference a stored (canonical) input names."""
    if value.startswith("job:"):
        return ImageRef("job", job_id=value.removeprefix("job:"))
    if value.startswith("step:"):
        return ImageRef("step", step=int(value.removeprefix("step:")))
    match = _S3_URI.match(value)
    if match is None:
        msg = f"{value[:80]!r} is not an input image reference"
        raise UnusableImageError(msg)
    return ImageRef("s3", bucket=match["bucket"], key=match["key"])


def _normalise(value: Any) -> str:
    if isinstance(value, dict) and len(value) == 1:
        [(kind, target)] = value.items()
        if kind == "job" and isinstance(target, str) and _JOB_ID.match(target):
            return f"job:{target}"
        if kind == "step" and type(target) is int and 0 <= target < _MAX_STEPS:
            return f"step:{target}"
        if kind == "s3" and isinstance(target, str):
            value = target
    if isinstance(value, str):
        if value.startswith("s3://") and _S3_URI.match(value):
            return value
        if value.startswith("job:") and _JOB_ID.match(value.removeprefix("job:")):
            return value
    msg = 'must be an S3 URI ("s3://bucket/key"), {"job": "<job id>"} or, in a chain, {"step": n}'
    raise ValueError(msg)


# What a request field naming an input image accepts, as the published JSON Schema says it.
_IMAGE_INPUT_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "description": 'An S3 URI ("s3://bucket/key": your upload, or an object under '
            'IMAGEGEN_INPUT_S3_PREFIXES), or "job:<job id>"',
        },
        {
            "type": "object",
            "description": "Another of your jobs' image (the job waits for it)",
            "properties": {"job": {"type": "string"}},
            "required": ["job"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "description": "In a chain: an earlier step's image (0-based)",
            "properties": {"step": {"type": "integer", "minimum": 0}},
            "required": ["step"],
            "additionalProperties": False,
        },
    ]
}

# A request field that names an input image (stored as its canonical string).
ImageInput = Annotated[
    str, BeforeValidator(_normalise), WithJsonSchema(_IMAGE_INPUT_SCHEMA, mode="validation")
]


@dataclass(frozen=True)
class InputLimits:
    """What a model takes as an input image: pixels per side and in all."""

    min_side: int = 64
    max_side: int = 16_384
    min_pixels: int = 4_096
    max_pixels: int = 9_437_184

    def problem(self, width: int, height: int) -> str | None:
        pixels = width * height
        if min(width, height) < self.min_side:
            return f"is {width}x{height}; each side must be at least {self.min_side} px"
        if max(width, height) > self.max_side:
            return f"is {width}x{height}; each side must be at most {self.max_side} px"
        if pixels < self.min_pixels:
            return f"has {pixels:,} pixels; the model needs at least {self.min_pixels:,}"
        if pixels > self.max_pixels:
            return f"has {pixels:,} pixels; the model takes at most {self.max_pixels:,}"
        return None


@dataclass(frozen=True)
class ImageFacts:
    """What the header of an input image says."""

    format: str
    width: int
    height: int
    bytes: int
    etag: str = ""


def _check_size(width: int, height: int) -> None:
    if max(width, height) > MAX_INPUT_SIDE or width * height > MAX_INPUT_PIXELS:
        msg = (
            f"is {width:,}x{height:,} ({width * height:,} pixels); no model takes more than "
            f"{MAX_INPUT_PIXELS:,} pixels or {MAX_INPUT_SIDE:,} per side"
        )
        raise UnusableImageError(msg)


def image_facts(data: bytes, total_bytes: int | None = None, etag: str = "") -> ImageFacts:
    """Format and size from an image's first bytes (Pillow reads only the header, and only of
    the formats the models take). The size the header claims is checked first."""
    claimed = claimed_size(data)
    if claimed is not None:
        _check_size(*claimed)
    try:
        with Image.open(io.BytesIO(data), formats=tuple(INPUT_FORMATS)) as image:
            fmt = INPUT_FORMATS.get(image.format or "")
            width, height = image.size
    except Image.DecompressionBombError as e:
        msg = f"claims more pixels than any model takes ({MAX_INPUT_PIXELS:,} at most)"
        raise UnusableImageError(msg) from e
    except Exception as e:  # any other header Pillow cannot read
        msg = "is not a PNG, JPEG or WebP image"
        raise UnusableImageError(msg) from e
    if fmt is None:
        msg = f"is {image.format}; the models take PNG, JPEG or WebP"
        raise UnusableImageError(msg)
    _check_size(width, height)
    return ImageFacts(
        fmt, width, height, total_bytes if total_bytes is not None else len(data), etag
    )


def probe_s3_image(s3: S3Client, bucket: str, key: str, *, max_bytes: int) -> ImageFacts:
    """Read an object's size and header (not the whole image) and check it is one we can send."""
    where = f"s3://{bucket}/{key}"
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        size = int(head["ContentLength"])
        if size > max_bytes:
            msg = f"{where} is {size:,} bytes; the limit is {max_bytes:,}"
            raise UnusableImageError(msg)
        part = s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{HEADER_BYTES - 1}")
        data = part["Body"].read()
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        msg = f"{where} cannot be read ({code or 'error'})"
        raise UnusableImageError(msg) from e
    except BotoCoreError as e:
        msg = f"{where} cannot be read ({type(e).__name__})"
        raise UnusableImageError(msg) from e
    try:
        return image_facts(data, size, str(head.get("ETag", "")).strip('"'))
    except UnusableImageError as e:
        raise UnusableImageError(f"{where} {e}") from e
