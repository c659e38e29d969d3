"""Several processes run the dispatcher's release at once, as fast as they can, against a deep
backlog: the jobs released match the quota, and no job is released twice."""

from __future__ import annotations

import multiprocessing
import time
import uuid

import pytest
import redis

from imagegen.contract import JobSpec
from imagegen.records import NewJob
from imagegen.redis import keys
from imagegen.redis.scripts import Scripts
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.jobs import JobStore

pytestmark = pytest.mark.integration

RATE_PER_S = 100
BURST = 5
PROCESSES = 4
DURATION_S = 4.0
BACKLOG = 3 * RATE_PER_S * int(DURATION_S)


def make_settings() -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        rate_limit_rpm=RATE_PER_S * 60,
        rate_limit_burst=BURST,
        dispatch_lookahead_s=3600,  # nobody claims here: only the rate bounds the releases
    )


def hammer(
    redis_url: str,
    model_id: str,
    start_at: float,
    results: multiprocessing.Queue,  # type: ignore[type-arg]
) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    dispatch = Dispatch(client, make_settings())
    # Connected, and the scripts found loaded, before the window: its first run is a release.
    Scripts.of(client).load()
    released = runs = 0
    end_at = start_at + DURATION_S
    time.sleep(max(0.0, start_at - time.time()))
    first_started = last_started = last_finished = time.time()
    while time.time() < end_at:
        runs += 1
        last_started = time.time()
        released += dispatch.release(model_id).released
        last_finished = time.time()
    results.put((released, runs, first_started, last_started, last_finished))


def test_processes_releasing_at_once_release_the_quota_within_two_percent(
    real_redis_url: str, real_redis: redis.Redis
) -> None:
    model_id = f"hammer-{uuid.uuid4().hex[:8]}"
    spec = JobSpec.parse({"request": {"prompt": "p"}})
    tenants = ("a", "b", "c")
    jobs = [
        NewJob(f"{model_id}-{i}", model_id, spec, 1, tenant=tenants[i % 3]) for i in range(BACKLOG)
    ]
    JobStore(real_redis, 3600).create(jobs)
    results: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    start_at = time.time() + 1.0
    workers = [
        multiprocessing.Process(target=hammer, args=(real_redis_url, model_id, start_at, results))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    released = sum(c[0] for c in counts)
    runs = sum(c[1] for c in counts)
    # The window is the runs': a process that started after the end (a loaded machine can be
    # that slow to start one) ran nothing, and its clock readings say nothing of the window.
    counts = [c for c in counts if c[1] > 0]
    first_started = min(c[2] for c in counts)
    # The first run finds the bucket full (the burst), then a token every 10 ms. The bucket keeps
    # Redis's clock, so the window is the one the runs really took: on a loaded machine a process
    # can be descheduled between its deadline check and its last run.
    most = BURST + RATE_PER_S * (max(c[4] for c in counts) - first_started)
    least = BURST + RATE_PER_S * (max(c[3] for c in counts) - first_started)
    assert runs > 2 * least, f"the load was not high enough: {runs} runs"
    assert 0.98 * least <= released <= 1.02 * most, (released, least, most, runs)
    messages = real_redis.lrange("interactive", 0, -1)
    ids = [m.split('"id":"', 1)[1].split('"', 1)[0] for m in messages]
    assert len(ids) == len(set(ids)) == released  # each job released once
    assert real_redis.zcard(keys.dispatch_keys(model_id).released) == released
