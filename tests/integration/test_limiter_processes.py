"""Several processes hammer one bucket at three times its rate: the grants match the quota."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest
import redis

from imagegen.settings import Settings
from worker.limiter import Limiter

pytestmark = pytest.mark.integration

RATE_PER_S = 100
BURST = 5
PROCESSES = 4
DURATION_S = 4.0
OFFERED = 3  # times the rate


def hammer(
    redis_url: str,
    model_id: str,
    mode: str,
    start_at: float,
    results: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        rate_limit_rpm=RATE_PER_S * 60,
        rate_limit_burst=BURST,
        limiter_max_wait_s=DURATION_S,
    )
    limiter = Limiter(redis.Redis.from_url(redis_url, decode_responses=True), settings)
    pause_s = PROCESSES / (RATE_PER_S * OFFERED)
    granted = tried = 0
    end_at = start_at + DURATION_S
    time.sleep(max(0.0, start_at - time.time()))
    while time.time() < end_at:
        tried += 1
        if mode == "try":  # take a token only if one is there now
            granted += limiter.reserve(model_id, max_wait_s=0).granted
            time.sleep(pause_s)
        else:  # reserve, sleep until due, then "call": count calls started inside the window
            reservation = limiter.reserve(model_id, max_wait_s=DURATION_S)
            time.sleep(reservation.wait_s)
            granted += time.time() < end_at
    results.put((granted, tried))


@pytest.mark.parametrize("mode", ["try", "wait"])
def test_processes_sharing_a_bucket_get_the_rate_within_two_percent(
    real_redis_url: str, mode: str
) -> None:
    model_id = f"hammer-{uuid.uuid4().hex[:8]}"
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 1.0
    workers = [
        multiprocessing.Process(
            target=hammer, args=(real_redis_url, model_id, mode, start_at, results)
        )
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    granted = sum(g for g, _ in counts)
    tried = sum(t for _, t in counts)
    expected = RATE_PER_S * DURATION_S + BURST
    if mode == "try":
        assert tried > 2 * expected, f"the load was not high enough: {tried} tries"
    assert abs(granted - expected) <= 0.02 * expected, (granted, expected, tried)
