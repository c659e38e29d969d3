"""Helpers for tests: small real images, Bedrock answers, emulator counters."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import urllib.request
from typing import Any

from devstack.receiver import Receiver

__all__ = [
    "Receiver",
    "bedrock_payload",
    "emulator_stats",
    "image_bytes",
    "independent_signature_check",
]

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


def independent_signature_check(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks v1, written from the specification (not by calling our signer)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{lowered['webhook-id']}.{lowered['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1) for s in lowered["webhook-signature"].split(" ")]
    return any(version == "v1" and hmac.compare_digest(sig, expected) for version, sig in offered)
