"""The words of a prompt, as the search index files them and as a search reads them: the same
function on both sides, so a word typed finds the jobs whose prompt has it.

A word is a run of letters or digits (Unicode), case-folded and with accents kept; words of one
character, the commonest English words (``a``, ``the``, ``of``...) and words longer than
``MAX_WORD_CHARS`` are left out, and a prompt files at most ``MAX_WORDS`` distinct words (its
first ones). There is no stemming: ``cats`` does not find ``cat``.
"""

from __future__ import annotations

import re

__all__ = ["MAX_WORDS", "MAX_WORD_CHARS", "words"]

MAX_WORDS = 24
MAX_WORD_CHARS = 32
_WORD = re.compile(r"[^\W_]+")
STOP_WORDS = frozenset(
    {
        "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "in", "into", "is",
        "it", "its", "of", "on", "or", "so", "that", "the", "this", "to", "was", "were", "with",
    }
)  # fmt: skip


def words(text: str, limit: int = MAX_WORDS) -> list[str]:
    """The distinct searchable words of ``text``, in their first order, at most ``limit``."""
    found: dict[str, None] = {}
    for match in _WORD.finditer(text.casefold()):
        word = match.group(0)
        if len(word) < 2 or len(word) > MAX_WORD_CHARS or word in STOP_WORDS:
            continue
        found.setdefault(word)
        if len(found) >= limit:
            break
    return list(found)
