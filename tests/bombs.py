"""Images whose headers claim sizes their bytes do not have (decompression bombs), made from
real small images with only the claimed size changed: what an attacker uploads."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

__all__ = ["jpeg_bomb", "picture", "png_bomb", "webp_bomb"]


def picture(image_format: str, size: tuple[int, int] = (64, 64), **options: object) -> bytes:
    """A real image in ``image_format`` (PNG, JPEG, WEBP)."""
    out = io.BytesIO()
    Image.new("RGB", size, (200, 90, 30)).save(out, format=image_format, **options)
    return out.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (its CRC fixed, so it parses)."""
    data = bytearray(picture("PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def jpeg_bomb(width: int = 65_000, height: int = 65_000) -> bytes:
    """A JPEG whose start-of-frame claims ``width`` x ``height``."""
    data = bytearray(picture("JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A WebP with an extended header (VP8X) whose canvas is ``width`` x ``height``, before a
    real small picture."""
    lossy = picture("WEBP")
    body = lossy[12:]  # the VP8 chunk
    vp8x = (
        b"VP8X"
        + struct.pack("<I", 10)
        + b"\x00\x00\x00\x00"
        + (width - 1).to_bytes(3, "little")
        + (height - 1).to_bytes(3, "little")
    )
    payload = b"WEBP" + vp8x + body
    return b"RIFF" + struct.pack("<I", len(payload)) + payload
