"""When to send a request again: after a 429 or a 503, as long as the server's ``Retry-After``
(or, without one, a short backoff) stays within the policy's bounds.

Both answers mean the API did nothing with the request (too many open jobs, streams or bad keys;
the image store did not answer), so even a submission is safe to send again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

__all__ = ["RETRIED_STATUSES", "RetryPolicy", "retry_after_s"]

RETRIED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` more tries at most; each waits the server's ``Retry-After`` or, without
    one, ``backoff_s`` doubled each time. A wait longer than ``max_wait_s`` is not waited: the
    error is raised at once, with its ``retry_after_s`` for the caller to decide."""

    max_retries: int = 3
    max_wait_s: float = 30.0
    backoff_s: float = 1.0

    def delay_s(self, status: int, retry_after: float | None, retry: int) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based) of an answer with
        ``status``; None: do not retry."""
        if status not in RETRIED_STATUSES or retry >= self.max_retries:
            return None
        delay = retry_after if retry_after is not None else self.backoff_s * 2**retry
        return delay if delay <= self.max_wait_s else None


NO_RETRIES = RetryPolicy(max_retries=0)


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP date (RFC 9110); None when absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))
