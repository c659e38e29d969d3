"""The shared limiter's adaptive rate (AIMD), on fakeredis (with Lua) and on a real Redis: same
tests, both stores. The bucket's tokens are taken by the dispatcher (``test_dispatch``)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from imagegen.contract import JobSpec
from imagegen.records import NewJob
from imagegen.settings import ModelLimit, Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import JobStore
from imagegen.store.quota import QuotaStore
from tests.support import ScriptClock
from worker.limiter import Limiter

RPM = 600.0  # ten a second: a token every 100 ms
T0 = 1_000_000.0  # a fixed clock (ms) for tests that pass their own time


def make_settings(**values: Any) -> Settings:
    base: dict[str, Any] = {
        "rate_limit_rpm": RPM,
        "rate_limit_burst": 3,
        "rate_decrease_factor": 0.5,
        "rate_increase_fraction": 0.1,
        "rate_floor_fraction": 0.1,
        "rate_decrease_cooldown_s": 2.0,
    }
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


def model() -> str:
    """A fresh model id, so every test (and every hypothesis example) has its own bucket."""
    return f"test-model-{uuid.uuid4().hex[:8]}"


def waiting_jobs(redis: Any, m: str, n: int) -> None:
    spec = JobSpec.parse({"request": {"prompt": "p"}})
    jobs = [NewJob(f"{m}-{uuid.uuid4().hex[:8]}", m, spec, 1) for _ in range(n)]
    JobStore(redis, 3600).create(jobs)


def released(redis: Any, settings: Settings, m: str, now_ms: float | None = None) -> int:
    return Dispatch(redis, settings).release(m, now_ms=now_ms).released


def test_a_throttle_halves_the_shared_rate_once_per_cooldown(any_redis: Any) -> None:
    settings = make_settings()
    limiter, m = Limiter(any_redis, settings), model()
    assert limiter.report(m, throttled=True, now_ms=T0) == pytest.approx(300)
    # Calls that were in flight together are throttled together: one decrease.
    assert limiter.report(m, throttled=True, now_ms=T0 + 500) == pytest.approx(300)
    assert limiter.report(m, throttled=True, now_ms=T0 + 2500) == pytest.approx(150)
    # The dispatcher now releases at the lower rate, whichever process runs it.
    assert QuotaStore(any_redis, settings).status(m).effective_rpm == pytest.approx(150)


def test_successes_climb_back_additively_but_never_past_the_quota(any_redis: Any) -> None:
    limiter, m = Limiter(any_redis, make_settings()), model()
    limiter.report(m, throttled=True, now_ms=T0)
    rates = [limiter.report(m, throttled=False, now_ms=T0 + i) for i in range(1, 8)]
    assert rates == pytest.approx([360, 420, 480, 540, 600, 600, 600])


def test_the_rate_never_drops_below_its_floor(any_redis: Any) -> None:
    limiter, m = Limiter(any_redis, make_settings()), model()
    for i in range(10):
        rate = limiter.report(m, throttled=True, now_ms=T0 + i * 3000)
    assert rate == pytest.approx(60)


def test_a_throttle_empties_the_bucket(any_redis: Any) -> None:
    settings = make_settings()
    limiter, m = Limiter(any_redis, settings), model()
    waiting_jobs(any_redis, m, 5)
    limiter.report(m, throttled=True, now_ms=T0)
    assert released(any_redis, settings, m, T0) == 0
    # At the halved rate (300/min), the next token comes 200 ms later.
    assert released(any_redis, settings, m, T0 + 150) == 0
    assert released(any_redis, settings, m, T0 + 200) == 1


def test_a_new_quota_resets_the_adaptive_rate(any_redis: Any) -> None:
    m = model()
    Limiter(any_redis, make_settings()).report(m, throttled=True, now_ms=T0)
    raised = make_settings(rate_limit_rpm=1200)
    waiting_jobs(any_redis, m, 1)
    released(any_redis, raised, m, T0)
    assert QuotaStore(any_redis, raised).status(m).effective_rpm == pytest.approx(1200)


def test_per_model_overrides(any_redis: Any) -> None:
    m = model()
    settings = make_settings(model_limits={m: ModelLimit(rpm=60, burst=1)}, dispatch_lookahead_s=60)
    waiting_jobs(any_redis, m, 5)
    assert released(any_redis, settings, m, T0) == 2  # two tokens at least
    assert released(any_redis, settings, m, T0 + 999) == 0
    assert released(any_redis, settings, m, T0 + 1000) == 1  # one a second
    assert settings.limit_for("another-model").rpm == RPM


def test_status_shows_rates_tokens_calls_and_throttles(any_redis: Any) -> None:
    settings = make_settings()
    ScriptClock(any_redis, T0)  # no token comes back while the test runs
    limiter, m = Limiter(any_redis, settings), model()
    waiting_jobs(any_redis, m, 2)
    assert released(any_redis, settings, m) == 2
    limiter.report(m, throttled=True)
    status = QuotaStore(any_redis, settings).status(m)
    assert status.configured_rpm == RPM
    assert status.effective_rpm == pytest.approx(300, rel=0.01)
    assert status.tokens <= 1.1
    assert status.calls_last_minute == 2
    assert (status.throttles_last_minute, status.throttles_total) == (1, 1)


def test_a_zero_rate_turns_the_limiter_off(any_redis: Any) -> None:
    settings = make_settings(rate_limit_rpm=0)
    limiter, m = Limiter(any_redis, settings), model()
    assert not limiter.enabled(m)
    waiting_jobs(any_redis, m, 50)
    assert released(any_redis, settings, m) == 50
