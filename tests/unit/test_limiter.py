"""The shared limiter, on fakeredis (with Lua) and on a real Redis: same tests, both stores."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from imagegen.settings import ModelLimit, Settings
from imagegen.store.quota import QuotaStore
from worker.limiter import Limiter, LimiterWaitTooLongError

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
        "limiter_max_wait_s": 1.0,
    }
    return Settings(_env_file=None, **{**base, **values})  # type: ignore[call-arg]


def model() -> str:
    """A fresh model id, so every test (and every hypothesis example) has its own bucket."""
    return f"test-model-{uuid.uuid4().hex[:8]}"


def test_the_burst_is_immediate_then_tokens_are_spaced_by_the_rate(any_redis: Any) -> None:
    limiter, m = Limiter(any_redis, make_settings()), model()
    waits = [limiter.reserve(m, max_wait_s=10, now_ms=T0).wait_s for _ in range(6)]
    assert waits == pytest.approx([0, 0, 0, 0.1, 0.2, 0.3])


def test_a_wait_beyond_the_limit_reserves_nothing(any_redis: Any) -> None:
    limiter, m = Limiter(any_redis, make_settings(rate_limit_burst=1)), model()
    assert limiter.reserve(m, max_wait_s=0.05, now_ms=T0).granted
    refused = limiter.reserve(m, max_wait_s=0.05, now_ms=T0)
    assert not refused.granted
    assert refused.wait_s == pytest.approx(0.1)
    # Nothing was taken: the same wait is quoted again, and granted when it is allowed.
    assert limiter.reserve(m, max_wait_s=0.05, now_ms=T0).wait_s == pytest.approx(0.1)
    assert limiter.reserve(m, max_wait_s=1, now_ms=T0).granted


def test_tokens_refill_with_time_up_to_the_burst(any_redis: Any) -> None:
    limiter, m = Limiter(any_redis, make_settings()), model()
    for _ in range(3):
        limiter.reserve(m, max_wait_s=10, now_ms=T0)
    assert limiter.reserve(m, max_wait_s=0, now_ms=T0 + 100).granted  # one token back
    assert not limiter.reserve(m, max_wait_s=0, now_ms=T0 + 100).granted
    # A long quiet spell refills the burst, not more.
    waits = [limiter.reserve(m, max_wait_s=10, now_ms=T0 + 60_000).wait_s for _ in range(4)]
    assert waits == pytest.approx([0, 0, 0, 0.1])


def test_a_throttle_halves_the_shared_rate_once_per_cooldown(any_redis: Any) -> None:
    settings = make_settings()
    limiter, m = Limiter(any_redis, settings), model()
    limiter.reserve(m, max_wait_s=10, now_ms=T0)
    assert limiter.report(m, throttled=True, now_ms=T0) == pytest.approx(300)
    # Calls that were in flight together are throttled together: one decrease.
    assert limiter.report(m, throttled=True, now_ms=T0 + 500) == pytest.approx(300)
    assert limiter.report(m, throttled=True, now_ms=T0 + 2500) == pytest.approx(150)
    # Every worker now reserves at the lower rate.
    other = Limiter(any_redis, settings)
    assert other.reserve(m, max_wait_s=10, now_ms=T0 + 2500).rate_rpm == pytest.approx(150)


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
    limiter, m = Limiter(any_redis, make_settings()), model()
    limiter.report(m, throttled=True, now_ms=T0)
    assert not limiter.reserve(m, max_wait_s=0, now_ms=T0).granted


def test_a_new_quota_resets_the_adaptive_rate(any_redis: Any) -> None:
    m = model()
    Limiter(any_redis, make_settings()).report(m, throttled=True, now_ms=T0)
    raised = Limiter(any_redis, make_settings(rate_limit_rpm=1200))
    assert raised.reserve(m, max_wait_s=10, now_ms=T0).rate_rpm == pytest.approx(1200)


def test_per_model_overrides(any_redis: Any) -> None:
    m = model()
    settings = make_settings(model_limits={m: ModelLimit(rpm=60, burst=1)})
    limiter = Limiter(any_redis, settings)
    limiter.reserve(m, max_wait_s=10, now_ms=T0)
    assert limiter.reserve(m, max_wait_s=10, now_ms=T0).wait_s == pytest.approx(1.0)
    assert settings.limit_for("another-model").rpm == RPM


def test_status_shows_rates_tokens_calls_and_throttles(any_redis: Any) -> None:
    settings = make_settings()
    limiter, m = Limiter(any_redis, settings), model()
    limiter.reserve(m, max_wait_s=10)
    limiter.reserve(m, max_wait_s=10)
    limiter.report(m, throttled=True)
    status = QuotaStore(any_redis, settings).status(m)
    assert status.configured_rpm == RPM
    assert status.effective_rpm == pytest.approx(300, rel=0.01)
    assert status.tokens <= 0.1
    assert status.calls_last_minute == 2
    assert (status.throttles_last_minute, status.throttles_total) == (1, 1)


def test_wait_for_token_sleeps_once_instead_of_polling(
    any_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter, m = Limiter(any_redis, make_settings(rate_limit_burst=1)), model()
    calls = {"reserve": 0}
    reserve = limiter.reserve

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["reserve"] += 1
        return reserve(*args, **kwargs)

    slept: list[float] = []
    monkeypatch.setattr(limiter, "reserve", counted)
    monkeypatch.setattr("worker.limiter.time.sleep", slept.append)
    waits = [limiter.wait_for_token(m) for _ in range(3)]
    assert calls["reserve"] == 3  # one round trip to Redis per token, however long the wait
    assert waits[0] == 0
    assert slept == waits[1:]  # the due time is slept in one go
    assert waits[1:] == pytest.approx([0.1, 0.2], abs=0.02)


def test_wait_for_token_refuses_long_waits(any_redis: Any) -> None:
    limiter = Limiter(
        any_redis, make_settings(rate_limit_rpm=6, rate_limit_burst=1, limiter_max_wait_s=1)
    )
    m = model()
    limiter.wait_for_token(m)
    with pytest.raises(LimiterWaitTooLongError) as caught:
        limiter.wait_for_token(m)
    assert 9 < caught.value.delay_s <= 10


def test_a_zero_rate_turns_the_limiter_off(any_redis: Any) -> None:
    limiter = Limiter(any_redis, make_settings(rate_limit_rpm=0))
    assert not limiter.enabled("m")
    assert [limiter.wait_for_token("m") for _ in range(50)] == [0.0] * 50


def test_the_concurrency_cap_holds_and_frees_slots(any_redis: Any) -> None:
    limiter = Limiter(any_redis, make_settings(max_concurrency=2, limiter_max_wait_s=0.2))
    m = model()
    with (
        limiter.concurrency_slot(m, lease_s=30),
        limiter.concurrency_slot(m, lease_s=30),
        pytest.raises(LimiterWaitTooLongError),
        limiter.concurrency_slot(m, lease_s=30),
    ):
        pass
    with limiter.concurrency_slot(m, lease_s=30):
        pass


def test_a_dead_workers_slot_expires(any_redis: Any) -> None:
    limiter = Limiter(any_redis, make_settings(max_concurrency=1, limiter_max_wait_s=5.0))
    m = model()
    slot = limiter.concurrency_slot(m, lease_s=0.1)
    slot.__enter__()  # taken and never given back
    started = time.monotonic()
    with limiter.concurrency_slot(m, lease_s=30):  # would raise after 5 s without the expiry
        assert time.monotonic() - started < 4


@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rpm=st.sampled_from([60.0, 600.0, 3000.0]),
    burst=st.integers(min_value=1, max_value=5),
    gaps_ms=st.lists(st.floats(min_value=0, max_value=400), min_size=1, max_size=60),
)
def test_grants_in_any_window_never_exceed_rate_times_window_plus_burst(
    any_redis: Any, rpm: float, burst: int, gaps_ms: list[float]
) -> None:
    limiter = Limiter(any_redis, make_settings(rate_limit_rpm=rpm, rate_limit_burst=burst))
    m, now, due = model(), T0, []
    for gap in gaps_ms:
        now += gap
        reservation = limiter.reserve(m, max_wait_s=2, now_ms=now)
        if reservation.granted:
            due.append(now + reservation.wait_s * 1000)
    due.sort()
    per_ms = rpm / 60_000
    for i in range(len(due)):
        for j in range(i, len(due)):
            window_ms = due[j] - due[i]
            assert j - i + 1 <= per_ms * window_ms + burst + 1e-6
