"""Checking a returned image: is it the format asked for, and what size is it really."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from imagegen.errors import InvalidModelOutputError

__all__ = ["CONTENT_TYPES", "ImageInfo", "inspect_image"]

CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}
# Stable Image Core returns about one megapixel; anything far larger is not a real answer.
MAX_IMAGE_BYTES = 32 * 1024 * 1024
MAX_IMAGE_PIXELS = 16 * 1024 * 1024


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    bytes: int
    sha256: str

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


def inspect_image(data: bytes, expected_format: str) -> ImageInfo:
    """Decode the whole image and check it; raise ``InvalidModelOutputError`` if the image
    is corrupt, too large, or not ``expected_format`` (png, jpeg or webp)."""
    if len(data) > MAX_IMAGE_BYTES:
        msg = f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}"
        raise InvalidModelOutputError(msg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                found = _PIL_FORMATS.get(image.format or "", image.format or "unknown")
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    msg = f"image is {width}x{height}, larger than any Stable Image Core output"
                    raise InvalidModelOutputError(msg)
                image.load()  # a full decode: a truncated or corrupt file fails here
    except InvalidModelOutputError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombWarning) as e:
        msg = f"image does not decode: {e}"
        raise InvalidModelOutputError(msg) from e
    if found != expected_format:
        msg = f"image is {found}, but {expected_format} was requested"
        raise InvalidModelOutputError(msg)
    return ImageInfo(
        format=found,
        width=width,
        height=height,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
