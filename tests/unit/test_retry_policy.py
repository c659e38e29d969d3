"""The retry policy: which errors come back, how often, after how long."""

from __future__ import annotations

import random

import pytest

from imagegen.errors import BedrockCallError, JobError
from worker.retry import RetryPolicy

POLICY = RetryPolicy(max_attempts=5, base_s=1.0, cap_s=8.0)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 10])
def test_backoff_is_full_jitter_under_a_capped_exponential(attempt: int) -> None:
    rng = random.Random(attempt)
    ceiling = min(8.0, 2 ** (attempt - 1))
    delays = [POLICY.backoff_s(attempt, rng) for _ in range(500)]
    assert all(0 <= d <= ceiling for d in delays)
    # Full jitter spreads over the whole range, not a thin band near the ceiling.
    assert min(delays) < ceiling * 0.1
    assert max(delays) > ceiling * 0.9


def test_retryable_errors_come_back_until_attempts_run_out() -> None:
    error = BedrockCallError("ThrottlingException", "slow down", http_status=429)
    assert all(POLICY.decide(error, attempt).retry for attempt in range(1, 5))
    final = POLICY.decide(error, attempt=5)
    assert not final.retry
    assert "out of attempts" in final.reason


def test_permanent_errors_are_never_retried() -> None:
    error = BedrockCallError("ValidationException", "bad body", http_status=400)
    decision = POLICY.decide(error, attempt=1)
    assert not decision.retry
    assert "not retryable" in decision.reason


def test_retry_once_errors_are_retried_only_the_first_time() -> None:
    error = BedrockCallError("ModelErrorException", "model error", http_status=424)
    assert POLICY.decide(error, attempt=1, earlier_same_code=0).retry
    assert not POLICY.decide(error, attempt=2, earlier_same_code=1).retry


def test_unknown_codes_are_judged_by_http_status() -> None:
    assert POLICY.decide(BedrockCallError("Weird", "x", http_status=502), 1).retry
    assert not POLICY.decide(BedrockCallError("Weird", "x", http_status=418), 1).retry
    assert not POLICY.decide(JobError("no status", code="Mystery"), 1).retry


def test_a_retry_hint_is_a_floor_but_never_beyond_the_cap() -> None:
    error = BedrockCallError("ThrottlingException", "x", http_status=429, retry_after_s=3.0)
    assert all(POLICY.decide(error, 1).delay_s >= 3.0 for _ in range(50))
    huge = BedrockCallError("ThrottlingException", "x", http_status=429, retry_after_s=999.0)
    assert POLICY.decide(huge, 1).delay_s == 8.0


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from email.utils import formatdate

    from worker.retry import retry_after_s

    assert retry_after_s("7") == 7.0
    assert retry_after_s("-3") == 0.0
    in_a_minute = retry_after_s(formatdate(__import__("time").time() + 60, usegmt=True))
    assert in_a_minute is not None
    assert 55 <= in_a_minute <= 61
    assert retry_after_s("soon") is None
    assert retry_after_s(None) is None
