"""The retry policy, as one component: which errors are retried, how often, and after how long.

Retry delays are capped exponential backoff with full jitter: attempt ``n`` waits a uniform
random time in ``[0, min(cap, base * 2 ** (n - 1))]``; an explicit hint from the server
(``Retry-After``) is a floor. The error table follows Bedrock's documented error codes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum

from imagegen.errors import JobError
from imagegen.settings import Settings

__all__ = ["Decision", "Disposition", "RetryPolicy", "disposition_of", "retry_after_s"]


class Disposition(StrEnum):
    RETRY = "retry"
    RETRY_ONCE = "retry-once"
    FAIL = "fail"


# Bedrock's InvokeModel error codes and what we do about each.
ERROR_TABLE: dict[str, Disposition] = {
    "ThrottlingException": Disposition.RETRY,
    "ModelNotReadyException": Disposition.RETRY,
    "ServiceUnavailableException": Disposition.RETRY,
    "InternalServerException": Disposition.RETRY,
    "ModelTimeoutException": Disposition.RETRY,
    "ModelErrorException": Disposition.RETRY_ONCE,
    "ValidationException": Disposition.FAIL,
    "AccessDeniedException": Disposition.FAIL,
    "ResourceNotFoundException": Disposition.FAIL,
    "ServiceQuotaExceededException": Disposition.FAIL,
    # Our own codes for failures that never reached an AWS error code.
    "ConnectTimeout": Disposition.RETRY,
    "ReadTimeout": Disposition.RETRY,
    "ConnectionError": Disposition.RETRY,
    "InferenceError": Disposition.RETRY,
    "StorageError": Disposition.RETRY,
    "InputImageUnavailable": Disposition.RETRY,
    "InputImageInvalid": Disposition.FAIL,
    "InvalidModelOutput": Disposition.RETRY_ONCE,
    "InternalError": Disposition.RETRY,
}
_SERVER_ERROR_MIN = 500
_TOO_MANY_REQUESTS = 429


def disposition_of(error: JobError) -> Disposition:
    """What the table says for this error; unknown codes are judged by their HTTP status."""
    known = ERROR_TABLE.get(error.code)
    if known is not None:
        return known
    status = getattr(error, "http_status", None)
    if status is not None and (status >= _SERVER_ERROR_MIN or status == _TOO_MANY_REQUESTS):
        return Disposition.RETRY
    return Disposition.FAIL


def retry_after_s(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay_s: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_s: float
    cap_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(settings.max_attempts, settings.retry_base_s, settings.retry_cap_s)

    def backoff_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Full-jitter delay after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return (rng or random).uniform(0, ceiling)

    def decide(
        self,
        error: JobError,
        attempt: int,
        earlier_same_code: int = 0,
        rng: random.Random | None = None,
    ) -> Decision:
        """Retry or give up after ``attempt`` failed with ``error``.

        ``earlier_same_code`` counts earlier attempts of this job that failed with the same code
        (a retry-once error is retried only the first time it is seen).
        """
        disposition = disposition_of(error)
        if disposition is Disposition.FAIL:
            return Decision(retry=False, reason=f"{error.code} is not retryable")
        if disposition is Disposition.RETRY_ONCE and earlier_same_code >= 1:
            return Decision(retry=False, reason=f"{error.code} seen twice")
        if attempt >= self.max_attempts:
            return Decision(retry=False, reason=f"out of attempts ({self.max_attempts})")
        delay_s = self.backoff_s(attempt, rng)
        hint_s = getattr(error, "retry_after_s", None)
        if hint_s is not None:
            delay_s = min(self.cap_s, max(delay_s, hint_s))
        return Decision(retry=True, delay_s=delay_s, reason=disposition.value)
