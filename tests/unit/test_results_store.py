"""Job-record transitions, on fakeredis (with Lua) and on a real Redis: same tests, both stores."""

from __future__ import annotations

import time
from typing import Any

import pytest

from producer import keys
from producer.contract import JobSpec
from producer.jobs import JobStatus
from producer.store import CreateOutcome, JobStore, NewJob
from worker.results import ClaimState, ResultStore

RETENTION_S = 3600
LEASE_MS = 60_000


def new_job(redis: Any, job_id: str = "J1") -> JobStore:
    store = JobStore(redis, RETENTION_S)
    spec = JobSpec.parse({"request": {"prompt": "a lighthouse"}, "metadata": {"order": 7}})
    created = store.create(
        [NewJob(job_id, "stability.stable-image-core-v1:0", spec, int(time.time() * 1000))]
    )
    assert created == [(CreateOutcome.CREATED, "")]
    return store


def test_submit_writes_a_queued_record_and_one_message(any_redis: Any) -> None:
    store = new_job(any_redis)
    record = store.get("J1")
    assert record.status is JobStatus.QUEUED
    assert record.metadata == {"order": 7}
    assert any_redis.llen("interactive") == 1
    assert 0 < any_redis.ttl(keys.job_key("J1")) <= RETENTION_S
    # Same id again: nothing new is written or queued.
    spec = JobSpec.parse({"request": {"prompt": "other"}})
    assert store.create([NewJob("J1", "m", spec, 0)]) == [(CreateOutcome.EXISTS, "")]
    assert any_redis.llen("interactive") == 1
    assert store.get("J1").request.prompt == "a lighthouse"


def test_claim_moves_queued_to_running_and_counts_attempts(any_redis: Any) -> None:
    new_job(any_redis)
    results = ResultStore(any_redis, RETENTION_S)
    claim = results.claim("J1", "owner-a", LEASE_MS)
    assert (claim.state, claim.attempt) == (ClaimState.CLAIMED, 1)
    record = results.get("J1")
    assert record is not None
    assert record.status is JobStatus.RUNNING
    assert record.started_at is not None


def test_a_leased_job_is_busy_for_everyone_else(any_redis: Any) -> None:
    new_job(any_redis)
    results = ResultStore(any_redis, RETENTION_S)
    results.claim("J1", "owner-a", LEASE_MS)
    assert results.claim("J1", "owner-b", LEASE_MS).state is ClaimState.BUSY


def test_an_expired_lease_can_be_claimed_again(any_redis: Any) -> None:
    new_job(any_redis)
    results = ResultStore(any_redis, RETENTION_S)
    results.claim("J1", "dead-worker", 1)
    time.sleep(0.01)
    claim = results.claim("J1", "owner-b", LEASE_MS)
    assert (claim.state, claim.attempt) == (ClaimState.CLAIMED, 2)


def test_released_job_can_be_claimed_and_the_attempt_is_logged(any_redis: Any) -> None:
    new_job(any_redis)
    results = ResultStore(any_redis, RETENTION_S)
    results.claim("J1", "owner-a", LEASE_MS)
    assert not results.release_for_retry(
        "J1", "intruder", attempt=1, error_code="X", message="m", delay_s=1
    )
    assert results.release_for_retry(
        "J1",
        "owner-a",
        attempt=1,
        error_code="ThrottlingException",
        message="slow down",
        delay_s=2.5,
    )
    record = results.get("J1")
    assert record is not None
    assert record.status is JobStatus.RUNNING
    assert record.next_attempt_at is not None
    assert [(e.attempt, e.error_code, e.retry_in_s) for e in record.attempt_log] == [
        (1, "ThrottlingException", 2.5)
    ]
    assert results.claim("J1", "owner-b", LEASE_MS).state is ClaimState.CLAIMED


def test_a_final_status_is_final(any_redis: Any) -> None:
    new_job(any_redis)
    results = ResultStore(any_redis, RETENTION_S)
    results.claim("J1", "owner-a", LEASE_MS)
    assert results.finish("J1", JobStatus.SUCCEEDED, {"seed": 5, "s3_key": "k"})
    assert not results.finish("J1", JobStatus.FAILED, {"error_code": "Late"})
    record = results.get("J1")
    assert record is not None
    assert (record.status, record.seed, record.s3_key, record.error_code) == (
        JobStatus.SUCCEEDED,
        5,
        "k",
        None,
    )
    assert record.finished_at is not None
    assert results.claim("J1", "owner-b", LEASE_MS).state is ClaimState.TERMINAL


def test_finish_refuses_a_status_that_is_not_final(any_redis: Any) -> None:
    new_job(any_redis)
    with pytest.raises(ValueError, match="not a final status"):
        ResultStore(any_redis, RETENTION_S).finish("J1", JobStatus.RUNNING, {})


def test_a_cancel_request_ends_the_job_at_claim(any_redis: Any) -> None:
    new_job(any_redis)
    any_redis.hset(keys.job_key("J1"), "cancel_requested", "1")
    results = ResultStore(any_redis, RETENTION_S)
    assert results.claim("J1", "owner-a", LEASE_MS).state is ClaimState.CANCELED
    record = results.get("J1")
    assert record is not None
    assert record.status is JobStatus.CANCELED
    assert record.attempts == 0


def test_a_missing_job_is_reported_missing(any_redis: Any) -> None:
    assert ResultStore(any_redis, RETENTION_S).claim("nope", "o", LEASE_MS).state is (
        ClaimState.MISSING
    )


def test_status_changes_are_announced(any_redis: Any) -> None:
    new_job(any_redis)
    events = any_redis.pubsub(ignore_subscribe_messages=True)
    events.subscribe(keys.EVENTS_CHANNEL)
    events.get_message(timeout=0.5)
    results = ResultStore(any_redis, RETENTION_S)
    results.claim("J1", "owner-a", LEASE_MS)
    results.finish("J1", JobStatus.FILTERED, {"finish_reason": "Filter reason: prompt"})
    seen = []
    deadline = time.monotonic() + 2
    while len(seen) < 2 and time.monotonic() < deadline:
        message = events.get_message(timeout=0.2)
        if message:
            seen.append(message["data"])
    events.close()
    assert seen == ['{"job_id":"J1","status":"running"}', '{"job_id":"J1","status":"filtered"}']


def test_a_parked_image_survives_until_dropped(any_redis: Any) -> None:
    results = ResultStore(any_redis, RETENTION_S)
    results.park_image("J1", '{"seed": 1, "image": "aGk="}')
    assert results.parked_image("J1") == '{"seed": 1, "image": "aGk="}'
    assert 0 < any_redis.ttl(keys.parked_image_key("J1")) <= RETENTION_S
    results.drop_parked_image("J1")
    assert results.parked_image("J1") is None
