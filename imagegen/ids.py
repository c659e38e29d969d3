"""Job ids: ULIDs (26 Crockford base32 characters), so ids sort by creation time.

They are monotonic within a process (the ULID spec's monotonic generation): an id minted in the
same millisecond as the one before takes that one's random part plus one, so the jobs of one
submission (which share a millisecond) sort in the order they were sent, as the console's lists
and searches show them. The first id of a millisecond draws 79 random bits, so the increments
never carry into the time."""

from __future__ import annotations

import os
import re
import threading
import time

__all__ = [
    "JOB_ID_PATTERN",
    "STORED_JOB_ID_PATTERN",
    "is_stored_job_id",
    "is_valid_job_id",
    "minted_ms",
    "new_job_id",
    "scoped_job_id",
]

# Caller-supplied ids become part of an S3 key and a Redis key: keep them to a safe alphabet.
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# The ids jobs are stored under: ours (ULIDs), a caller's without a tenant, or a tenant's own id
# in its namespace, ``{tenant}.{job_id}`` (a tenant may hold dots, a job id may not).
STORED_JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}(?:\.[A-Za-z0-9][A-Za-z0-9_-]{0,63})?$"
_JOB_ID_RE = re.compile(JOB_ID_PATTERN)
_STORED_JOB_ID_RE = re.compile(STORED_JOB_ID_PATTERN)

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TIME_CHARS = 10
_RANDOM_BYTES = 10
_ULID_BITS_PER_CHAR = 5


_RANDOM_BITS = 8 * _RANDOM_BYTES
_mint_lock = threading.Lock()
_last_ms, _last_random = -1, 0


def _random_part(ms: int) -> int:
    """The random part of the next id of millisecond ``ms``: the last one's plus one when the
    last id was of the same millisecond, else fresh bits (the top one clear)."""
    global _last_ms, _last_random  # noqa: PLW0603 - the process's one minting state
    with _mint_lock:
        if ms == _last_ms and _last_random + 1 < 1 << _RANDOM_BITS:
            _last_random += 1
        else:
            _last_ms = ms
            _last_random = int.from_bytes(os.urandom(_RANDOM_BYTES), "big") >> 1
        return _last_random


def new_job_id(now_ms: int | None = None) -> str:
    """A new ULID: 48 bits of Unix milliseconds, then 80 bits, random for the first id of a
    millisecond and one more for each later one (monotonic within the process)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    value = (ms << _RANDOM_BITS) | _random_part(ms)
    chars = []
    for _ in range(_TIME_CHARS + 16):
        chars.append(_CROCKFORD[value & 0x1F])
        value >>= _ULID_BITS_PER_CHAR
    return "".join(reversed(chars))


def minted_ms(job_id: str) -> int | None:
    """The Unix milliseconds a ULID was made at (None: not a ULID)."""
    if len(job_id) != _TIME_CHARS + 16 or any(c not in _CROCKFORD for c in job_id):
        return None
    value = 0
    for char in job_id[:_TIME_CHARS]:
        value = (value << _ULID_BITS_PER_CHAR) | _CROCKFORD.index(char)
    return value


def is_valid_job_id(job_id: str) -> bool:
    """True when a caller-supplied id is safe to use in keys."""
    return bool(_JOB_ID_RE.match(job_id))


def is_stored_job_id(job_id: str) -> bool:
    """True when ``job_id`` can be the id a job is stored under."""
    return bool(_STORED_JOB_ID_RE.match(job_id))


def scoped_job_id(tenant: str, job_id: str) -> str:
    """A tenant's own job id in its namespace: no tenant can take, or probe, another's."""
    return f"{tenant}.{job_id}"
