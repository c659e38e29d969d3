"""Helpers for tests: small real images, Bedrock answers, emulator counters."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from typing import Any

from PIL import Image

PIL_NAMES = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def image_bytes(fmt: str = "png", size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(out, format=PIL_NAMES[fmt])
    return out.getvalue()


def bedrock_payload(
    fmt: str = "png", seed: int = 1234, size: tuple[int, int] = (64, 48)
) -> dict[str, object]:
    """A successful Stable Image Core answer."""
    return {
        "seeds": [seed],
        "finish_reasons": [None],
        "images": [base64.b64encode(image_bytes(fmt, size)).decode()],
    }


def emulator_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/_emulator/stats", timeout=5) as response:
        return json.load(response)  # type: ignore[no-any-return]
