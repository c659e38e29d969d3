"""Validating an InvokeModel body the way Bedrock validates Stable Image Core requests.

Errors read like Bedrock's: ``Malformed input request: #/aspect_ratio: ...``, naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emulator.picture import SIZES

__all__ = ["ImageRequest", "RequestError", "parse_request", "service_request"]

MAX_PROMPT_CHARS = 10_000
MAX_SEED = 4_294_967_295
OUTPUT_FORMATS = ("png", "jpeg", "webp")
_KNOWN_KEYS = frozenset(
    {"prompt", "text_prompts", "negative_prompt", "aspect_ratio", "output_format", "seed", "mode"}
)


class RequestError(ValueError):
    """The body breaks a rule; the message names the field."""

    def __init__(self, pointer: str, problem: str) -> None:
        super().__init__(
            f"Malformed input request: {pointer}: {problem}, please reformat your input and "
            "try again."
        )


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    negative_prompt: str
    aspect_ratio: str
    output_format: str
    seed: int


def _text(body: dict[str, Any], key: str, *, required: bool) -> str:
    value = body.get(key)
    if value is None:
        if required:
            raise RequestError("#", f"required key [{key}] not found")
        return ""
    if not isinstance(value, str):
        raise RequestError(f"#/{key}", "expected type: String")
    if required and not value:
        raise RequestError(f"#/{key}", "expected minLength: 1, actual: 0")
    if len(value) > MAX_PROMPT_CHARS:
        raise RequestError(
            f"#/{key}", f"expected maxLength: {MAX_PROMPT_CHARS}, actual: {len(value)}"
        )
    return value


def _from_text_prompts(body: dict[str, Any]) -> tuple[str, str]:
    entries = body["text_prompts"]
    if not isinstance(entries, list) or not entries:
        raise RequestError("#/text_prompts", "expected a non-empty array")
    positive: list[str] = []
    negative: list[str] = []
    for index, entry in enumerate(entries):
        pointer = f"#/text_prompts/{index}"
        if not isinstance(entry, dict):
            raise RequestError(pointer, "expected type: JSONObject")
        text = _text(entry, "text", required=True)
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise RequestError(f"{pointer}/weight", "expected type: Number")
        (negative if weight < 0 else positive).append(text)
    if not positive:
        raise RequestError("#/text_prompts", "needs an entry with a weight >= 0")
    return " ".join(positive), ", ".join(negative)


def parse_request(body: Any) -> ImageRequest:
    """Check ``body`` against the Stable Image Core rules; raise ``RequestError`` on the first
    broken one."""
    if not isinstance(body, dict):
        raise RequestError("#", "expected type: JSONObject")
    for key in body:
        if key not in _KNOWN_KEYS:
            raise RequestError("#", f"extraneous key [{key}] is not permitted")
    if "text_prompts" in body:
        if "prompt" in body:
            raise RequestError("#", "give prompt or text_prompts, not both")
        prompt, negative = _from_text_prompts(body)
        negative = ", ".join(
            filter(None, [negative, _text(body, "negative_prompt", required=False)])
        )
    else:
        prompt = _text(body, "prompt", required=True)
        negative = _text(body, "negative_prompt", required=False)

    aspect_ratio = body.get("aspect_ratio", "1:1")
    if aspect_ratio not in SIZES:
        raise RequestError("#/aspect_ratio", f"{aspect_ratio} is not a valid enum value")
    output_format = body.get("output_format", "png")
    if output_format not in OUTPUT_FORMATS:
        raise RequestError("#/output_format", f"{output_format} is not a valid enum value")
    mode = body.get("mode", "text-to-image")
    if mode != "text-to-image":
        raise RequestError("#/mode", f"{mode} is not a valid enum value")
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise RequestError("#/seed", "expected type: Integer")
    if not 0 <= seed <= MAX_SEED:
        raise RequestError("#/seed", f"{seed} is not in the range 0 to {MAX_SEED}")
    return ImageRequest(prompt, negative, aspect_ratio, output_format, seed)


def service_request(body: dict[str, Any]) -> ImageRequest:
    """The common fields of an already checked Image Services or SD3.5 body."""
    return ImageRequest(
        str(body.get("prompt") or ""),
        str(body.get("negative_prompt") or ""),
        str(body.get("aspect_ratio") or "1:1"),
        str(body.get("output_format") or "png"),
        int(body.get("seed") or 0),
    )
