"""Job-record transitions (``JobStore``) and reads (``JobReads``), on fakeredis (with Lua) and on
a real Redis: same tests, both servers."""

from __future__ import annotations

import time
from typing import Any

import pytest

from imagegen.contract import JobSpec
from imagegen.records import JobStatus, NewJob
from imagegen.redis import keys
from imagegen.settings import Settings
from imagegen.store.dispatch import Dispatch
from imagegen.store.job_reads import JobReads
from imagegen.store.jobs import CallMark, Caps, ClaimState, CreateOutcome, FinishOutcome, JobStore
from tests.support import ScriptClock

RETENTION_S = 3600
LEASE_MS = 60_000


MODEL = "stability.stable-image-core-v1:0"


def release(redis: Any, model_id: str = MODEL) -> None:
    """What the dispatcher releases with no rate limit: every waiting job gets its message."""
    unlimited = Settings(rate_limit_rpm=0, _env_file=None)  # type: ignore[call-arg]
    Dispatch(redis, unlimited).release(model_id)


def new_job(redis: Any, job_id: str = "J1") -> JobStore:
    """A job, released (its message queued) like the dispatcher does."""
    store = JobStore(redis, RETENTION_S)
    spec = JobSpec.parse({"request": {"prompt": "a lighthouse"}, "metadata": {"order": 7}})
    created = store.create([NewJob(job_id, MODEL, spec, int(time.time() * 1000))])
    assert created == [(CreateOutcome.CREATED, "")]
    release(redis)
    return store


def test_submit_writes_a_queued_record_and_one_message(any_redis: Any) -> None:
    store = new_job(any_redis)
    record = JobReads(any_redis).get("J1")
    assert record.status is JobStatus.QUEUED
    assert record.metadata == {"order": 7}
    assert any_redis.llen("interactive") == 1
    assert any_redis.ttl(keys.job_key("J1")) == -1  # an open job never expires
    # Same id again: nothing new is written or queued.
    spec = JobSpec.parse({"request": {"prompt": "other"}})
    assert store.create([NewJob("J1", "m", spec, 0)]) == [(CreateOutcome.EXISTS, "")]
    assert any_redis.llen("interactive") == 1
    assert JobReads(any_redis).get("J1").request.prompt == "a lighthouse"


def test_claim_moves_queued_to_running_and_counts_attempts(any_redis: Any) -> None:
    new_job(any_redis)
    results = JobStore(any_redis, RETENTION_S)
    claim = results.claim("J1", "owner-a", LEASE_MS)
    assert (claim.state, claim.attempt) == (ClaimState.CLAIMED, 1)
    record = JobReads(any_redis).get("J1")
    assert record.status is JobStatus.RUNNING
    assert record.started_at is not None


def test_a_leased_job_is_busy_for_everyone_else(any_redis: Any) -> None:
    new_job(any_redis)
    results = JobStore(any_redis, RETENTION_S)
    results.claim("J1", "owner-a", LEASE_MS)
    assert results.claim("J1", "owner-b", LEASE_MS).state is ClaimState.BUSY


def test_an_expired_lease_waits_again_before_another_attempt(any_redis: Any) -> None:
    new_job(any_redis)
    results = JobStore(any_redis, RETENTION_S)
    results.claim("J1", "dead-worker", 1)
    time.sleep(0.01)
    # A stray message cannot run it; the sweeper puts it back to wait for its turn.
    assert results.claim("J1", "owner-b", LEASE_MS).state is ClaimState.WAITING
    assert results.redrive_due() == ["J1"]
    release(any_redis)
    claim = results.claim("J1", "owner-b", LEASE_MS)
    assert (claim.state, claim.attempt) == (ClaimState.CLAIMED, 2)


def test_released_job_can_be_claimed_and_the_attempt_is_logged(any_redis: Any) -> None:
    new_job(any_redis)
    results = JobStore(any_redis, RETENTION_S)
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
    record = JobReads(any_redis).get("J1")
    assert (record.status, record.place) == (JobStatus.QUEUED, "delayed")
    assert record.next_attempt_at is not None
    assert [(e.attempt, e.error_code, e.retry_in_s) for e in record.attempt_log] == [
        (1, "ThrottlingException", 2.5)
    ]
    # The retry waits in the dispatcher until it is due; no message can run it before.
    assert results.claim("J1", "owner-b", LEASE_MS).state is ClaimState.WAITING


def test_a_final_status_is_final(any_redis: Any) -> None:
    new_job(any_redis)
    results = JobStore(any_redis, RETENTION_S)
    results.claim("J1", "owner-a", LEASE_MS)
    assert results.finish("J1", "owner-a", JobStatus.SUCCEEDED, {"seed": 5, "s3_key": "k"})[0] is (
        FinishOutcome.FINISHED
    )
    assert results.finish("J1", "owner-a", JobStatus.FAILED, {"error_code": "Late"})[0] is (
        FinishOutcome.ALREADY_FINAL
    )
    record = JobReads(any_redis).get("J1")
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
        JobStore(any_redis, RETENTION_S).finish("J1", "owner-a", JobStatus.RUNNING, {})


def test_a_cancel_request_ends_the_job_at_claim(any_redis: Any) -> None:
    new_job(any_redis)
    any_redis.hset(keys.job_key("J1"), "cancel_requested", "1")
    results = JobStore(any_redis, RETENTION_S)
    assert results.claim("J1", "owner-a", LEASE_MS).state is ClaimState.CANCELED
    record = JobReads(any_redis).get("J1")
    assert record.status is JobStatus.CANCELED
    assert record.attempts == 0


def test_a_cancel_requested_after_the_claim_stops_the_call_mark(any_redis: Any) -> None:
    new_job(any_redis)
    store = JobStore(any_redis, RETENTION_S)
    store.claim("J1", "owner-a", LEASE_MS)
    any_redis.hset(keys.job_key("J1"), "cancel_requested", "1")
    assert store.mark_calling("J1", "owner-a", calling=True) is CallMark.CANCELED
    assert any_redis.hget(keys.job_key("J1"), "calling") in (None, "")


def test_a_missing_job_is_reported_missing(any_redis: Any) -> None:
    assert JobStore(any_redis, RETENTION_S).claim("nope", "o", LEASE_MS).state is (
        ClaimState.MISSING
    )


@pytest.mark.parametrize("channel", [keys.EVENTS_CHANNEL, keys.job_events_channel("J1")])
def test_status_changes_are_announced(any_redis: Any, channel: str) -> None:
    new_job(any_redis)
    new_job(any_redis, "J2")
    events = any_redis.pubsub(ignore_subscribe_messages=True)
    events.subscribe(channel)
    events.get_message(timeout=0.5)
    results = JobStore(any_redis, RETENTION_S)
    results.claim("J1", "owner-a", LEASE_MS)
    results.finish("J1", "owner-a", JobStatus.FILTERED, {"finish_reason": "Filter reason: prompt"})
    results.claim("J2", "owner-a", LEASE_MS)
    seen = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        message = events.get_message(timeout=0.2)
        if message:
            seen.append(message["data"])
    events.close()
    expected = ['{"job_id":"J1","status":"running"}', '{"job_id":"J1","status":"filtered"}']
    if channel == keys.EVENTS_CHANNEL:  # the fleet's channel hears every job
        expected.append('{"job_id":"J2","status":"running"}')
    assert seen == expected


def test_a_parked_image_survives_until_dropped(any_redis: Any) -> None:
    results = JobStore(any_redis, RETENTION_S)
    results.park_image("J1", 1, "aGk=")
    assert results.parked_image("J1") == (1, "aGk=")
    assert 0 < any_redis.ttl(keys.parked_image_key("J1")) <= RETENTION_S
    results.drop_parked_image("J1")
    assert results.parked_image("J1") is None


def test_only_the_lease_owner_can_finish_a_job(any_redis: Any) -> None:
    new_job(any_redis)
    store = JobStore(any_redis, RETENTION_S)
    store.claim("J1", "owner-a", LEASE_MS)
    late = store.finish("J1", "owner-b", JobStatus.SUCCEEDED, {"s3_key": "someone-else"})
    assert late.outcome is FinishOutcome.NOT_LEASED
    record = JobReads(any_redis).get("J1")
    assert (record.status, record.s3_key) == (JobStatus.RUNNING, None)
    assert store.finish("J1", "owner-a", JobStatus.SUCCEEDED, {"s3_key": "k"})[0] is (
        FinishOutcome.FINISHED
    )


def test_a_replayed_job_runs_even_with_a_past_deadline_or_a_cancel_flag(any_redis: Any) -> None:
    store = JobStore(any_redis, RETENTION_S)
    spec = JobSpec.parse({"request": {"prompt": "p"}})
    now_ms = int(time.time() * 1000)
    store.create(
        [
            NewJob("DEADLINE", "m", spec, now_ms, tenant="acme"),
            NewJob("CANCELED", "m", spec, now_ms, tenant="acme"),
        ]
    )
    release(any_redis, "m")
    # While they ran, one's deadline passed and the other got a cancel; both then failed.
    for job_id, field, value in (
        ("DEADLINE", "expires_ms", now_ms - 1000),
        ("CANCELED", "cancel_requested", "1"),
    ):
        store.claim(job_id, "owner-a", LEASE_MS)
        any_redis.hset(keys.job_key(job_id), field, value)
        store.finish(job_id, "owner-a", JobStatus.FAILED, {"error_code": "X"})
    reads = JobReads(any_redis)
    assert reads.open_counts("acme") == (0, 0)

    assert sorted(store.replay(["DEADLINE", "CANCELED"])) == ["CANCELED", "DEADLINE"]

    assert reads.open_counts("acme") == (2, 2)  # open again, so the caps count them
    release(any_redis, "m")
    for job_id in ("DEADLINE", "CANCELED"):
        assert store.claim(job_id, "owner-b", LEASE_MS).state is ClaimState.CLAIMED
        record = reads.get(job_id)
        assert (record.replays, record.expires_at, record.cancel_requested) == (1, None, False)


def test_a_refused_raw_job_is_written_whole_once(any_redis: Any) -> None:
    store = JobStore(any_redis, RETENTION_S)
    assert store.refuse(
        "RAW", model_id="m", request={"prompt": ""}, error_code="InvalidRequest", problems="bad"
    )
    record = JobReads(any_redis).get("RAW")
    assert (record.status, record.error_code, record.error_message) == (
        JobStatus.FAILED,
        "InvalidRequest",
        "bad",
    )
    assert record.finished_at is not None
    assert 0 < any_redis.ttl(keys.job_key("RAW")) <= RETENTION_S
    assert not store.refuse(
        "RAW", model_id="m", request=None, error_code="InvalidRequest", problems="again"
    )
    assert JobReads(any_redis).get("RAW").error_message == "bad"


def test_a_batch_and_its_jobs_are_written_together(any_redis: Any) -> None:
    store = JobStore(any_redis, RETENTION_S)
    spec = JobSpec.parse({"request": {"prompt": "p"}})
    jobs = [NewJob(f"B{i}", "m", spec, 1, tenant="acme", batch_id="BATCH") for i in range(3)]
    full = store.create(jobs, caps=Caps(total=100, per_tenant=2))
    assert [state for state, _ in full] == [CreateOutcome.FULL] * 3
    assert full[0][1] == "tenant 0 2"
    assert JobReads(any_redis).batch("BATCH") is None  # nothing of a refused batch is written
    assert JobReads(any_redis).open_counts("acme") == (0, 0)
    outcomes = store.create(jobs)
    assert [state for state, _ in outcomes] == [CreateOutcome.CREATED] * 3
    batch = JobReads(any_redis).batch("BATCH")
    assert batch is not None
    assert (batch.tenant, batch.created_ms, batch.job_ids) == ("acme", 1, ["B0", "B1", "B2"])


def test_paging_goes_on_after_the_cursor_job_left_the_index(any_redis: Any) -> None:
    store = JobStore(any_redis, RETENTION_S)
    spec = JobSpec.parse({"request": {"prompt": "p"}})
    store.create([NewJob(f"J{i}", "m", spec, 1000 + i, tenant="acme") for i in range(6)])
    reads = JobReads(any_redis)
    first = reads.page(tenant="acme", limit=2)
    assert [r.job_id for r in first.jobs] == ["J5", "J4"]
    # The job the cursor names is trimmed from the index before the next page is read.
    any_redis.zrem(keys.tenant_jobs_key("acme"), "J4")
    second = reads.page(tenant="acme", cursor=first.next_cursor, limit=2)
    assert [r.job_id for r in second.jobs] == ["J3", "J2"]
    third = reads.page(tenant="acme", cursor=second.next_cursor, limit=2)
    assert [r.job_id for r in third.jobs] == ["J1", "J0"]
    assert third.next_cursor is None


def test_a_started_job_nobody_holds_waits_again(any_redis: Any) -> None:
    import json

    clock = ScriptClock(any_redis)
    new_job(any_redis)
    store = JobStore(any_redis, RETENTION_S)
    any_redis.delete("interactive")  # the release's message was taken...
    store.claim("J1", "dead-worker", 30)  # ...by a worker that died mid-attempt
    assert store.redrive_due() == []  # its lease still runs
    clock.tick(31)
    assert store.redrive_due() == ["J1"]
    assert store.redrive_due() == []  # once
    release(any_redis)
    [message] = [json.loads(m) for m in any_redis.lrange("interactive", 0, -1)]
    assert (message["headers"]["id"], json.loads(message["body"])[0]) == ("J1", ["J1"])
    claim = store.claim("J1", "owner-b", LEASE_MS)
    assert (claim.state, claim.attempt) == (ClaimState.CLAIMED, 2)
    store.finish("J1", "owner-b", JobStatus.SUCCEEDED, {})
    assert any_redis.zcard(keys.RUNNING_KEY) == 0  # final jobs leave the index


def test_a_call_lost_with_its_worker_is_booked_once(any_redis: Any) -> None:
    """A worker that died with a Bedrock call in flight lost an answer Bedrock billed: putting
    the job back books it as spent, once; a call that ended (answer booked, or let go for a
    retry) books nothing more."""
    from imagegen.store.spend import Ledger

    new_job(any_redis)
    store = JobStore(any_redis, RETENTION_S)
    ledger = Ledger(any_redis, Settings(_env_file=None))  # type: ignore[call-arg]
    store.claim("J1", "dead-worker", 30)
    assert store.mark_calling("J1", "dead-worker", calling=True) is CallMark.OK
    assert store.mark_calling("J1", "someone-else", calling=True) is CallMark.LEASE
    time.sleep(0.05)
    assert store.redrive_due() == ["J1"]
    [day] = ledger.rows(ledger.tenants()[0], 1)
    assert day.images == 1
    assert JobReads(any_redis).get("J1").cost_usd == day.spend_usd
    # The next attempt's image is booked when it ends (here: a retry, its upload having failed),
    # and its call ends there.
    release(any_redis)
    store.claim("J1", "owner-b", 30)
    store.mark_calling("J1", "owner-b", calling=True)
    store.release_for_retry(
        "J1", "owner-b", attempt=2, error_code="StorageError", message="m", delay_s=0, bought=True
    )
    [day] = ledger.rows(ledger.tenants()[0], 1)
    assert day.images == 2
    release(any_redis)
    store.claim("J1", "owner-c", 30)
    time.sleep(0.05)
    assert store.redrive_due() == ["J1"]  # died before calling again: nothing more is booked
    [day] = ledger.rows(ledger.tenants()[0], 1)
    assert day.images == 2


def test_the_listings_drop_jobs_past_the_retention_within_a_few_submissions(
    any_redis: Any,
) -> None:
    """The job listings (everybody's, and each tenant's) keep a final job for the retention:
    one submission in a few trims them, so at most a few stay past it."""
    store = JobStore(any_redis, RETENTION_S)
    spec = JobSpec.parse({"request": {"prompt": "a lighthouse"}})
    day_ms = 86_400_000
    now_ms = int(time.time() * 1000)
    old = [NewJob(f"old{i}", MODEL, spec, now_ms - day_ms, tenant="acme") for i in range(3)]
    store.create(old)
    for job_id in ("old0", "old1", "old2"):
        assert store.cancel(job_id).value == "canceled"  # final: nothing keeps them listed
    fresh = [NewJob(f"new{i}", MODEL, spec, now_ms, tenant="acme") for i in range(8)]
    for job in fresh:
        store.create([job])
    for listing in (keys.JOB_INDEX_KEY, keys.tenant_jobs_key("acme")):
        listed = set(any_redis.zrange(listing, 0, -1))
        assert listed == {job.job_id for job in fresh}, listing
