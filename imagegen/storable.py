"""What may be stored must be servable: text that UTF-8 can carry, finite numbers, bounded
nesting. JSON parsers accept lone surrogates (``"\\ud800"``), ``NaN`` and deep nesting; a record
holding them could be stored and billed, then never read back or sent as a webhook."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_NESTING", "storable_problem", "storable_text"]

# Containers inside containers, the top level counting as one.
MAX_NESTING = 16


def storable_text(value: str) -> str:
    """``value`` when UTF-8 can carry it; ``ValueError`` otherwise (a pydantic validator)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        msg = f"has a character UTF-8 cannot carry at position {e.start} (a lone surrogate)"
        raise ValueError(msg) from None
    return value


def storable_problem(value: Any, max_nesting: int = MAX_NESTING) -> str | None:
    """Why ``value`` (parsed JSON) cannot be stored and served, with where; None when it can."""
    stack: list[tuple[Any, str, int]] = [(value, "", 1)]
    while stack:
        item, path, depth = stack.pop()
        where = path or "the value"
        if isinstance(item, dict | list):
            if depth > max_nesting:
                return f"{where} is nested deeper than {max_nesting} levels"
            children = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in children:
                if isinstance(key, str) and _bad_text(key):
                    return f"a key in {where} has a character UTF-8 cannot carry"
                stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(item, str) and _bad_text(item):
            return f"{where} has a character UTF-8 cannot carry (a lone surrogate)"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"{where} is {item}, which JSON cannot carry"
    return None


def _bad_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
