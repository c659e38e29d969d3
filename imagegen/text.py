"""Reading the small texts callers send: durations (``90s``, ``10m``, ``2h``, ``1d``) and JSON
objects. One grammar each, for the API's headers and the CLI's options alike."""

from __future__ import annotations

import json
import math
import re
from typing import Any

__all__ = ["MAX_DURATION_S", "parse_duration_s", "parse_json", "parse_json_object"]

# Nothing the service schedules lies further ahead than a year.
MAX_DURATION_S = 366 * 86_400
_DURATION = re.compile(r"^\s*(\d{1,12}(?:\.\d{1,9})?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86_400, None: 1}


def parse_duration_s(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``1500ms``, ``10m``, ``2h`` or ``1d``: positive, at most
    ``MAX_DURATION_S``. Raises ``ValueError`` saying what is wrong."""
    match = _DURATION.match(text)
    if match is None:
        msg = f"not a duration like 10m or 90s: {text[:40]!r}"
        raise ValueError(msg)
    seconds = float(match[1]) * _UNIT_S[match[2]]
    if not 0 < seconds <= MAX_DURATION_S or not math.isfinite(seconds):
        msg = f"must be a positive duration of at most {MAX_DURATION_S // 86_400} days"
        raise ValueError(msg)
    return seconds


def parse_json(text: str | bytes, what: str) -> Any:
    """The JSON value in ``text``; ``ValueError`` naming ``what`` when it is not JSON or is
    nested too deep to read."""
    try:
        return json.loads(text or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        msg = f"{what} is not JSON: {e}"
        raise ValueError(msg) from e
    except RecursionError:
        msg = f"{what} is nested too deep"
        raise ValueError(msg) from None


def parse_json_object(text: str | bytes, what: str) -> dict[str, Any]:
    """The JSON object in ``text``; ``ValueError`` naming ``what`` when it is not JSON or not an
    object."""
    value = parse_json(text, what)
    if not isinstance(value, dict):
        msg = f"{what} must be a JSON object"
        raise ValueError(msg)
    return value
